"""Encoder benchmark at a realistic scale: Kendall tau and R2 of test-accuracy and generalization-gap
prediction for every encoder (mlp, statnn, graph, transformer, nfn), over seeds (each seed: its own
model-id split and initialization), on one zoo; phase accuracy on a phase zoo when one is given.

    .venv/bin/python bench/encoders.py      # 2,160-model zoo of conf/recipe/encoders-mlp-digits.yaml, built if missing
    .venv/bin/python bench/encoders.py --zoo data/zoos/mlp-digits.zarr --recipe default --epochs 30
    .venv/bin/python bench/encoders.py --protocol cnn-zoo-mnist   # the NFN protocol on the Small-CNN-Zoo recipe

``--protocol RECIPE`` is the protocol of the field's CIFAR10-GS table (Zhou et al. 2023, Kofinas et al. 2024):
the zoo of that recipe, each model's FINAL checkpoint a sample (as the NFN code's Small-CNN-Zoo loader does:
AllanYangZhou/nfn, experiments/data_utils.py, ZooDataset keeps the rows of the last step, 86, only), the split by
model (wsl.data splits model ids), Kendall tau of test accuracy, 3 seeds, all five encoders, 30 epochs; the table
goes to docs/encoders-RECIPE.md beside the published CIFAR10-GS numbers (labelled as such). Every checkpoint a
sample instead (9 per model, the zoo's whole trajectory): ``--checkpoints all --epochs 5 --md
docs/encoders-RECIPE-all.md --json docs/encoders-RECIPE-all.json --runs data/runs/bench-encoders-RECIPE-all``.

Every choice (best epoch) is made on the validation models; test models give the final numbers only.
Writes docs/encoders.md (table, mean +- std over seeds) and docs/encoders.json (every run's numbers)
after every run, so an interrupted benchmark leaves what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import zoo  # noqa: E402
from wsl.data import WeightDataModule  # noqa: E402
from wsl.train import train  # noqa: E402
from zoo.app.config import compose  # noqa: E402
from zoo.errors import ZooError  # noqa: E402

ENCODERS = ["mlp", "statnn", "transformer", "nfn", "graph"]  # cheapest first

# Published Kendall tau of test accuracy on the Small CNN Zoo's CIFAR10-GS (mean over their seeds): StatNN
# (Unterthiner et al. 2020) and NFN from Zhou et al. 2023 (NeurIPS), Table 1; the neural graphs from Kofinas et
# al. 2024 (ICLR), Table 2. Per our encoder: the published model closest to it (none for the flat MLP, which
# Zhou et al. do not report on CIFAR10-GS). Our nfn is NP layers with an HNP pooling readout (between NFN_NP and
# NFN_HNP); our graph is a PNA message-passing network like NG-GNN; our transformer tokenizes neurons, while
# NG-T is a relational transformer over the neural graph's nodes and edges.
PUBLISHED = {
    "statnn": ("StatNN", 0.915),
    "nfn": ("NFN_HNP (NFN_NP: 0.922)", 0.934),
    "graph": ("NG-GNN", 0.930),
    "transformer": ("NG-T", 0.935),
}
# 30 epochs over the final checkpoints of the 2,000-model cnn-zoo-digits (1,400 training models) take ~2/3 of
# the encoder steps of the every-checkpoint variant's 5 epochs (12,600 samples)
PROTOCOL_EPOCHS = "mlp=30,statnn=30,transformer=30,nfn=30,graph=30"


def ensure_zoo(path: str, recipe: str) -> float | None:
    """Build the zoo at ``path`` from ``recipe`` (one thread) when missing; returns the build seconds."""
    if Path(path).exists():
        return None
    print(f"building recipe {recipe} into {path} ...", flush=True)
    t0 = time.time()
    zoo.build(compose("build", [f"recipe={recipe}", f"out={path}", "progress=false", "threads=1"]))
    return time.time() - t0


def throughput(path: str, checkpoints, batch_sizes=(64, 256, 1024), repeats: int = 5) -> dict:
    """Models per second through the training loader (normalized batches, no augmentation), from the cache."""
    dm = WeightDataModule(path, checkpoints=checkpoints, cache=True)
    dm.setup()
    out = {"parameters_padded": dm.space.size, "samples": int(len(dm.rows("train")))}
    for bs in batch_sizes:
        dm.batch_size = bs
        for _ in dm.iter_batches("train"):  # warm-up
            pass
        n, t0 = 0, time.perf_counter()
        for _ in range(repeats):
            for b in dm.iter_batches("train"):
                n += len(b["w"])
        out[f"models_per_s_bs{bs}"] = n / (time.perf_counter() - t0)
    dm_aug = WeightDataModule(path, checkpoints=checkpoints, cache=True, augment={"permute": {"p": 1.0}})
    dm_aug.setup()
    dm_aug.batch_size = 256
    n, t0 = 0, time.perf_counter()
    for _ in range(max(1, repeats // 4)):
        for b in dm_aug.iter_batches("train", augment=True):
            n += len(b["w"])
    out["models_per_s_bs256_permute"] = n / (time.perf_counter() - t0)
    return out


def run(
    path: str,
    encoder: str,
    augment: str,
    seed: int,
    task: str,
    epochs: int,
    checkpoints,
    out_root: Path,
    extra: list[str],
) -> dict:
    name = f"{Path(path).name.removesuffix('.zarr')}-{task}-{encoder}-{augment}-s{seed}"
    overrides = [
        f"zoo={path}",
        f"encoder={encoder}",
        f"task={task}",
        f"augment={augment}",
        f"seed={seed}",
        f"out={out_root / name}",
        "overwrite=true",  # a rerun of the bench replaces its own runs
        f"trainer.max_epochs={epochs}",
        f"data.checkpoints={json.dumps(checkpoints)}",
        f"threads={torch.get_num_threads()}",
        *extra,
    ]
    t0 = time.time()
    s = train(compose("train", overrides))
    return {
        "encoder": encoder,
        "augment": augment,
        "seed": seed,
        "task": task,
        "test": s["test"],
        "best_val": s["best_val"],
        "seconds": round(time.time() - t0, 1),
        "parameters": s["parameters"],
        "epochs": s["epochs"],
        "splits": s["splits"],
    }


def _fmt(vals: list) -> str:
    a = np.asarray([np.nan if v is None else v for v in vals], dtype=float)
    if not np.isfinite(a).all():
        return f"undefined in {int((~np.isfinite(a)).sum())} of {len(a)} runs"
    return f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.3f}"


def table(runs: list[dict], metric_keys: list[str], task: str) -> list[str]:
    rows = [r for r in runs if r["task"] == task]
    ref = {}
    lines = [
        "| encoder | augmentation | runs | "
        + " | ".join(metric_keys)
        + f" | Δ {metric_keys[0]} vs StatNN (same seeds) | epochs | s/run |",
        "|---|---|---|" + "---|" * len(metric_keys) + "---|---|---|",
    ]
    for r in rows:
        if r["encoder"] == "statnn":
            ref[(r["augment"], r["seed"])] = r["test"].get(metric_keys[0])
    for enc in ENCODERS:
        for aug in sorted({r["augment"] for r in rows}, key=lambda a: a != "none"):
            sel = [r for r in rows if r["encoder"] == enc and r["augment"] == aug]
            if not sel:
                continue
            cells = [_fmt([r["test"][k] for r in sel]) for k in metric_keys]
            diffs = [
                r["test"][metric_keys[0]] - ref[(aug, r["seed"])]
                for r in sel
                if ref.get((aug, r["seed"])) is not None and r["test"][metric_keys[0]] is not None
            ]
            d = _fmt(diffs) if diffs and enc != "statnn" else "—"
            secs = np.mean([r["seconds"] for r in sel])
            eps = sorted({r.get("epochs") for r in sel})
            lines.append(
                f"| {enc} | {aug} | {len(sel)} | "
                + " | ".join(cells)
                + f" | {d} | {'/'.join(map(str, eps))} | {secs:.0f} |"
            )
    return lines


def published_table(runs: list[dict]) -> list[str]:
    """Our test-accuracy Kendall tau per encoder beside the published CIFAR10-GS figure of the closest model."""
    rows = [r for r in runs if r["task"] == "test_accuracy" and r["augment"] == "none"]
    ours = {e: [r["test"]["kendall_tau"] for r in rows if r["encoder"] == e] for e in ENCODERS}
    stat = ours.get("statnn") or []
    lines = [
        "Beside the field's table (Kendall tau of test accuracy; **ours**: this zoo, mean ± std over split seeds,"
        " no augmentation; **published**: the Small CNN Zoo's CIFAR10-GS, a different and larger zoo, from the"
        " papers, not rerun here):",
        "",
        "| encoder | ours: tau | ours: Δ vs StatNN | published model | published CIFAR10-GS tau"
        " | published Δ vs StatNN |",
        "|---|---|---|---|---|---|",
    ]
    for enc in ENCODERS:
        vals = [v for v in ours[enc] if v is not None]
        model, tau = PUBLISHED.get(enc, ("—", None))
        d_ours = f"{np.mean(vals) - np.mean(stat):+.3f}" if vals and stat and enc != "statnn" else "—"
        d_pub = f"{tau - PUBLISHED['statnn'][1]:+.3f}" if tau is not None and enc != "statnn" else "—"
        lines.append(
            f"| {enc} | {_fmt(vals) if vals else 'not run'} | {d_ours} | {model} | "
            f"{'—' if tau is None else f'{tau:.3f}'} | {d_pub} |"
        )
    return lines


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def _values(name: str, col) -> str:
    """A hyperparameter column in a few words: its values, or its range when drawn per model."""
    vals = sorted(col.unique().tolist())
    return f"{name} {vals}" if len(vals) <= 8 else f"{name} {vals[0]:.3g}..{vals[-1]:.3g} ({len(vals)} values)"


def write_docs(args, path: str, runs: list[dict], tp: dict, info: dict) -> None:
    """docs/encoders.md and docs/encoders.json from the runs so far."""
    z = zoo.open(path)
    m = z.models
    cols = [c for c in ("width", "learning_rate", "batch_size", "weight_decay") if c in m]
    grid = ", ".join(_values(c, m[c]) for c in cols)
    md = [
        "# Weight-space encoders on our zoos",
        "",
        f"Generated by `{' && '.join(info.get('commands', [info['command']]))}` ({info['minutes']:.0f} min so far"
        f"{', finished' if info['finished'] else ', INTERRUPTED or still running'})"
        f" on {info['machine']}, {torch.get_num_threads()} torch thread(s). The machine was shared: load average "
        f"{info['load_start']:.1f} at the start and {info['load_now']:.1f} at the last write (on "
        f"{os.cpu_count()} cores), so seconds are loaded-machine figures.",
        "",
        f"Zoo `{path}` (recipe `{args.recipe}`): {len(m)} models, {grid}, {args.seeds} split seeds each 70/15/15 "
        f"of model ids ({runs[0]['splits']['test']['models'] if runs else '?'} held-out test models), "
        f"checkpoints {info['checkpoints']}, epochs {info['epochs']}, default `conf/train.yaml` otherwise (AdamW lr "
        "0.003, batch 64). Best epoch by validation Kendall tau; metrics on the held-out test models only."
        + (f" Building the zoo took {info['build_seconds']:.0f} s (1 thread)." if info.get("build_seconds") else ""),
        "",
    ]
    for task in args.tasks:
        if any(r["task"] == task for r in runs):
            md += [f"## {task}", ""] + table(runs, ["kendall_tau", "r2"], task) + [""]
    if any(r["task"] == "phase" for r in runs):
        md += [f"## phase (zoo `{args.phase_zoo}`, last checkpoint)", ""] + table(runs, ["acc"], "phase") + [""]
    if tp:
        md += [
            "Data module throughput (training loader from the in-memory cache, normalized batches; "
            f"{tp['samples']} training samples of {tp['parameters_padded']} padded parameters):",
            "",
            "| batch size | models/s |",
            "|---|---|",
        ]
        md += [
            f"| {k.removeprefix('models_per_s_bs').replace('_permute', ' + permute augmentation')} | {v:,.0f} |"
            for k, v in tp.items()
            if k.startswith("models_per_s")
        ]
        md += [""]
    if any(r["task"] == "test_accuracy" for r in runs):
        md += published_table(runs) + [""]
    if args.note:
        md += [Path(args.note).read_text().strip(), ""]
    Path(args.md).parent.mkdir(parents=True, exist_ok=True)
    Path(args.md).write_text("\n".join(md) + "\n")
    Path(args.json).write_text(
        json.dumps({**info, "zoo": path, "models": len(m), "throughput": tp, "runs": runs}, indent=2)
    )


def protocol_defaults(recipe: str) -> dict:
    """Argument defaults of the NFN protocol (split by model, final checkpoints, test-accuracy tau) on a recipe."""
    return {
        "zoo": f"data/zoos/{recipe}.zarr",
        "recipe": recipe,
        "tasks": ["test_accuracy"],
        "checkpoints": "-1",
        "epochs": PROTOCOL_EPOCHS,
        "seeds": 3,
        "encoders": ENCODERS,
        "runs": f"data/runs/bench-encoders-{recipe}",
        "md": f"docs/encoders-{recipe}.md",
        "json": f"docs/encoders-{recipe}.json",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="data/zoos/encoders-mlp-digits.zarr")
    ap.add_argument("--recipe", default="encoders-mlp-digits", help="recipe that builds --zoo when it is missing")
    ap.add_argument("--phase-zoo", default=None, help="a zoo with a landscape table holding phase labels")
    ap.add_argument("--tasks", nargs="+", default=["test_accuracy", "generalization_gap"])
    ap.add_argument("--encoders", nargs="+", default=ENCODERS)
    ap.add_argument("--augment", nargs="+", default=["none"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--epochs",
        default="mlp=30,statnn=30,transformer=12,nfn=6,graph=1",
        help="epochs per encoder (NAME=N,...) or one number for all",
    )
    ap.add_argument("--checkpoints", default="-1", help="JSON index or list of checkpoint indices, or 'all'")
    ap.add_argument("--runs", default="data/runs/bench-encoders")
    ap.add_argument("--md", default="docs/encoders.md")
    ap.add_argument("--json", default="docs/encoders.json")
    ap.add_argument("--note", default=None, help="a text file appended to the markdown (the closing analysis)")
    ap.add_argument("--override", nargs="*", default=[], help="extra `zoo train` overrides, e.g. data.batch_size=32")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscribing a busy CPU)")
    ap.add_argument(
        "--resume", action="store_true", help="keep the runs already in --json (same zoo) and run only the missing ones"
    )
    ap.add_argument(
        "--protocol",
        default=None,
        metavar="RECIPE",
        help="the NFN/Small-CNN-Zoo protocol on RECIPE's zoo (e.g. cnn-zoo-mnist): sets --zoo data/zoos/RECIPE.zarr,"
        f" --recipe RECIPE, --tasks test_accuracy, --checkpoints -1 (final), --epochs {PROTOCOL_EPOCHS}, --md/--json"
        " docs/encoders-RECIPE.*; options given explicitly still win",
    )
    pre, _ = ap.parse_known_args()
    if pre.protocol:
        ap.set_defaults(**protocol_defaults(pre.protocol))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    checkpoints = args.checkpoints if args.checkpoints == "all" else json.loads(args.checkpoints)
    if "=" in args.epochs:
        epochs = {k: int(v) for k, v in (kv.split("=") for kv in args.epochs.split(","))}
    else:
        epochs = {e: int(args.epochs) for e in args.encoders}
    missing = [e for e in args.encoders if e not in epochs]
    if missing:
        ap.error(f"--epochs gives no epochs for {missing}")
    t_start = time.time()
    info = {
        "command": "python bench/encoders.py " + " ".join(sys.argv[1:]),
        "machine": _machine(),
        "load_start": os.getloadavg()[0],
        "checkpoints": checkpoints,
        "epochs": epochs,
        "finished": False,
        "build_seconds": ensure_zoo(args.zoo, args.recipe),
    }
    info["command"] = info["command"].strip()
    path = args.zoo
    tp = throughput(path, checkpoints)
    print(f"throughput: {json.dumps({k: round(v) for k, v in tp.items()})}", flush=True)
    jobs = [(path, t) for t in args.tasks]
    if args.phase_zoo:
        z = zoo.open(args.phase_zoo)
        land = z.table("landscape")
        if land is None or "phase" not in land:
            print(f"{args.phase_zoo} has no phase labels; skipping the phase task", flush=True)
        else:
            jobs.append((args.phase_zoo, "phase"))
    runs, earlier = [], {}
    if args.resume and Path(args.json).is_file():
        prev = json.loads(Path(args.json).read_text())
        if prev.get("zoo") == path:
            runs = prev["runs"]
            earlier = {"minutes": prev.get("minutes", 0.0), "commands": prev.get("commands", [prev.get("command")])}
            info["load_start"] = prev.get("load_start", info["load_start"])
            info["epochs"] = {**prev.get("epochs", {}), **{e: epochs[e] for e in args.encoders}}
    info["commands"] = earlier.get("commands", []) + [info["command"]]
    done = {(r["encoder"], r["task"], r["augment"], r["seed"]) for r in runs}
    t_start -= earlier.get("minutes", 0.0) * 60
    for enc in args.encoders:  # encoder-major: an interrupted run still has whole encoders
        for zpath, task in jobs:
            for aug in args.augment:
                for seed in range(args.seeds):
                    if (enc, task, aug, seed) in done:
                        continue
                    r = run(
                        zpath,
                        enc,
                        aug,
                        seed,
                        task,
                        epochs[enc],
                        checkpoints if task != "phase" else -1,
                        Path(args.runs),
                        args.override,
                    )
                    r["zoo"] = zpath
                    runs.append(r)
                    print(
                        f"{task:>18} {enc:>11} {aug:>6} seed {seed}: "
                        + ", ".join(f"{k} {v:.3f}" for k, v in r["test"].items() if v is not None)
                        + f"  ({r['epochs']} epochs, {r['seconds']} s)",
                        flush=True,
                    )
                    info.update(minutes=(time.time() - t_start) / 60, load_now=os.getloadavg()[0])
                    write_docs(args, path, runs, tp, info)
    info.update(minutes=(time.time() - t_start) / 60, load_now=os.getloadavg()[0], finished=True)
    write_docs(args, path, runs, tp, info)
    print(Path(args.md).read_text())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ZooError as e:
        sys.exit(f"{Path(__file__).name}: {e}")
