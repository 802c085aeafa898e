"""Population training (``zoo build``'s trainer) vs the best one-at-a-time training a user could do without it.

Each case is N models of one layout planned by ``zoo build`` from a recipe (8 learning rates x N/8 seeds).
The population side is ``zoo build``'s own trainer (``zoo.training.build.population_spec`` + ``train_population``)
on those N models, run the two ways ``zoo build`` can use a machine's cores: one process at each thread count, and
one single-thread process per core each training its share of the N models as a population of N/cores (what
``zoo build executor=dask`` with single-thread workers and ``population_size = block_size = N/cores`` does); the
faster is the population's figure (``population``, both in the JSON). The baseline trains the same N models in
plain PyTorch with the same initializations, hyperparameters (``torch.optim.SGD``, momentum), per-model data
order (the same seeded permutations and batches), epochs and checkpoint evaluations (train and test split at
each checkpoint epoch), in two ways:

- one process, every thread count 1..cores (or ``--threads``), timed on a sample of models (``--sample``) to find
  its fastest thread setting;
- every core busy: one single-thread process per core, the N models split between them, timed on all N
  (wall time from the common start after every process has warmed up to the last one finishing).

The speedup is against the faster of the two (the one-process rate scaled to N from its sample, as
printed). Both sides are warmed up first; the population is timed at each thread count (median of
``--repeats``) and its fastest is reported. Training FLOPs are counted by ``torch.utils.flop_counter`` on
one model's forward+backward per step (for the MLP this is 3x the forward GEMMs less the first layer's
input gradient) and compared with the dense float32 matmul rate measured in the same run at the same
thread count. As a check that both sides train the same models, the mean |test accuracy difference| at
the last checkpoint is printed and stored.

    .venv/bin/python bench/population.py                  # all cases, writes docs/bench-population.json
    .venv/bin/python bench/population.py --cases mlp-w32  # one case
    .venv/bin/python bench/population.py --quick --json /tmp/p.json   # a smoke run (tiny N)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.app.config import compose  # noqa: E402
from zoo.app.runtime import resolve_device  # noqa: E402
from zoo.datasets import load_dataset  # noqa: E402
from zoo.errors import ZooError  # noqa: E402
from zoo.forward import grouped_cnn_supported  # noqa: E402
from zoo.training.build import make_build_plan, population_dataset, population_spec  # noqa: E402
from zoo.training.population import train_population  # noqa: E402
from zoo.training.spec import PopulationSpec  # noqa: E402

LRS = [0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.07]
# name: (arch, dataset, width, depth, batch size, epochs, models); CNNs train as grouped convolutions
# (zoo.forward.stacked_cnn_forward; timed against the vmap path too), ResNets too (stacked_resnet_forward)
CASES = {
    "mlp-w32": ("mlp", "digits", 32, 2, 32, 5, 256),
    "mlp-w128": ("mlp", "digits", 128, 2, 128, 5, 256),
    "cnn-bn": ("cnn", "digits-image", 8, 2, 32, 2, 64),
    "resnet": ("resnet", "digits-image", 8, 1, 32, 2, 64),
    # the Small-CNN-Zoo network of recipe cnn-zoo-mnist (3 convs of 16 3x3 filters, stride 2, valid padding, no
    # BatchNorm, 28x28 MNIST, batch 32), plain SGD; its drawn hyperparameters are left out (the baseline is SGD)
    "cnn-zoo-mnist": ("cnn", "mnist-image", 16, 3, 32, 1, 64),
    # transformers (zoo.forward.stacked_transformer_forward): the vit of recipe vit-digits (2x2 patches, 4 heads,
    # MLP ratio 2, GELU) and the one-layer token transformer of recipe grok-modadd (two one-hot tokens of 31)
    "vit": ("vit", "digits-image", 16, 2, 64, 2, 64),
    "grok": ("transformer", "modular-addition", 32, 1, 64, 2, 64),
    # INRs: recipe inr-digits as it is (one SIREN 2 -> 32 -> 32 -> 1 per 8x8 image, w0 = 30, Adam lr 1e-3, 100
    # full-batch steps of the 64-pixel grid, MSE; checkpoints at steps 0 and 100), on its first N images
    "siren": ("siren", "digits-image", 32, 2, 64, 100, 256),
}
RECIPES = {"siren": "inr-digits"}  # cases that are a recipe as it is (its first N images), not the default grid
# the siren baseline's Adam: fused, the fastest for one SIREN of torch.optim.Adam's for-loop (409 vs 504 ms per
# model), foreach (580 ms) and fused (1 thread, load ~5, alternating)
ADAM_KW = {"fused": True}
EXTRA = {  # overrides beyond the common ones
    "cnn-zoo-mnist": ["recipe.batchnorm=false", "+recipe.stride=2", "+recipe.padding=valid", "recipe.momentum=0.0"],
    "vit": ["recipe.activation=gelu", "+recipe.heads=4", "+recipe.patch=2", "+recipe.mlp_ratio=2.0"],
    "grok": ["+recipe.heads=4", "+recipe.tokens=2", "+recipe.mlp_ratio=4.0"],
}


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def case_config(case: tuple, models: int, population: int | None = None) -> dict:
    """The ``zoo build`` config of a case: one population of ``models`` models, or populations (and blocks) of
    ``population`` models each, the same models in the same order."""
    arch, dataset, width, depth, batch, epochs, _ = case
    extra = next((v for k, v in EXTRA.items() if CASES[k] == case), [])
    recipe = next((v for k, v in RECIPES.items() if CASES[k] == case), None)
    size = population or models
    if recipe is not None:  # an INR recipe: one model per image, its own settings
        common = [f"population_size={size}", f"block_size={size}", "memory_floats=4000000000", "progress=false"]
        return compose("build", [f"recipe={recipe}", f"recipe.max_images={models}", *common, *extra])
    seeds = max(1, models // len(LRS))
    return compose(
        "build",
        [
            "recipe=default",
            f"recipe.arch={arch}",
            f"recipe.dataset={dataset}",
            f"recipe.widths=[{width}]",
            f"recipe.depths=[{depth}]",
            f"recipe.batch_sizes=[{batch}]",
            f"recipe.learning_rates=[{','.join(map(str, LRS))}]",
            f"recipe.seeds={seeds}",
            f"recipe.epochs={epochs}",
            f"recipe.checkpoint_epochs=[0,{epochs}]",
            "recipe.weight_decays=[0.0]",
            "recipe.optimizer=sgd",
            "recipe.momentum=0.9",
            "recipe.schedule=constant",
            "recipe.activation=relu",
            "recipe.batchnorm=true",
            "recipe.seed_offset=0",
            "recipe.task_seed=0",
            f"population_size={population or seeds * len(LRS)}",
            f"block_size={population or seeds * len(LRS)}",
            "memory_floats=4000000000",
            "progress=false",
            *extra,
        ],
    )


def case_spec(case: tuple, models: int) -> tuple[PopulationSpec, object]:
    """The PopulationSpec ``zoo build`` trains for this case, and its dataset (an INR case's: the coordinate grid)."""
    cfg = case_config(case, models)
    dataset = load_dataset(cfg["recipe"]["dataset"], seed=int(cfg["recipe"]["task_seed"]))
    plan = make_build_plan(cfg, dataset)
    if len(plan.populations) != 1:
        raise SystemExit(f"expected one population, the plan has {len(plan.populations)}")
    return population_spec(cfg, plan, 0, dataset), population_dataset(plan, 0, dataset)


# ---------------------------------------------------------------------------------------- one at a time
def train_one(spec: PopulationSpec, task, j: int, epochs: int | None = None) -> float:
    """Train model j of ``spec`` in plain PyTorch exactly as the population does, on the device ``task``'s tensors
    are on; returns its last test acc (an INR's: its last PSNR)."""
    model = _fresh(spec)
    model.load_state_dict(spec.init_states[j])
    model.to(task.X_train.device)
    if spec.targets is not None:
        return _train_one_inr(spec, task, model, j, epochs)
    opt = torch.optim.SGD(
        model.parameters(), lr=spec.learning_rates[j], momentum=spec.momentum, weight_decay=spec.weight_decays[j]
    )
    g = torch.Generator().manual_seed(int(spec.data_seeds[j]))
    n, b = len(task.X_train), min(spec.batch_size, len(task.X_train))
    steps, epochs = max(n // b, 1), spec.epochs if epochs is None else epochs
    acc = float("nan")

    def evaluate() -> float:  # the checkpoint metrics the population records: loss and acc on train and test
        model.eval()
        with torch.no_grad():
            for X, y in ((task.X_train, task.y_train), (task.X_test, task.y_test)):
                out = model(X)
                F.cross_entropy(out, y).item()
                a = (out.argmax(1) == y).double().mean().item()
        model.train()
        return a

    model.train()
    if 0 in spec.checkpoint_epochs:
        acc = evaluate()
    for e in range(1, epochs + 1):
        perm = torch.randperm(n, generator=g)
        for s in range(steps):
            idx = perm[s * b : (s + 1) * b].to(task.X_train.device)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(task.X_train[idx]), task.y_train[idx]).backward()
            opt.step()
        if e in spec.checkpoint_epochs:
            acc = evaluate()
    return acc


def _train_one_inr(spec: PopulationSpec, task, model: torch.nn.Module, j: int, epochs: int | None) -> float:
    """Fit INR j as a user would alone: full-batch steps on the coordinate grid, MSE against its own image,
    ``torch.optim.Adam`` (its fastest CPU variant for one small model: ``ADAM_KW``); the checkpoint metrics
    (MSE and PSNR) at the same epochs. Returns the last PSNR."""
    assert spec.targets is not None and spec.optimizer == "adam"
    opt = torch.optim.Adam(
        model.parameters(),
        lr=spec.learning_rates[j],
        betas=spec.betas,
        eps=spec.eps,
        weight_decay=spec.weight_decays[j],
        **ADAM_KW,
    )
    x, y = task.X_train, spec.targets[j].to(task.X_train.device)
    steps = (spec.epochs if epochs is None else epochs) * max(len(x) // min(spec.batch_size, len(x)), 1)
    if spec.batch_size < len(x):
        raise SystemExit("the siren baseline fits full-batch, as the INR recipes do")
    psnr = float("nan")

    def evaluate() -> float:
        with torch.no_grad():
            mse = ((model(x) - y) ** 2).mean().double()
            return float(-10.0 * torch.log10(mse))

    if 0 in spec.checkpoint_epochs:
        psnr = evaluate()
    for e in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        if e in spec.checkpoint_epochs:
            psnr = evaluate()
    return psnr


def _fresh(spec: PopulationSpec) -> torch.nn.Module:
    return spec.layout.build()


def _worker(case: tuple, models: int, rank: int, procs: int, barrier, queue) -> None:
    """One single-thread process of the every-core baseline: warm up, wait for all, train its share."""
    torch.set_num_threads(1)
    spec, task = case_spec(case, models)
    train_one(spec, task, rank, epochs=1)  # warm-up: first-touch allocations, kernels' lazy init
    mine = list(range(rank, models, procs))
    barrier.wait()
    t0 = time.time()
    accs = {j: train_one(spec, task, j) for j in mine}
    queue.put((rank, t0, time.time(), accs))


def on_every_core(target, case: tuple, models: int, procs: int, what: str) -> tuple[float, dict[int, float]]:
    """Run ``target(case, models, rank, procs, barrier, queue)`` in ``procs`` spawned processes that each put
    (rank, start, end, {model: metric}); wall seconds from the common start to the last end, and all metrics."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    ps = [ctx.Process(target=target, args=(case, models, r, procs, barrier, queue), daemon=True) for r in range(procs)]
    for p in ps:
        p.start()
    results = [queue.get() for _ in ps]
    for p in ps:
        p.join()
        if p.exitcode:
            raise SystemExit(f"a {what} process failed (exit code {p.exitcode})")
    metric = {j: a for *_, part in results for j, a in part.items()}
    return max(r[2] for r in results) - min(r[1] for r in results), metric


def every_core(case: tuple, models: int, procs: int) -> tuple[float, dict[int, float]]:
    """Wall seconds of ``procs`` single-thread processes training all models, and every model's test acc."""
    return on_every_core(_worker, case, models, procs, "baseline")


def one_process(spec: PopulationSpec, task, sample: int, threads: int) -> float:
    """Seconds per model of one process with ``threads`` threads, after a warm-up model."""
    torch.set_num_threads(threads)
    train_one(spec, task, 0, epochs=1)
    t = time.perf_counter()
    for j in range(sample):
        train_one(spec, task, j)
    return (time.perf_counter() - t) / sample


# ---------------------------------------------------------------------------------------- population side
def _population_worker(case: tuple, models: int, rank: int, procs: int, barrier, queue) -> None:
    """One single-thread process of the population on every core: the case's models planned as ``procs``
    populations (and blocks) of models/procs each, as ``zoo build executor=dask`` with that many single-thread
    workers trains them; this process trains population ``rank`` after a warm-up run."""
    torch.set_num_threads(1)
    cfg = case_config(case, models, population=-(-models // procs))
    dataset = load_dataset(cfg["recipe"]["dataset"], seed=int(cfg["recipe"]["task_seed"]))
    plan = make_build_plan(cfg, dataset)
    if len(plan.populations) != procs:
        raise SystemExit(f"expected {procs} populations, the plan has {len(plan.populations)}")
    spec, task = population_spec(cfg, plan, rank, dataset), population_dataset(plan, rank, dataset)
    warm = replace(spec, epochs=1, checkpoint_epochs=[0, 1])
    train_population(warm, task, progress=False)
    barrier.wait()
    t0 = time.time()
    res = train_population(spec, task, progress=False)
    t1 = time.time()
    last = res.metrics[:, -1, res.metric_names.index(compared_metric(spec))]
    queue.put((rank, t0, t1, {int(j): float(a) for j, a in zip(plan.populations[rank], last)}))


def population_every_core(case: tuple, models: int, procs: int) -> tuple[float, dict[int, float]]:
    """Wall seconds of ``procs`` single-thread processes each training its population of models/procs (from the
    common start after every warm-up to the last one finishing), and every model's last compared metric."""
    return on_every_core(_population_worker, case, models, procs, "population")


def population_seconds(spec: PopulationSpec, task, threads: int, repeats: int) -> tuple[float, torch.Tensor]:
    """Median wall seconds of ``train_population`` (after a warm-up run) and the last test accuracies."""
    torch.set_num_threads(threads)
    train_population(
        PopulationSpec(**{**spec.__dict__, "epochs": 1, "checkpoint_epochs": [0, 1]}), task, progress=False
    )
    times, res = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        res = train_population(spec, task, progress=False)
        times.append(time.perf_counter() - t)
    return statistics.median(times), res.metrics[:, -1, res.metric_names.index(compared_metric(spec))]


def compared_metric(spec: PopulationSpec) -> str:
    """The last checkpoint's metric both sides are compared on: test accuracy, an INR's PSNR."""
    return "psnr" if spec.targets is not None else "test_acc"


def matmul_gflops(threads: int, n: int = 2048, reps: int = 10) -> float:
    """Dense float32 matmul rate (best of 3) with ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def step_flops(spec: PopulationSpec, task) -> tuple[int, int]:
    """FLOPs of one model's training step (forward + backward) and of its forward on one sample."""
    from torch.utils.flop_counter import FlopCounterMode

    model = _fresh(spec)
    x, y = task.X_train[: spec.batch_size], task.y_train[: spec.batch_size]
    with FlopCounterMode(display=False) as fc:
        if spec.targets is not None:  # an INR: MSE against its image
            ((model(x) - spec.targets[0, : spec.batch_size]) ** 2).mean().backward()
        else:
            F.cross_entropy(model(x), y).backward()
    train = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model.eval()(x[:1])
    return train, fc.get_total_flops()


def run_case(
    name: str, case: tuple, models: int, sample: int, repeats: int, rates: dict[int, float], threads: list[int]
) -> dict:
    n_cores = cores()
    spec, task = case_spec(case, models)
    arch, dataset, width, depth, batch, epochs, _ = case
    print(
        f"[{name}] {models} {arch} (width {width}, depth {depth}) on {dataset}, batch {batch}, {epochs} epochs",
        flush=True,
    )
    grouped = grouped_cnn_supported(spec.template)  # also time today's vmap path, alternating with it
    pop, ref = {}, {}
    for t in threads:
        pop[t] = population_seconds(spec, task, t, repeats)
        if grouped:
            ref[t] = population_seconds(replace(spec, grouped_cnn=False), task, t, repeats)
    pop_threads = min(pop, key=lambda t: pop[t][0])
    one_pop_s, pop_acc = pop[pop_threads]
    # zoo build's other way to use every core: one single-thread process per core, each its share as a population
    every_pop_s, every_pop_metric = population_every_core(case, models, n_cores) if n_cores > 1 else (one_pop_s, {})
    pop_s = min(one_pop_s, every_pop_s)
    pop_kind = (
        f"1 process x {pop_threads} threads"
        if pop_s == one_pop_s
        else f"{n_cores} single-thread processes x {-(-models // n_cores)} models"
    )
    one = {t: one_process(spec, task, min(sample, models), t) for t in threads}
    one_threads = min(one, key=one.get)
    multi_s, multi_acc = every_core(case, models, n_cores)
    one_s = one[one_threads] * models
    base_s, base_kind = (
        (multi_s, f"{n_cores} single-thread processes")
        if multi_s <= one_s
        else (one_s, f"1 process x {one_threads} threads (sample of {min(sample, models)} scaled)")
    )
    base_metric = torch.tensor([multi_acc[j] for j in range(models)])
    acc_diff = float((pop_acc.double() - base_metric).abs().mean())
    every_diff = (
        float((torch.tensor([every_pop_metric[j] for j in range(models)]) - base_metric).abs().mean())
        if every_pop_metric
        else acc_diff
    )
    train_f, fwd_f = step_flops(spec, task)
    steps = max(len(task.X_train) // batch, 1) * epochs
    flops = train_f * steps * models
    evaluated = len(task.X_train) + (len(task.X_test) if spec.targets is None else 0)  # an INR: its own grid
    eval_flops = fwd_f * evaluated * len(spec.checkpoint_epochs) * models
    rate_threads = pop_threads if pop_s == one_pop_s else max(rates)  # every core: the matmul rate on all threads
    rate = rates[rate_threads]
    row = {
        "case": name,
        "arch": arch,
        "dataset": dataset,
        "width": width,
        "depth": depth,
        "batch_size": batch,
        "epochs": epochs,
        "models": models,
        "cores": n_cores,
        "population_s": pop_s,  # the faster of the two ways below
        "population": pop_kind,
        "population_one_process_s": one_pop_s,
        "population_threads": pop_threads,
        "population_s_by_threads": {t: v[0] for t, v in pop.items()},
        "population_every_core_s": every_pop_s,
        "speedup_population_every_core_vs_one_process": one_pop_s / every_pop_s,
        "mean_abs_test_acc_diff_every_core_vs_baseline": every_diff,
        "every_core_s": multi_s,
        "one_process_s_per_model_by_threads": one,
        "one_process_sample": min(sample, models),
        "one_process_best_threads": one_threads,
        "one_process_s_scaled": one_s,
        "baseline_s": base_s,
        "baseline": base_kind,
        "speedup": base_s / pop_s,
        "speedup_vs_every_core": multi_s / pop_s,
        "mean_abs_test_acc_diff_vs_baseline": acc_diff,  # an INR case: of its last PSNR (dB)
        "compared_metric": compared_metric(spec),
        "train_flops_per_step_per_model": train_f,
        "training_gflops": flops / 1e9,
        "population_gflops": flops / pop_s / 1e9,
        "matmul_gflops_same_threads": rate,
        "fraction_of_matmul_rate": flops / pop_s / 1e9 / rate,
        "fraction_of_matmul_rate_with_evals": (flops + eval_flops) / pop_s / 1e9 / rate,
    }
    if grouped:  # the grouped-convolution path against the vmap path it replaced, same thread count
        vm_s, vm_acc = ref[pop_threads]
        row["population_vmap_s"] = vm_s
        row["population_vmap_s_by_threads"] = {t: v[0] for t, v in ref.items()}
        row["speedup_grouped_vs_vmap"] = vm_s / one_pop_s
        row["mean_abs_test_acc_diff_grouped_vs_vmap"] = float((pop_acc.double() - vm_acc.double()).abs().mean())
    print(
        f"    population in one process {one_pop_s:.2f} s ({pop_threads} threads; by threads "
        f"{', '.join(f'{t}: {v[0]:.2f}' for t, v in pop.items())}); as {n_cores} single-thread processes of "
        f"{-(-models // n_cores)} models {every_pop_s:.2f} s (mean |diff| vs baseline {every_diff:.4f})",
        flush=True,
    )
    if grouped:
        print(
            f"    vmap path (today's before grouped convolutions) {row['population_vmap_s']:.2f} s:"
            f" grouped is {row['speedup_grouped_vs_vmap']:.2f}x; mean |test acc diff| "
            f"{row['mean_abs_test_acc_diff_grouped_vs_vmap']:.5f}",
            flush=True,
        )
    print(
        f"    one at a time: {n_cores} single-thread processes {multi_s:.2f} s on all {models}; one process "
        f"{', '.join(f'{t} thr: {v * 1e3:.0f} ms/model' for t, v in one.items())} (sample {min(sample, models)})"
    )
    print(
        f"    speedup {row['speedup']:.1f}x ({pop_kind}) vs {base_kind}; {row['population_gflops']:.1f} GFLOP/s"
        f" training = {100 * row['fraction_of_matmul_rate']:.0f}% of matmul ({rate:.0f} GFLOP/s, {rate_threads} thr);"
        f" mean |{compared_metric(spec).replace('_', ' ')} diff| {acc_diff:.4f}",
        flush=True,
    )
    return row


# ---------------------------------------------------------------------------------------- on a GPU (issue 25, item 4)
def on_device(task, device: torch.device):
    """The case's dataset with its tensors on ``device``."""
    return replace(
        task,
        X_train=task.X_train.to(device),
        y_train=task.y_train.to(device),
        X_test=task.X_test.to(device),
        y_test=task.y_test.to(device),
    )


def run_case_device(name: str, case: tuple, models: int, sample: int, repeats: int, device: torch.device) -> dict:
    """The population (Lightning's accelerator: ``PopulationSpec.device``) against one model at a time in plain torch
    on the same device (a sample of models, scaled to N): seconds and models per second of each."""
    spec, task = case_spec(case, models)
    spec = replace(spec, device=str(device))
    print(f"[{name}] {models} models on {device}", flush=True)
    pop_s, pop_metric = population_seconds(spec, task, torch.get_num_threads(), repeats)
    task_dev = on_device(task, device)
    n = min(sample, models)
    train_one(spec, task_dev, 0, epochs=1)  # warm-up: kernels' lazy init
    t = time.perf_counter()
    one_metric = torch.tensor([train_one(spec, task_dev, j) for j in range(n)], dtype=torch.float64)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    one_s = (time.perf_counter() - t) / n * models
    row = {
        "case": name,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "models": models,
        "population_s": pop_s,
        "population_models_per_s": models / pop_s,
        "one_at_a_time_s_scaled": one_s,
        "one_at_a_time_sample": n,
        "one_at_a_time_models_per_s": models / one_s,
        "speedup": one_s / pop_s,
        "compared_metric": compared_metric(spec),
        "mean_abs_metric_diff_on_sample": float((pop_metric[:n].double() - one_metric).abs().mean()),
    }
    print(
        f"    population {pop_s:.2f} s ({row['population_models_per_s']:.0f} models/s); one at a time"
        f" {one_s:.2f} s scaled from {n} ({row['one_at_a_time_models_per_s']:.1f} models/s): {row['speedup']:.1f}x;"
        f" mean |{row['compared_metric']} diff| {row['mean_abs_metric_diff_on_sample']:.4f}",
        flush=True,
    )
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {','.join(CASES)}")
    ap.add_argument("--models", type=int, default=None, help="override every case's N")
    ap.add_argument("--sample", type=int, default=32, help="models timed per one-process thread setting")
    ap.add_argument("--repeats", type=int, default=3, help="population timings per thread count (median)")
    ap.add_argument("--threads", default=None, help="thread counts tried on both sides, e.g. 1,2 (default: 1..cores)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 16 models, sample 2, 1 repeat")
    ap.add_argument(
        "--device",
        default="cpu",
        help="cuda | cuda:N: population vs one model at a time on that GPU (JSON: docs/bench-population-cuda.json)",
    )
    ap.add_argument("--json", default=None, help="default docs/bench-population.json (cpu), -cuda.json (a GPU)")
    a = ap.parse_args()
    names = a.cases.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        ap.error(f"unknown case {unknown[0]!r}; choose from {', '.join(CASES)}")
    models = 16 if a.quick else a.models
    sample, repeats = (2, 1) if a.quick else (a.sample, a.repeats)
    if a.device != "cpu":
        try:
            device = resolve_device(a.device)
        except ZooError as e:
            raise SystemExit(f"bench/population.py: {e}") from None
        rows = [run_case_device(n, CASES[n], models or CASES[n][-1], sample, repeats, device) for n in names]
        write_json(a.json or "docs/bench-population-cuda.json", {"device": str(device), "cases": rows})
        return 0
    load0 = os.getloadavg()[0]
    threads = [int(t) for t in a.threads.split(",")] if a.threads else list(range(1, cores() + 1))
    rates = {t: matmul_gflops(t) for t in threads}
    print(
        f"dense float32 matmul (2048^2): {', '.join(f'{t} thr {r:.0f} GFLOP/s' for t, r in rates.items())};"
        f" load average {load0:.1f}",
        flush=True,
    )
    rows = [run_case(n, CASES[n], models or CASES[n][-1], sample, repeats, rates, threads) for n in names]
    print(
        f"\n{'case':<9}{'N':>5}{'population s':>14}{'one-at-a-time s':>17}{'speedup':>9}{'GFLOP/s':>9}"
        f"{'of matmul':>11}  baseline"
    )
    for r in rows:
        print(
            f"{r['case']:<9}{r['models']:>5}{r['population_s']:>14.2f}{r['baseline_s']:>17.2f}"
            f"{r['speedup']:>8.1f}x{r['population_gflops']:>9.1f}{100 * r['fraction_of_matmul_rate']:>10.0f}%"
            f"  {r['baseline']}"
        )
    cmd = "bench/population.py" + "".join(f" {x}" for x in sys.argv[1:])
    out = {
        "command": f".venv/bin/python {cmd}",
        "torch": torch.__version__,
        "cores": cores(),
        "load_average_start": load0,
        "load_average_end": os.getloadavg()[0],
        "matmul_gflops": rates,
        "cases": rows,
    }
    write_json(a.json or "docs/bench-population.json", out)
    return 0


def write_json(path: str, out: dict) -> None:
    """Write this run's figures to ``path``, keeping the keys an earlier file holds that this run does not write
    (other benches' figures recorded beside it, e.g. the cnn-zoo-mnist build estimate)."""
    file = Path(path)
    old = json.loads(file.read_text()) if file.exists() else {}
    kept = {k: v for k, v in old.items() if k not in out} if isinstance(old, dict) else {}
    cmd = "bench/population.py" + "".join(f" {x}" for x in sys.argv[1:])
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps({"command": f".venv/bin/python {cmd}", **out, **kept}, indent=1) + "\n")
    print(f"wrote {path}; rerun: .venv/bin/python {cmd}")


if __name__ == "__main__":
    sys.exit(main())
