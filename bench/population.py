"""Population training vs one model at a time, measured side by side in one run.

For each case: N digits MLPs (depth 2) trained for E epochs, (a) one at a time with a plain PyTorch loop
(torch.optim.SGD with momentum, the same batches and the same two checkpoint evaluations: the strongest
one-at-a-time baseline; timed on a subset and scaled to N, as printed), and (b) as one population through the Lightning population trainer.
Reports wall times, speedup, training GFLOP/s and its fraction of the dense float32 matmul rate, which
is measured in the same run.

    .venv/bin/python bench/population.py            # full run (N=256, widths 32 and 128)
    .venv/bin/python bench/population.py --quick    # a smoke run
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from zoo.population import PopulationSpec, train_population
from zoo.recipe import init_state
from zoo.arch import arch_spec, build_model
from zoo.layout import layout_of
from zoo.datasets import load_dataset


def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def _layer_macs(spec: dict) -> list[int]:
    dims = [spec["input_shape"][0]] + [spec["width"]] * spec["depth"] + [spec["num_outputs"]]
    return [a * b for a, b in zip(dims[:-1], dims[1:])]


def train_flops_per_sample(spec: dict) -> int:
    """Multiply-adds x2 of forward, weight-gradient and input-gradient passes of the Linear layers."""
    mm = _layer_macs(spec)
    return 2 * (sum(mm) + sum(mm) + sum(mm[1:]))


def eval_flops_per_sample(spec: dict) -> int:
    return 2 * sum(_layer_macs(spec))


def one_at_a_time(spec: dict, task, seed: int, lr: float, batch_size: int, epochs: int) -> float:
    """Train one model with a plain PyTorch loop; returns seconds."""
    torch.manual_seed(seed)
    model = build_model(spec)
    model.load_state_dict(init_state(spec, seed))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(1_000_003 + seed)
    n = len(task.X_train)
    steps = n // batch_size

    def evaluate() -> None:  # the same checkpoint metrics the population records (epochs 0 and E)
        model.eval()
        with torch.no_grad():
            for X, y in ((task.X_train, task.y_train), (task.X_test, task.y_test)):
                out = model(X)
                F.cross_entropy(out, y).item(), (out.argmax(1) == y).double().mean().item()
        model.train()

    t = time.perf_counter()
    evaluate()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for s in range(steps):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(task.X_train[idx]), task.y_train[idx]).backward()
            opt.step()
    evaluate()
    return time.perf_counter() - t


def population(spec: dict, task, n: int, lrs: list[float], batch_size: int, epochs: int) -> float:
    ps = PopulationSpec(template=build_model(spec), layout=layout_of(build_model(spec), spec),
                        init_states=[init_state(spec, s) for s in range(n)], learning_rates=lrs,
                        weight_decays=[0.0] * n, data_seeds=[1_000_003 + s for s in range(n)],
                        batch_size=batch_size, epochs=epochs, checkpoint_epochs=[0, epochs], momentum=0.9)
    t = time.perf_counter()
    train_population(ps, task, progress=False)
    return time.perf_counter() - t


def run_case(task, n: int, width: int, batch_size: int, epochs: int, subset: int, peak: float) -> dict:
    spec = arch_spec("mlp", [64], 10, width, 2)
    lrs = [0.01 * (1 + i % 8) for i in range(n)]
    one = sum(one_at_a_time(spec, task, s, lrs[s], batch_size, epochs) for s in range(subset)) * n / subset
    population(spec, task, n, lrs, batch_size, 1)  # warm-up: Lightning's import and first-touch allocations
    pop = population(spec, task, n, lrs, batch_size, epochs)
    steps = (len(task.X_train) // batch_size) * epochs
    flops = train_flops_per_sample(spec) * batch_size * steps * n
    # both sides also evaluate every model on train+test at the two checkpoints (epochs 0 and E)
    eval_flops = eval_flops_per_sample(spec) * (len(task.X_train) + len(task.X_test)) * 2 * n
    return {"models": n, "width": width, "batch_size": batch_size, "epochs": epochs,
            "one_at_a_time_s": one, "one_at_a_time_timed_models": subset, "population_s": pop,
            "speedup": one / pop, "population_gflops": flops / pop / 1e9,
            "fraction_of_matmul_rate": flops / pop / 1e9 / peak,
            "population_gflops_with_evals": (flops + eval_flops) / pop / 1e9,
            "fraction_of_matmul_rate_with_evals": (flops + eval_flops) / pop / 1e9 / peak}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    task = load_dataset("digits")
    peak = matmul_gflops()
    cases = [(256, 32, 32, 5, 16), (256, 128, 128, 5, 16)] if not args.quick else [(16, 32, 32, 1, 4)]
    rows = [run_case(task, *c, peak=peak) for c in cases]
    print(f"dense float32 matmul rate (2048x2048, {torch.get_num_threads()} threads): {peak:.1f} GFLOP/s")
    print(f"{'N':>4} {'width':>5} {'batch':>5} {'one-at-a-time s':>16} {'population s':>13} {'speedup':>8}"
          f" {'GFLOP/s':>8} {'of matmul':>9} {'+evals GFLOP/s':>15} {'of matmul':>9}")
    for r in rows:
        print(f"{r['models']:>4} {r['width']:>5} {r['batch_size']:>5} {r['one_at_a_time_s']:>16.2f}"
              f" {r['population_s']:>13.2f} {r['speedup']:>7.1f}x {r['population_gflops']:>8.1f}"
              f" {100 * r['fraction_of_matmul_rate']:>8.1f}% {r['population_gflops_with_evals']:>15.1f}"
              f" {100 * r['fraction_of_matmul_rate_with_evals']:>8.1f}%")
    print("GFLOP/s: training steps' FLOPs over the population's wall time (which includes its two checkpoint"
          " evaluations); '+evals' counts those evaluations' FLOPs too")
    print(f"(one-at-a-time timed on {rows[0]['one_at_a_time_timed_models']} models and scaled to N)")
    print("rerun: .venv/bin/python bench/population.py" + (" --quick" if args.quick else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"matmul_gflops": peak, "cases": rows}, f, indent=2)


if __name__ == "__main__":
    main()
