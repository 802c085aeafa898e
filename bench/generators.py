"""Generator benchmark: every generator x zoo in one table (issue 24, deliverable 5).

For each zoo and each generator that applies to it: fit (``zoo fit`` defaults, 1 torch thread), sample 100
networks (seed 0), and ``zoo diagnose`` them with the no-training baselines. One record per generator x zoo:
the samples' mean test accuracy over the training models' (``acc_ratio``, target >= 0.99), their nearest
distance to a training model over the training models' own median (``nn_l2_over_train_median``), the mean
max IoU of their test errors with any training model's against the noise frontier's at equal accuracy
(``more_novel_than_noise``, exactly as ``zoo diagnose`` computes it), good & novel, fit and sample seconds,
and a verdict. The test split is read by ``zoo diagnose`` only, after everything is fitted and sampled.

Generators: dwf (DeepWeightFlow), simplex (convex combinations on a fitted simplex of aligned training
models); d2nwg needs a zoo of many datasets (a row says so). Zoos: dwf-mlp-mnist and mlp1-mnist (real MNIST,
independent seeds), dwf-mlp-digits-seeds (digits, independent seeds) and dwf-mlp-digits (digits, the learning
rates of one seed share an initialization); each is built when missing (a few minutes on one thread).

Rerun: .venv/bin/python bench/generators.py          (writes docs/generators.json and docs/generators.md)
       .venv/bin/python bench/generators.py --quick  (a smoke run: tiny fits, 20 samples; figures not meaningful)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import generators  # noqa: E402
import zoo  # noqa: E402
from generators.diagnose import method_rows, summary_table  # noqa: E402
from zoo.app.config import compose  # noqa: E402

RERUN = ".venv/bin/python bench/generators.py"
ZOOS = ("dwf-mlp-mnist", "mlp1-mnist", "dwf-mlp-digits-seeds", "dwf-mlp-digits")
GENERATORS = ("dwf", "simplex", "d2nwg")
QUICK = {
    "dwf": {"steps_per_epoch": 10, "trainer.max_epochs": 1, "hidden": 32, "val_samples": 4},
    "simplex": {"steps": 5, "val_every": 5, "val_samples": 4},
}
TARGET_RATIO = 0.99


def ensure_zoo(recipe: str, out: str) -> zoo.Zoo:
    """Open the recipe's zoo, building it first when it is missing."""
    if not Path(out, "zarr.json").exists():
        print(f"building {out} (recipe {recipe}) ...", flush=True)
        zoo.build(compose("build", [f"recipe={recipe}", f"out={out}", "progress=false"]))
    return zoo.open(out)


def applies(name: str, z: zoo.Zoo) -> str | None:
    """Why generator ``name`` does not apply to zoo ``z`` (None when it does)."""
    if name == "d2nwg" and ("dataset" not in z.models or z.models["dataset"].nunique() < 2):
        return "d2nwg learns across datasets: it needs a zoo of many datasets (recipe=d2nwg-digits)"
    return None


def verdict(row: dict, bar: bool | None) -> str:
    """The row in words: good (ratio >= 0.99) and more novel than noise, or what it misses."""
    good = row["acc_ratio"] is not None and row["acc_ratio"] >= TARGET_RATIO
    novel = bool(row["more_novel_than_noise"])
    if good and novel:
        text = "good and more novel than noise: the open bar"
    elif good:
        text = "good but less novel than noise at equal accuracy (near the training models)"
    elif novel:
        text = f"more novel than noise but not good ({row['acc_ratio']:.3f} of the training models' accuracy)"
    else:
        text = "neither good nor more novel than noise"
    if bar is False:
        text += "; this zoo's training models are no more novel than noise, so the bar says little here"
    return text


def run_zoo(recipe: str, gens: list[str], args: argparse.Namespace) -> tuple[list[dict], dict | None]:
    """Fit, sample and diagnose every applicable generator on one zoo: (records, diagnose report)."""
    z = ensure_zoo(recipe, f"{args.zoos}/{recipe}.zarr")
    records, samples, timing = [], {}, {}
    for name in gens:
        why = applies(name, z)
        if why is not None:
            records.append({"zoo": recipe, "generator": name, "applies": False, "verdict": f"n/a: {why}"})
            continue
        run = Path(args.runs) / f"{name}-{recipe}"
        overrides = {"trainer.enable_progress_bar": False} if name == "dwf" else {}
        if args.quick:
            overrides.update(QUICK.get(name, {}))
        print(f"-- {name} on {recipe}", flush=True)
        t0 = time.perf_counter()
        g = generators.fit(name, z.path, out=str(run), overwrite=True, **overrides)
        fit_s = time.perf_counter() - t0
        g.sample_flat(args.samples, seed=1)  # warm-up, then the time of one call
        t0 = time.perf_counter()
        g.sample_flat(args.samples, seed=0)
        sample_s = time.perf_counter() - t0
        samples[name] = g.sample_zoo(args.samples, run / "samples.zarr", seed=0, overwrite=True).path
        timing[name] = (fit_s, sample_s)
    if not samples:
        return records, None
    report = generators.diagnose(samples, z.path, f"{args.runs}/diagnose-{recipe}", n_baseline=args.samples)
    print(f"-- zoo diagnose on {recipe}\n{summary_table(report)}", flush=True)
    rows = {r["method"]: r for r in method_rows(report)}
    train_acc = rows["train"]["test_acc"]
    bar = (report.get("novelty_bar") or {}).get("training_models_more_novel_than_noise")
    for name, (fit_s, sample_s) in timing.items():
        r = rows[name]
        rec = {
            "zoo": recipe,
            "generator": name,
            "applies": True,
            "samples": args.samples,
            "test_acc": r["test_acc"],
            "train_models_test_acc": train_acc,
            "acc_ratio": r["test_acc"] / train_acc if r["test_acc"] is not None else None,
            "nn_l2_over_train_median": r["nn_l2_over_train_median"],
            "max_iou": r["max_iou"],
            "noise_max_iou_at_equal_acc": r["noise_max_iou_at_equal_acc"],
            "more_novel_than_noise": r["more_novel_than_noise"],
            "good_and_novel": r["good_and_novel"],
            "train_good_and_novel": rows["train"]["good_and_novel"],
            "zoo_sets_novelty_bar": bar,
            "fit_seconds": round(fit_s, 1),
            "sample_seconds": round(sample_s, 3),
        }
        rec["verdict"] = verdict(rec, bar)
        records.append(rec)
    return records, report


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--zoos-list", default=",".join(ZOOS), help="comma-separated recipes")
    p.add_argument("--generators", default=",".join(GENERATORS))
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--zoos", default="data/zoos", help="folder of the zoos (built there when missing)")
    p.add_argument("--runs", default="data/runs/bench-generators")
    p.add_argument("--json", default="docs/generators.json")
    p.add_argument("--md", default="docs/generators.md")
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny fits (figures not meaningful)")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="take a zoo's records from an earlier run's <runs>/records-<zoo>.json when there (one process per zoo, "
        "then one --reuse run writes the docs)",
    )
    p.add_argument("--no-docs", action="store_true", help="write only <runs>/records-<zoo>.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.samples = min(args.samples, 20)
    records, reports = [], {}
    for recipe in [s for s in args.zoos_list.split(",") if s]:
        saved = Path(args.runs) / f"records-{recipe}.json"
        if args.reuse and saved.is_file():
            earlier = json.loads(saved.read_text())
            recs, report = earlier["records"], earlier["report"]
        else:
            recs, report = run_zoo(recipe, [s for s in args.generators.split(",") if s], args)
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps({"records": recs, "report": report}, default=str))
        records += recs
        if report is not None:
            reports[recipe] = report
    for r in records:  # a generator that does not apply has the same keys, without figures
        for key in ("acc_ratio", "nn_l2_over_train_median", "more_novel_than_noise"):
            r.setdefault(key, None)
    if args.no_docs:
        return 0
    head = (
        "| zoo | generator | test acc / training models' | nearest distance / training median | max IoU (noise at "
        "equal acc) | more novel than noise | good & novel (training models) | fit s | sample s | verdict |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in records:
        if not r["applies"]:
            lines.append(f"| {r['zoo']} | {r['generator']} | - | - | - | - | - | - | - | {r['verdict']} |")
            continue
        lines.append(
            f"| {r['zoo']} | {r['generator']} | {r['test_acc']:.4f} / {r['train_models_test_acc']:.4f} = "
            f"{r['acc_ratio']:.3f} | {fmt(r['nn_l2_over_train_median'], '.3f')} | {fmt(r['max_iou'], '.3f')} "
            f"({fmt(r['noise_max_iou_at_equal_acc'], '.3f')}) | {r['more_novel_than_noise']} | "
            f"{fmt(r['good_and_novel'], '.0%')} ({fmt(r['train_good_and_novel'], '.0%')}) | {r['fit_seconds']:.0f} | "
            f"{r['sample_seconds']:.2f} | {r['verdict']} |"
        )
    table = "\n".join(lines)
    print(table)
    record = {
        "quick": args.quick,
        "rerun": RERUN + (" --quick" if args.quick else ""),
        "threads": 1,
        "samples": args.samples,
        "records": records,
        "diagnose": {k: {"methods": method_rows(v), "novelty_bar": v.get("novelty_bar")} for k, v in reports.items()},
    }
    Path(args.json).write_text(json.dumps(record, indent=2))
    md = [
        "# Generators x zoos (issue 24)",
        "",
        f"Every generator on every zoo: fitted with `zoo fit`'s defaults on 1 torch thread, {args.samples} samples "
        "(seed 0), `zoo diagnose` against the training zoo (test split read only there). The bar: samples keep "
        f">= {TARGET_RATIO:.0%} of the training models' mean test accuracy AND their errors overlap the training "
        "models' less than noise around a training model at equal accuracy (`more_novel_than_noise`), on zoos "
        "whose training models are themselves more novel than noise. Times are wall-clock on a shared 2-core CPU.",
        "",
        table,
        "",
        "Ran here: the zoos in the table, on a 2-core machine shared with other jobs (load 8-10 on 2 cores: fits took "
        "4-8x a quiet machine's time, e.g. dwf on dwf-mlp-mnist 747 s vs about 105 s quiet). Not run for lack of "
        "time: dwf-mlp-digits (its seeds share an initialization across learning rates; the DWF figures on it are "
        "in docs/dwf-bench.md). dwf-mlp-digits-seeds has independent seeds, yet `zoo diagnose` finds its training "
        "models NO more novel than noise (max IoU 0.860 vs 0.818): on 360 digits test points the few errors fall on "
        "the same hard points, so that zoo sets no bar either. mlp1-mnist sets one only just (0.783 vs 0.784).",
        "",
    ]
    for recipe, report in reports.items():
        md += [f"## `zoo diagnose` on {recipe}", "", "```", summary_table(report), "```", ""]
        png = Path(args.runs, f"diagnose-{recipe}", "accuracy_vs_max_iou.png")
        if png.is_file():
            target = Path(args.md).with_name(f"{Path(args.md).stem}-{recipe}.png")
            shutil.copyfile(png, target)
            md += [f"![accuracy vs max IoU on {recipe}]({target.name})", ""]
    md += [f"Rerun: `{record['rerun']}` (writes {args.json} and this file)."]
    Path(args.md).write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
