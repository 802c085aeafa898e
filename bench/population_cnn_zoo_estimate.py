"""The cnn-zoo-mnist full build's time, both ways: grouped-convolution path (today) vs the vmap path it replaced.

One population of the recipe's 2,000-model plan is stepped directly (its PopulationModule, no Lightning loop),
alternating the two paths step by step, and evaluated once each way; the full build is then the plan's
model-steps (10 epochs; the vmap path computed models that sit a step out, the grouped path skips them) times
the time per model-step, plus its model-evaluations (9 checkpoints) times the time per model-evaluation. Run it
on an otherwise quiet machine for absolute hours; the ratios hold under load (both paths alternate).

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python bench/population_cnn_zoo_estimate.py --json /tmp/est.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.app.config import compose  # noqa: E402
from zoo.training.build import make_build_plan, population_spec  # noqa: E402
from zoo.training.population_module import PopulationModule  # noqa: E402
from zoo.training.recipe import load_recipe_datasets  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--population", type=int, default=2, help="which population of the plan (2: 51 Adam models)")
    ap.add_argument("--rounds", type=int, default=4, help="rounds of 2 steps per path, alternating")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = compose("build", ["recipe=cnn-zoo-mnist", "progress=false"])
    datasets = load_recipe_datasets(cfg["recipe"])
    plan = make_build_plan(cfg, datasets)
    data = next(iter(datasets.values()))
    spec = population_spec(cfg, plan, a.population, datasets)
    mods = {}
    for grouped in (False, True):
        mod = PopulationModule(replace(spec, grouped_cnn=grouped), data)
        mod.manual_backward = lambda loss: loss.backward()  # type: ignore[method-assign]  # no Trainer attached
        mod.log = lambda *x, **k: None  # type: ignore[method-assign]
        mod.training_step(None, 0)  # warm-up
        mods[grouped] = mod
    load0 = os.getloadavg()[0]
    steps: dict[bool, list[float]] = {False: [], True: []}
    for r in range(a.rounds):
        for grouped in (False, True):
            t = time.perf_counter()
            for k in range(2):
                mods[grouped].training_step(None, 1 + 2 * r + k)
            steps[grouped].append((time.perf_counter() - t) / 2)
    evals = {}
    for grouped in (False, True):
        t = time.perf_counter()
        mods[grouped].evaluate()
        evals[grouped] = time.perf_counter() - t
    m, n, b = len(spec.init_states), len(data.X_train), spec.batch_size
    computed = needed = 0  # model-steps per epoch over the plan: all of a population's rows vs those that step
    for pop in plan.populations:
        own = [
            n // b if plan.models[i].train_fraction >= 1 else max(1, round(plan.models[i].train_fraction * n)) // b
            for i in pop
        ]
        own = [max(1, s) for s in own]
        computed += len(pop) * max(own)
        needed += sum(own)
    epochs, ckpts, models = int(cfg["recipe"]["epochs"]), len(plan.checkpoint_epochs), len(plan.models)
    out = {"population": a.population, "models_in_population": m, "load_average_start": load0}
    for grouped, model_steps in ((False, computed), (True, needed)):
        key = "grouped" if grouped else "vmap"
        step = statistics.median(steps[grouped])
        train_h = epochs * model_steps * step / m / 3600
        eval_h = ckpts * models * evals[grouped] / m / 3600
        out |= {
            f"step_s_{key}": step,
            f"evaluate_s_{key}": evals[grouped],
            f"model_steps_per_epoch_{key}": model_steps,
            f"full_build_h_{key}": train_h + eval_h,
        }
        print(
            f"{key:8s} step {step:.3f} s ({m} models), evaluate {evals[grouped]:.1f} s;"
            f" {model_steps} model-steps/epoch;"
            f" full build ~{train_h + eval_h:.2f} h (training {train_h:.2f} h, evaluation {eval_h:.2f} h)"
        )
    out["load_average_end"] = os.getloadavg()[0]
    out["estimated_speedup"] = out["full_build_h_vmap"] / out["full_build_h_grouped"]
    print(
        f"estimated speed-up {out['estimated_speedup']:.2f}x; load average {load0:.1f} -> {out['load_average_end']:.1f}"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
