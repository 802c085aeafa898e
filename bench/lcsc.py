"""LCSC against the last checkpoint, the best EMA and the best uniform average, and LCSC's training-cost claim.

Part 1, per zoo: ``lcsc_zoo`` over every done model (fitness: validation loss on 20% of the TRAINING split;
EMA decay and uniform window also chosen on it): the share of models whose LCSC test accuracy is >= the last
checkpoint's / the best EMA's / the best uniform average's, the mean gains, overall and per group (the phase
from the zoo's landscape table when it has one, else learning rate), and the search's wall time.

Part 2, training cost (a zoo trained at a constant learning rate, so checkpoints 0..e are what a run stopped
at epoch e saves): per cell (every hyperparameter but the seed), the fewest epochs e < E at which the mean
test accuracy over seeds of LCSC over checkpoints 0..e reaches the mean of the last checkpoint at E minus its
std over seeds; the same for plainly stopping at e (last@e) and the EMA/uniform at e. Saving = E / e. Cells
whose models do not train (mean test accuracy at E below ``--trained``) are left out and counted.

Part 3, a generator (``--run``, a ``zoo fit`` folder with snapshots): LCSC over its snapshots against its
shipped weights (EMA of the best validation epoch), the last snapshot and EMA/uniform averages, by the mean
test accuracy of the same fixed-seed samples; then the fewest training steps whose snapshot-prefix LCSC
reaches the last snapshot's mean minus its std over 5 sample seeds.

``--ablate-bounds``: on the first zoo's models that train, the default bounds [0, 1] against [-0.5, 1.5] and
[-1, 2] (wider bounds fit the validation rows, which are training data, and lose test accuracy).

Rerun:  .venv/bin/zoo build recipe=lcsc-mlp-digits out=data/zoos/lcsc-mlp-digits.zarr
        OMP_NUM_THREADS=1 .venv/bin/python bench/lcsc.py --zoo data/zoos/lcsc-mlp-digits.zarr \
            --cost-zoo data/zoos/lcsc-mlp-digits.zarr --ablate-bounds --run data/runs/dwf-lcsc --json docs/lcsc.json
        (the run: .venv/bin/zoo fit generator=dwf zoo=data/zoos/dwf-mlp-digits.zarr out=data/runs/dwf-lcsc \
            snapshot_every_n_steps=100)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402
from generators.lcsc.search import GENERATOR_SEARCH, SearchConfig  # noqa: E402
from generators.lcsc.snapshots import SnapshotCombiner, _snapshot_states, lcsc_generator  # noqa: E402
from generators.lcsc.zoo import lcsc_zoo  # noqa: E402
from generators.registry import load  # noqa: E402

METHODS = ("last", "ema", "uniform")


def compare(t: pd.DataFrame) -> dict:
    """Share of rows where LCSC's test accuracy is >= each baseline's, and LCSC's mean gain over it."""
    out = {
        "models": int(len(t)),
        "mean_test_acc": {m: round(float(t[f"{m}_test_acc"].mean()), 4) for m in (*METHODS, "lcsc")},
    }
    for m in METHODS:
        d = t["lcsc_test_acc"] - t[f"{m}_test_acc"]
        out[f"lcsc_ge_{m}"] = round(float((d >= 0).mean()), 3)
        out[f"lcsc_gt_{m}"] = round(float((d > 0).mean()), 3)  # strictly better (ties are common: same argmax)
        out[f"gain_vs_{m}"] = round(float(d.mean()), 4)
    out["lcsc_val_loss_le_ema"] = round(float((t["lcsc_val_loss"] <= t["ema_val_loss"]).mean()), 3)
    return out


def groups_of(z: zoo.Zoo) -> tuple[str, pd.Series]:
    """(name, per-model group label): the landscape phase if the zoo has one, else the learning rate."""
    land = z.landscape
    if land is not None and "phase" in land and "model_id" in land:
        return "phase", land.set_index("model_id")["phase"]
    return "learning_rate", z.models.set_index("model_id")["learning_rate"]


def part1(path: str, config: SearchConfig) -> dict:
    """LCSC vs last / best EMA / best uniform on every done model of one zoo."""
    z = zoo.open(path)
    r = lcsc_zoo(z, "all", config)
    t = r.table
    name, labels = groups_of(z)
    t["group"] = labels.loc[t["model_id"]].to_numpy()
    res = {
        "zoo": path,
        "checkpoints": len(z.checkpoint_epochs),
        "search_seconds": round(r.seconds, 1),
        **compare(t),
        "group_by": name,
        "groups": {str(g): compare(sub) for g, sub in t.groupby("group", sort=True)},
    }
    print(f"\n{path}: {res['models']} models x {res['checkpoints']} checkpoints, search {r.seconds:.1f}s", flush=True)
    print(
        f"  mean test acc  last {res['mean_test_acc']['last']:.4f}  EMA {res['mean_test_acc']['ema']:.4f}  "
        f"uniform {res['mean_test_acc']['uniform']:.4f}  LCSC {res['mean_test_acc']['lcsc']:.4f}"
    )
    print(
        f"  {'group':<14}{'n':>4}  {'LCSC>=last':>10} {'gain':>8}  {'LCSC>=EMA':>10} {'gain':>8}  "
        f"{'LCSC>=unif':>10} {'gain':>8}"
    )
    for g, c in [("all", res)] + list(res["groups"].items()):
        print(
            f"  {g:<14}{c['models']:>4}  {c['lcsc_ge_last']:>10.2f} {c['gain_vs_last']:>+8.4f}  "
            f"{c['lcsc_ge_ema']:>10.2f} {c['gain_vs_ema']:>+8.4f}  {c['lcsc_ge_uniform']:>10.2f} "
            f"{c['gain_vs_uniform']:>+8.4f}"
        )
    return res


def bounds_ablation(path: str, config: SearchConfig, trained: float) -> dict:
    """LCSC with the default [0, 1] bounds against wider ones, on the models that train (last test acc >= trained)."""
    import dataclasses

    z = zoo.open(path)
    models = z.models
    ids = models.loc[(models["status"] == "done") & (models["test_acc"] >= trained), "model_id"].tolist()
    out = {"zoo": path, "models": len(ids), "trained_threshold": trained, "bounds": {}}
    print(f"\nbounds ablation on {path} ({len(ids)} models with last test acc >= {trained}):")
    for lo, hi in ((config.lower, config.upper), (-0.5, 1.5), (-1.0, 2.0)):
        t = lcsc_zoo(z, ids, dataclasses.replace(config, lower=lo, upper=hi)).table
        c = compare(t)
        out["bounds"][f"[{lo:g}, {hi:g}]"] = c
        print(
            f"  [{lo:g}, {hi:g}]: LCSC>=last {c['lcsc_ge_last']:.2f} ({c['gain_vs_last']:+.4f})  LCSC>=EMA "
            f"{c['lcsc_ge_ema']:.2f} ({c['gain_vs_ema']:+.4f})  val loss <= EMA {c['lcsc_val_loss_le_ema']:.2f}",
            flush=True,
        )
    return out


def part2(path: str, config: SearchConfig, trained: float) -> dict:
    """Fewest epochs at which LCSC (and last / EMA / uniform) over a checkpoint prefix matches the last at E."""
    z = zoo.open(path)
    models = z.models[z.models["status"] == "done"]
    epochs = z.checkpoint_epochs
    cell_cols = [
        c for c in ("arch", "width", "depth", "learning_rate", "batch_size", "weight_decay", "optimizer") if c in models
    ]
    full = models.set_index("model_id")["test_acc"]
    rows = []
    t0 = time.perf_counter()
    for upto in range(1, len(epochs) - 1):
        t = lcsc_zoo(z, models["model_id"].tolist(), config, upto=upto).table
        for m in (*METHODS, "lcsc"):
            rows += [
                {"model_id": i, "epoch": epochs[upto], "method": m, "test_acc": a}
                for i, a in zip(t["model_id"], t[f"{m}_test_acc"])
            ]
        print(
            f"  prefix to epoch {epochs[upto]:>3}: mean test acc "
            + "  ".join(f"{m} {t[f'{m}_test_acc'].mean():.4f}" for m in (*METHODS, "lcsc")),
            flush=True,
        )
    seconds = time.perf_counter() - t0
    long = pd.DataFrame(rows).merge(models[["model_id", *cell_cols]], on="model_id")
    cells, skipped = [], 0
    for key, cell in models.groupby(cell_cols):
        ref = full.loc[cell["model_id"]]
        if ref.mean() < trained:
            skipped += 1
            continue
        target = ref.mean() - ref.std(ddof=1)
        entry = {
            **dict(zip(cell_cols, [v.item() if hasattr(v, "item") else v for v in key])),
            "seeds": int(len(cell)),
            "last_at_E_mean": round(float(ref.mean()), 4),
            "last_at_E_std": round(float(ref.std(ddof=1)), 4),
        }
        sub = long[long["model_id"].isin(cell["model_id"])]
        means = sub.groupby(["method", "epoch"])["test_acc"].mean()
        for m in (*METHODS, "lcsc"):
            hit = [e for e in epochs[1:-1] if means.loc[(m, e)] >= target]
            entry[f"{m}_epochs"] = int(hit[0]) if hit else int(epochs[-1])
        cells.append(entry)
    df = pd.DataFrame(cells)
    E = epochs[-1]
    summary = {
        "zoo": path,
        "E": int(E),
        "cells": int(len(df)),
        "cells_untrained_left_out": int(skipped),
        "trained_threshold": trained,
        "search_seconds_all_prefixes": round(seconds, 1),
        "rule": "fewest e < E with mean test acc over seeds >= mean(last@E) - std(last@E); E if none",
    }
    for m in (*METHODS, "lcsc"):
        e = df[f"{m}_epochs"]
        summary[f"{m}_median_epochs"] = float(e.median())
        summary[f"{m}_saving_median"] = round(float(E / e.median()), 2)
        summary[f"{m}_saving_total"] = round(float(len(df) * E / e.sum()), 2)  # E x cells / epochs spent
    summary["lcsc_fewer_epochs_than_last_share"] = round(float((df["lcsc_epochs"] < df["last_epochs"]).mean()), 3)
    summary["cells_detail"] = cells
    print(f"\ntraining cost on {path} (E = {E}, {len(df)} trained cells, {skipped} untrained left out):")
    for m in (*METHODS, "lcsc"):
        print(
            f"  {m:<8} median epochs to match last@E {summary[f'{m}_median_epochs']:>5.1f}  saving "
            f"{summary[f'{m}_saving_median']:.2f}x (total {summary[f'{m}_saving_total']:.2f}x)"
        )
    print(
        f"  LCSC needs fewer epochs than plain stopping in {summary['lcsc_fewer_epochs_than_last_share']:.0%} of cells"
    )
    return summary


def part3(run: str, samples: int, seeds: int) -> dict:
    """LCSC over a generator's snapshots vs its shipped/last/EMA/uniform weights, and the steps it saves."""
    full = lcsc_generator(run, GENERATOR_SEARCH, samples=samples)
    score = next(
        k.removeprefix("test_") for k in full.results["lcsc"] if k.startswith("test_") and not k.endswith("loss")
    )
    print(
        f"\ngenerator {run}: {len(full.steps)} snapshots (steps {full.steps[0]}..{full.steps[-1]}), "
        f"{samples} fixed-seed samples per candidate, search {full.seconds:.1f}s"
    )
    for m, v in full.results.items():
        print(f"  {m:<8} val {score} {v[f'val_{score}']:.4f}  test {score} {v[f'test_{score}']:.4f}")
    # the reference: the last snapshot's samples' mean test accuracy over several sample seeds (mean, std)
    g = load(run)
    data = g.dataset()
    last_state = _snapshot_states(Path(run), [full.steps[-1]])
    ref = []
    for s in range(seeds):
        comb = SnapshotCombiner(g, last_state, samples, 1000 + s)
        ref.append(float(comb.metrics([comb.sample(comb.state(np.ones(1)))], data)["score"][0]))
    target = float(np.mean(ref) - np.std(ref, ddof=1))
    prefixes = []
    inner = full.steps[1:-1]
    picks = sorted({int(round(x)) for x in np.linspace(0, len(inner) - 1, min(len(inner), 8))})
    for step in [inner[i] for i in picks]:  # up to 8 evenly spaced prefixes: each is a whole search
        r = lcsc_generator(run, GENERATOR_SEARCH, samples=samples, upto=step)
        prefixes.append(
            {"step": int(step), **{m: round(v[f"test_{score}"], 4) for m, v in r.results.items() if m != "shipped"}}
        )
        print(
            f"  snapshots up to step {step:>6}: test {score} "
            + "  ".join(f"{m} {v:.4f}" for m, v in prefixes[-1].items() if m != "step"),
            flush=True,
        )
    first = {
        m: next((p["step"] for p in prefixes if p[m] >= target), int(full.steps[-1]))
        for m in ("last", "ema", "uniform", "lcsc")
    }
    S = int(full.steps[-1])
    res = {
        "run": run,
        "snapshots": full.steps,
        "samples": samples,
        "results": full.results,
        "coefficients": full.coefficients,
        "search_seconds": round(full.seconds, 1),
        "reference_last_mean": round(float(np.mean(ref)), 4),
        "reference_last_std": round(float(np.std(ref, ddof=1)), 4),
        "reference_sample_seeds": seeds,
        "prefixes": prefixes,
        "steps_to_match": first,
        "saving": {m: round(S / e, 2) for m, e in first.items()},
    }
    print(
        f"  last snapshot over {seeds} sample seeds: {np.mean(ref):.4f} +- {np.std(ref, ddof=1):.4f}; steps to "
        "match it: " + ", ".join(f"{m} {e} ({S / e:.2f}x)" for m, e in first.items())
    )
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", nargs="*", default=["data/zoos/lcsc-mlp-digits.zarr"], help="zoos for part 1")
    ap.add_argument("--cost-zoo", default=None, help="zoo for part 2 (constant learning rate); none: skipped")
    ap.add_argument("--ablate-bounds", action="store_true", help="also compare coefficient bounds on the first zoo")
    ap.add_argument("--run", default=None, help="generator run folder (zoo fit) for part 3; none: skipped")
    ap.add_argument("--samples", type=int, default=16, help="part 3: fixed-seed samples per candidate")
    ap.add_argument("--trained", type=float, default=0.5, help="part 2 leaves out cells below this test accuracy")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest when others share the cores)")
    ap.add_argument("--json", default=None, help="write the figures here (e.g. docs/lcsc.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = SearchConfig()
    out = {
        "machine": {"threads": args.threads, "cpu": platform.processor() or platform.machine()},
        "search": {k: v for k, v in vars(config).items()},
        "fitness": "validation loss, 20% of the training split",
        "zoos": [part1(p, config) for p in args.zoo],
    }
    if args.ablate_bounds and args.zoo:
        out["bounds_ablation"] = bounds_ablation(args.zoo[0], config, args.trained)
    if args.cost_zoo:
        out["training_cost"] = part2(args.cost_zoo, config, args.trained)
    if args.run:
        out["generator"] = part3(args.run, args.samples, seeds=5)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=float))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
