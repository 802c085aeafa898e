"""``zoo diagnose SAMPLES.zarr [...] --train ZOO.zarr --out DIR``: memorization diagnostics of generated weights."""

from __future__ import annotations

import json
from pathlib import Path

from generators.diagnose import diagnose, summary_table
from zoo.app.args import ArgumentParser, parse
from zoo.app.runtime import THREADS, THREADS_HELP
from zoo.errors import ZooError

EPILOG = """Per sample and per method (each samples zoo, each baseline, the training models): test_acc,
nn_l2 (L2 to the nearest training model after Git Re-Basin alignment to one reference, lowered where
matching directly to one of the --refine nearest candidates gives less; nn_l2_canonical: one reference
only; nn_l2_raw: no alignment),
train_nn_l2 (training models to each other, self excluded), max_iou (largest IoU of the misclassified
test points with any training model's), and good_and_novel (test_acc >= the training models' 5th
percentile and max_iou < their median). Baselines, built with no training: noise (training weights plus
Gaussian noise at the sigmas that cost --noise-drops percentage points of accuracy on validation data
carved from the TRAINING split), average (mean of --k random aligned training models, BatchNorm
recalibrated on train), gaussian (per-parameter Gaussian fitted to aligned training weights). Writes
DIR/diagnose.json, DIR/accuracy_vs_max_iou.png and DIR/nn_l2_histogram.png.
INR zoos (a SIREN per image): PSNR instead of accuracy. psnr_data (the render's PSNR to the nearest image
the training INRs were fitted on: quality), psnr_render (to the nearest training INR's render: high means
an image copy), nn_l2 up to permutations and sign flips; noise baselines at the sigmas whose renders keep
--noise-psnr dB to their own image. Writes DIR/diagnose.json and DIR/psnr_vs_novelty.png."""


def _parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="zoo diagnose",
        epilog=EPILOG,
        description="is a generator copying? accuracy, nearest-neighbour distance and "
        "error overlap of samples against their training zoo and baselines",
    )
    p.add_argument("samples", nargs="*", help="samples zoo(s) (e.g. written by `zoo sample`); none: baselines only")
    p.add_argument("--train", required=True, help="the training zoo the generator was fitted on")
    p.add_argument("--out", required=True, help="folder for diagnose.json and the PNGs")
    p.add_argument(
        "--baselines",
        default="noise,average,gaussian",
        help="comma-separated from noise,average,gaussian, or none (default: all)",
    )
    p.add_argument(
        "--n-baseline",
        type=int,
        default=None,
        help="samples per baseline (default: the largest samples zoo's size, at most 1000; 100 without samples)",
    )
    p.add_argument(
        "--noise-drops", default="0,1,5", help="accuracy drops (percentage points) that pick the noise sigmas"
    )
    p.add_argument(
        "--noise-psnr",
        default=None,
        help="INR zoos: PSNR (dB) of a noisy INR's render to its own image that picks each noise sigma"
        " (default 40,30,20)",
    )
    p.add_argument("--k", type=int, default=16, help="training models per average (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of baselines, validation carve-out and matching")
    p.add_argument(
        "--canonical",
        default="auto",
        choices=["auto", "store", "align"],
        help="training frame: the zoo's `zoo align` weights (store), aligned here (align), or auto",
    )
    p.add_argument(
        "--refine",
        type=int,
        default=3,
        help="nearest canonical candidates each model is also weight-matched to directly (0: off)",
    )
    p.add_argument(
        "--recalibrate-bn",
        action="store_true",
        help="recompute the samples' BatchNorm statistics on the training split before measuring",
    )
    p.add_argument(
        "--repair-average",
        action="store_true",
        help="REPAIR the average baseline: units reset to the members' mean statistics on the training split",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="folder that now holds the training zoo's data on disk, if it moved (default: $WSZOO_DATA_ROOT)",
    )
    p.add_argument("--no-plots", action="store_true", help="write diagnose.json only")
    p.add_argument("--threads", type=int, default=THREADS, help=THREADS_HELP)
    p.add_argument("--json", action="store_true", help="print the per-method summary as one JSON object")
    return p


def _drops(text: str) -> list[float]:
    try:
        drops = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ZooError(f"--noise-drops must be comma-separated numbers, got {text!r}") from None
    if not drops or any(d < 0 or d >= 100 for d in drops):
        raise ZooError(f"--noise-drops must be percentage points in [0, 100), got {text!r}")
    return drops


def _psnrs(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ZooError(f"--noise-psnr must be comma-separated dB values, got {text!r}") from None
    if not values:
        raise ZooError(f"--noise-psnr must name at least one dB value, got {text!r}")
    return values


def main(argv: list[str]) -> int:
    """memorization check: samples vs training zoo and baselines

    User errors raise ZooError (the dispatcher prints one line, exit 2)."""
    args = parse(_parser(), argv)
    if args is None:  # --help
        return 0
    if args.n_baseline is not None and args.n_baseline < 1:
        raise ZooError(f"--n-baseline must be >= 1, got {args.n_baseline}")
    if args.k < 1 or args.threads < 0 or args.refine < 0:
        raise ZooError("--k must be >= 1, --threads and --refine >= 0")
    drops = _drops(args.noise_drops)
    report = diagnose(
        args.samples or None,
        args.train,
        args.out,
        args.baselines,
        n_baseline=args.n_baseline,
        noise_drops=drops,
        noise_psnr=_psnrs(args.noise_psnr),
        k=args.k,
        seed=args.seed,
        canonical=args.canonical,
        refine=args.refine,
        recalibrate_samples=args.recalibrate_bn,
        repair_average=args.repair_average,
        plots=not args.no_plots,
        progress=not args.json,
        data_root=args.data_root,
        threads=args.threads,
    )
    if args.json:
        print(json.dumps({"methods": report["methods"], "thresholds": report["thresholds"]}))
        return 0
    c = report["canonical"]
    print(
        f"diagnosed against {report['train_zoo']} ({report['methods']['train']['n']} training models, "
        f"canonical frame: {c['mode']}, reference {c['reference_id']}) in {report['seconds']['total']:.1f} s"
    )
    print(summary_table(report))
    noise = report["baselines"].get("noise")
    if noise:
        where = (
            "the training INRs' own images"
            if report.get("kind") == "inr"
            else "validation data from the training split"
        )
        print(f"noise sigmas (chosen on {where}): " + ", ".join(f"{k}: {v:.3g}" for k, v in noise["sigmas"].items()))
    written = [Path(args.out) / name for name in ["diagnose.json", *sorted((report.get("plots") or {}).values())]]
    print("wrote " + ", ".join(map(str, written)))
    return 0
