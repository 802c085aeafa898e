"""Git Re-Basin benchmark: alignment quality and speed, measured side by side in one run.

(a) quality: digits MLPs (width 128, depth 3) and BatchNorm CNNs on digits-image, trained here from
    different seeds with plain torch; L2 distance, top singular-vector agreement and linear-path loss
    barrier (training loss, BN statistics recomputed) before and after matching to seed 0, and after matching
    + REPAIR (zoo.rebasin.repair: every unit, the logits included, reset to the interpolated endpoint
    statistics on training data); MergeMany, plain and REPAIRed.
(b) speed: aligning a population of MLPs (width 128, depth 3) to one reference with the batched matcher
    (one GEMM per group builds every model's similarity matrix) against the plain one-pair-at-a-time
    matcher, timed on a subset and extrapolated. Two populations: random initializations (the hardest
    case: no shared structure, most passes) and lightly trained nets (SGD steps on digits).

Every result names its population: architecture, the stored layout key, parameter count, how many
models and how they were made (none comes from a zoo recipe: the bench trains or initializes them itself).

Rerun: .venv/bin/python bench/rebasin.py            (writes docs/bench-rebasin.json; 1 torch thread)
       .venv/bin/python bench/rebasin.py --only speed --threads 0 --out /tmp/rebasin-default-threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from zoo.arch import arch_spec, build_model  # noqa: E402
from zoo.datasets import load_dataset  # noqa: E402
from zoo.evaluate import evaluate  # noqa: E402
from zoo.layout import layout_of  # noqa: E402
from zoo.rebasin import (  # noqa: E402
    match_population,
    merge_many,
    permutation_spec,
    permute_state,
    permute_states,
    weight_matching,  # noqa: E402
)
from zoo.rebasin.repair import repair_mix  # noqa: E402
from zoo.rebasin.report import batched_l2, l2_distance, loss_barrier, top_singular_agreement  # noqa: E402


def describe(spec: dict) -> str:
    """'MLPs 64-128-128-128-10' / 'BatchNorm CNNs (3 conv layers of 32 channels)': what a population is."""
    if spec["name"] == "mlp":
        n_in = int(np.prod(spec["input_shape"]))
        return "MLPs " + "-".join(map(str, [n_in] + [spec["width"]] * spec["depth"] + [spec["num_outputs"]]))
    bn = "BatchNorm " if spec.get("batchnorm") else ""
    return f"{bn}{spec['name'].upper()}s ({spec['depth']} conv layers of {spec['width']} channels)"


def train(spec: dict, task, seed: int, epochs: int, lr: float = 1e-3, batch: int = 64) -> torch.nn.Module:
    """Plain torch training: Adam, shuffled minibatches, seeded."""
    torch.manual_seed(seed)
    model = build_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    X, y = task.X_train, task.y_train
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), batch):
            idx = order[i : i + batch]
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model, X, y) -> float:
    return float((model.eval()(X).argmax(1) == y).float().mean())


def quality(name: str, spec: dict, task, seeds: int, epochs: int, steps: int) -> dict:
    models = [train(spec, task, s, epochs) for s in range(seeds)]
    states = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in models]
    pspec = permutation_spec(models[0])
    ref = states[0]
    layout = layout_of(models[0], spec)
    rows = []
    for s in range(1, seeds):
        r = weight_matching(pspec, ref, states[s], seed=0)
        al = permute_state(pspec, states[s], r.perms)
        b0 = loss_barrier(layout, ref, states[s], task, steps=steps)
        b1 = loss_barrier(layout, ref, al, task, steps=steps)
        b2 = loss_barrier(layout, ref, al, task, steps=steps, repair=True)
        b3 = loss_barrier(layout, ref, al, task, steps=steps, repair=True, repair_outputs=False)
        r3 = weight_matching(pspec, ref, states[s], seed=0, restarts=3)
        rows.append(
            {
                "seed": s,
                "l2_before": l2_distance(ref, states[s], pspec.matched),
                "l2_after": l2_distance(ref, al, pspec.matched),
                "l2_after_3_restarts": l2_distance(ref, permute_state(pspec, states[s], r3.perms), pspec.matched),
                "svd_before": top_singular_agreement(ref, states[s], pspec.matched),
                "svd_after": top_singular_agreement(ref, al, pspec.matched),
                "barrier_before": b0["barrier"],
                "barrier_after": b1["barrier"],
                "barrier_after_repair": b2["barrier"],
                "barrier_after_repair_hidden_only": b3["barrier"],
                "passes": int(r.passes[0]),
            }
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "seed"}
    mean["barrier_reduction"] = 1 - mean["barrier_after"] / mean["barrier_before"]
    mean["barrier_reduction_repair"] = 1 - mean["barrier_after_repair"] / mean["barrier_before"]
    mean["barrier_reduction_repair_hidden_only"] = 1 - mean["barrier_after_repair_hidden_only"] / mean["barrier_before"]
    # MergeMany: average of all models after aligning them to each other, vs the naive average
    stacked = {k: torch.stack([st[k] for st in states]) for k in states[0]}
    perms, merged, hist = merge_many(pspec, stacked, seed=0)
    merged_states = permute_states(pspec, stacked, perms)
    naive = {k: v.float().mean(0).to(v.dtype) if v.is_floating_point() else v[0] for k, v in stacked.items()}
    accs = {}
    for label, st in (("naive_average", naive), ("merge_many", merged)):  # BN statistics from training data
        accs[label] = float(evaluate(layout, layout.flatten(st)[None], task, "test", recalibrate_bn=True)["acc"][0])
    aligned_all = torch.stack([layout.flatten({k: v[i] for k, v in merged_states.items()}) for i in range(seeds)])
    rep = repair_mix(layout, aligned_all[None], torch.full((1, seeds), 1.0 / seeds), task)  # stats: train split
    accs["merge_many_repair"] = float(evaluate(layout, rep, task, "test")["acc"][0])
    accs["endpoints_mean"] = float(np.mean([accuracy(m, task.X_test, task.y_test) for m in models]))
    made = (
        f"{seeds} {describe(spec)} on {spec['input_shape']} inputs, trained here with Adam lr 1e-3, batch 64,"
        f" {epochs} epochs, seeds 0..{seeds - 1}; seed 0 is the reference"
    )
    out = {
        "name": name,
        "population": made,
        "layout": layout.key(),
        "parameters": layout.size,
        "arch": spec,
        "seeds": seeds,
        "epochs": epochs,
        "pairs": rows,
        "mean": mean,
        "merge": {**accs, "spread_rounds": [float(h) for h in hist]},
    }
    print(
        f"[quality] {name}: {seeds - 1} pairs to seed 0, endpoints test acc {accs['endpoints_mean']:.3f}\n"
        f"    population: {made} (layout {layout.key()}, {layout.size} parameters)"
    )
    print(
        f"    L2 {mean['l2_before']:.3f} -> {mean['l2_after']:.3f} ({mean['l2_after_3_restarts']:.3f} with 3 restarts)"
        f"   top-SV agreement {mean['svd_before']:.3f} -> "
        f"{mean['svd_after']:.3f}"
    )
    print(
        f"    loss barrier {mean['barrier_before']:.4f} -> {mean['barrier_after']:.4f}  "
        f"(reduction {100 * mean['barrier_reduction']:.1f}%); with REPAIR {mean['barrier_after_repair']:.4f} "
        f"(reduction {100 * mean['barrier_reduction_repair']:.1f}%; hidden units only "
        f"{mean['barrier_after_repair_hidden_only']:.4f})"
    )
    print(
        f"    MergeMany of {seeds}: test acc {accs['merge_many']:.3f} ({accs['merge_many_repair']:.3f} with REPAIR) vs"
        f" naive average {accs['naive_average']:.3f}"
    )
    return out


def population(n: int, width: int, depth: int, seed: int, train_steps: int, task) -> dict[str, torch.Tensor]:
    """n MLPs (torch default init, seeds seed..seed+n-1) as stacked state dicts, optionally lightly trained
    together (full stacked forward with bmm, SGD lr 0.1, batches of 128 digits samples)."""
    spec = arch_spec("mlp", task.input_shape, task.num_outputs, width, depth)
    states = []
    for i in range(n):
        torch.manual_seed(seed + i)
        states.append(build_model(spec).state_dict())
    st = {k: torch.stack([s[k] for s in states]).requires_grad_(train_steps > 0) for k in states[0]}
    names = list(st)
    g = torch.Generator().manual_seed(seed)
    for _ in range(train_steps):
        idx = torch.randint(0, len(task.X_train), (128,), generator=g)
        h = task.X_train[idx].unsqueeze(0).expand(n, -1, -1)
        for j in range(0, len(names), 2):
            w, b = st[names[j]], st[names[j + 1]]
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if j + 2 < len(names):
                h = torch.relu(h)
        loss = F.cross_entropy(h.reshape(-1, h.shape[-1]), task.y_train[idx].repeat(n), reduction="sum") / 128
        grads = torch.autograd.grad(loss, [st[k] for k in names])
        with torch.no_grad():
            for k, gr in zip(names, grads):
                st[k] -= 0.1 * gr
    return {k: v.detach() for k, v in st.items()}, spec


def speed(label: str, n: int, pairwise_n: int, width: int, depth: int, train_steps: int, task) -> dict:
    t0 = time.perf_counter()
    pop, spec = population(n + 1, width, depth, 1000, train_steps, task)
    make_s = time.perf_counter() - t0
    pspec = permutation_spec(build_model(spec))
    ref = {k: v[0] for k, v in pop.items()}
    models = {k: v[1:] for k, v in pop.items()}
    t0, c0 = time.perf_counter(), time.process_time()
    res = match_population(pspec, ref, models, seed=0)
    batched_s, batched_cpu = time.perf_counter() - t0, time.process_time() - c0
    sub = [{k: v[i] for k, v in models.items()} for i in range(pairwise_n)]
    timings, cpu, objs = {}, {}, {}
    for dt in (torch.float32, torch.float64):
        t0, c0 = time.perf_counter(), time.process_time()
        rs = [weight_matching(pspec, ref, s, seed=0, dtype=dt) for s in sub]
        timings[str(dt).removeprefix("torch.")] = (time.perf_counter() - t0) / pairwise_n
        cpu[str(dt).removeprefix("torch.")] = (time.process_time() - c0) / pairwise_n
        objs[str(dt).removeprefix("torch.")] = np.array([float(r.objective[0]) for r in rs])
    batched_obj = res.objective[:pairwise_n].numpy()
    agree = float(np.mean(np.isclose(objs["float64"], batched_obj, rtol=1e-6)))
    aligned = permute_states(pspec, models, res.perms)
    d0 = float(batched_l2(ref, models, pspec.matched).mean())
    d1 = float(batched_l2(ref, aligned, pspec.matched).mean())
    ms = batched_s / n * 1e3
    layout = layout_of(build_model(spec), spec)
    made = f"{n} {describe(spec)} (torch default init, seeds 1001..{1000 + n}; reference seed 1000)" + (
        f", trained together {train_steps} SGD steps (lr 0.1, batches of 128 digits samples)"
        if train_steps
        else ", untrained"
    )
    out = {
        "population": label,
        "made": made,
        "layout": layout.key(),
        "parameters": layout.size,
        "models": n,
        "width": width,
        "depth": depth,
        "train_steps": train_steps,
        "batched_ms_per_model": ms,
        "batched_cpu_ms_per_model": batched_cpu / n * 1e3,
        "pairwise_cpu_ms_per_model_float32": cpu["float32"] * 1e3,
        "pairwise_subset": pairwise_n,
        "pairwise_ms_per_model_float32": timings["float32"] * 1e3,
        "pairwise_ms_per_model_float64": timings["float64"] * 1e3,
        "speedup_vs_pairwise_float32": timings["float32"] * 1e3 / ms,
        "speedup_vs_pairwise_float64": timings["float64"] * 1e3 / ms,
        "batched_total_s": batched_s,
        "pairwise_extrapolated_total_s_float32": timings["float32"] * n,
        "passes_mean": float(res.passes.mean()),
        "passes_max": int(res.passes.max()),
        "same_objective_as_pairwise_float64": agree,
        "l2_before": d0,
        "l2_after": d1,
        "population_build_s": make_s,
    }
    print(
        f"[speed] {label}: {n} MLPs (width {width}, depth {depth}) -> one reference\n    population: {made}"
        f" (layout {layout.key()}, {layout.size} parameters)"
    )
    print(
        f"    batched   {ms:.2f} ms/model wall, {batched_cpu / n * 1e3:.2f} ms/model CPU ({batched_s:.1f} s total, "
        f"passes mean {res.passes.mean():.1f}, max {res.passes.max()})"
    )
    print(
        f"    pairwise  {timings['float32'] * 1e3:.2f} ms/model float32 ({cpu['float32'] * 1e3:.2f} CPU), "
        f"{timings['float64'] * 1e3:.2f} ms/model "
        f"float64 (timed on {pairwise_n} models, extrapolated: {timings['float32'] * n:.1f} s for {n})"
    )
    print(
        f"    speedup   {out['speedup_vs_pairwise_float32']:.1f}x vs float32 pairwise, "
        f"{out['speedup_vs_pairwise_float64']:.1f}x vs float64; same objective as pairwise on "
        f"{100 * agree:.0f}% of the subset; L2 {d0:.2f} -> {d1:.2f}"
    )
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--pairwise", type=int, default=20, help="models timed one pair at a time (extrapolated)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (0: torch's default). 1 by default: on a shared 2-core machine, OpenMP "
        "threads spin against other processes and the many small GEMMs of the pairwise path "
        "slow down tens of times",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    p.add_argument("--only", choices=["quality", "speed"], help="run one half of the benchmark")
    p.add_argument("--out", default="docs/bench-rebasin.json")
    args = p.parse_args(argv)
    if args.threads < 0:
        p.error("--threads must be >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    q = args.quick
    cmd = "bench/rebasin.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    t0 = time.perf_counter()
    digits, image = load_dataset("digits"), load_dataset("digits-image")
    results = {
        "command": f".venv/bin/python {cmd}",
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average_start": os.getloadavg()[0],
    }
    results["quality"] = (
        []
        if args.only == "speed"
        else [
            quality(
                "mlp-128x3 digits",
                arch_spec("mlp", digits.input_shape, 10, 32 if q else 128, 3),
                digits,
                3 if q else 5,
                2 if q else 30,
                11,
            ),
            quality(
                "cnn-bn-32x3 digits-image",
                arch_spec("cnn", image.input_shape, 10, 8 if q else 32, 3),
                image,
                3 if q else 5,
                2 if q else 20,
                11,
            ),
        ]
    )
    n = 40 if q else args.models
    pw = 4 if q else args.pairwise
    results["speed"] = (
        []
        if args.only == "quality"
        else [
            speed("random init", n, pw, 128, 3, 0, digits),
            speed("lightly trained (50 SGD steps)", n, pw, 128, 3, 5 if q else 50, digits),
        ]
    )
    results["seconds"] = time.perf_counter() - t0
    results["load_average_end"] = os.getloadavg()[0]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out} in {results['seconds']:.0f} s; rerun: .venv/bin/python {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
