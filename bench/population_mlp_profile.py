"""Where an MLP population's time goes: a bench/population.py case stepped without Lightning, torch.profiler.

Builds the case's ``PopulationModule`` (the trainer ``zoo build`` runs), then times, at the given thread count:
the whole ``train_population`` (Lightning loop included), the same number of bare ``training_step`` calls (no
Lightning), one checkpoint ``evaluate()``, and the step's parts (batch gather, forward+loss, backward,
optimizer) separately; then prints torch.profiler's op table of a few steps. FLOPs: bench.population.step_flops.

    PYTHONPATH=. python bench/population_mlp_profile.py --case mlp-w32 --threads 1
    PYTHONPATH=. python bench/population_mlp_profile.py --case mlp-w128 --threads 2 --json /tmp/p.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from population import CASES, case_spec, matmul_gflops, step_flops  # noqa: E402

from zoo.training.population import train_population  # noqa: E402
from zoo.training.population_module import PopulationModule  # noqa: E402


class _Trainer:  # what training_step reads of a Lightning trainer
    should_stop = False
    current_epoch = 0


def bare_module(spec, task) -> PopulationModule:
    """A PopulationModule whose training_step runs without a Lightning trainer."""
    module = PopulationModule(spec, task)
    module.manual_backward = lambda loss: loss.backward()  # type: ignore[method-assign]
    module.log = lambda *a, **k: None  # type: ignore[method-assign]
    module._trainer = _Trainer()  # type: ignore[assignment]
    return module


def bare_epochs(module: PopulationModule, epochs: int) -> None:
    for _ in range(epochs):
        for i in range(module.steps_per_epoch):
            module.training_step(i, i)


def alternating_rounds(spec, task, rounds: int) -> tuple[float, float, float]:
    """Median seconds of a whole ``train_population``, of its bare training steps and of one evaluation, timed
    alternating round by round so all three see the same load."""
    whole, bare, ev = [], [], []
    for _ in range(rounds):
        t = time.perf_counter()
        train_population(spec, task, progress=False)
        whole.append(time.perf_counter() - t)
        module = bare_module(spec, task)
        t = time.perf_counter()
        bare_epochs(module, spec.epochs)
        bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        module.evaluate()
        ev.append(time.perf_counter() - t)
    return statistics.median(whole), statistics.median(bare), statistics.median(ev)


def parts(module: PopulationModule, steps: int) -> dict[str, float]:
    """Seconds per step of the step's parts, each timed alone over ``steps`` steps (same code as training_step)."""
    import torch.nn.functional as F  # noqa: F401

    b, n = module.batch_size, len(module.dataset.X_train)
    gens = module._generators
    t = {"perm": 0.0, "gather": 0.0, "forward_loss": 0.0, "backward": 0.0, "optimizer": 0.0}
    module.template.train()
    for s in range(steps):
        t0 = time.perf_counter()
        if s % module.steps_per_epoch == 0:
            module._perm = torch.stack([torch.randperm(n, generator=g) for g in gens])
        t1 = time.perf_counter()
        i = s % module.steps_per_epoch
        idx = module._perm[:, i * b : (i + 1) * b].reshape(-1)
        m = module._perm.shape[0]
        x = module.dataset.X_train.index_select(0, idx).view(m, b, -1)
        y = module.dataset.y_train.index_select(0, idx).view(m, b)
        t2 = time.perf_counter()
        out = module._forward(module._params(), module._buffers_stacked, x, shared_input=False, training=True)
        loss = module._per_model_loss(out, y)
        finite = torch.isfinite(loss)
        bool((module.active & ~finite).any())
        t3 = time.perf_counter()
        for p in module.stacked:
            p.grad = None
        torch.where(module.active, loss, torch.zeros_like(loss)).sum().backward()
        t4 = time.perf_counter()
        module._optimizer_step()
        t5 = time.perf_counter()
        for k, a, z in (("perm", t0, t1), ("gather", t1, t2), ("forward_loss", t2, t3), ("backward", t3, t4)):
            t[k] += z - a
        t["optimizer"] += t5 - t4
    return {k: v / steps for k, v in t.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", default="mlp-w32", choices=[c for c in CASES if CASES[c][0] == "mlp"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the whole-run timings")
    ap.add_argument("--profile-steps", type=int, default=20)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    case = CASES[a.case]
    spec, task = case_spec(case, a.models or case[-1])
    m = len(spec.init_states)
    rate = matmul_gflops(a.threads)
    train_f, fwd_f = step_flops(spec, task)
    module = bare_module(spec, task)
    steps = module.steps_per_epoch * spec.epochs
    step_gflop = train_f * m / 1e9
    bare_epochs(module, 1)  # warm-up
    train_population(spec, task, progress=False)
    whole_s, bare_s, eval_s = alternating_rounds(spec, task, a.rounds)
    module = bare_module(spec, task)
    part = parts(module, min(steps, 60))
    step_ms = (bare_s / steps) * 1e3
    row = {
        "case": a.case,
        "threads": a.threads,
        "models": m,
        "steps": steps,
        "checkpoints": len(spec.checkpoint_epochs),
        "matmul_gflops": rate,
        "train_gflop_per_step": step_gflop,
        "gemm_ms_per_step_at_matmul_rate": step_gflop / rate * 1e3,
        "train_population_s": whole_s,
        "bare_steps_s": bare_s,
        "bare_step_ms": step_ms,
        "evaluate_s": eval_s,
        "lightning_and_checkpoint_s": whole_s - bare_s,
        "parts_ms": {k: v * 1e3 for k, v in part.items()},
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(row, indent=1))
    from torch.profiler import ProfilerActivity, profile

    module = bare_module(spec, task)
    bare_epochs(module, 1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(a.profile_steps):
            module.training_step(i % module.steps_per_epoch, i % module.steps_per_epoch)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=22)
    print(f"{a.profile_steps} training steps:\n{table}")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        module.evaluate()
    print("one evaluate():\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
    if a.json:
        Path(a.json).write_text(json.dumps(row, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
