"""``zoo diagnose SAMPLES.zarr [...] --train ZOO.zarr --out DIR``: memorization diagnostics of generated weights."""

from __future__ import annotations

import json
from pathlib import Path

from generators.diagnose import diagnose, summary_table
from generators.diagnose.report import DiagnoseConfig
from zoo.app.args import ArgumentParser, parse
from zoo.app.runtime import DEVICE_HELP, THREADS, THREADS_HELP, resolve_device
from zoo.app.schema import flag, validate
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
    # the settings' defaults and docs: the typed config DiagnoseConfig (generators.diagnose.report)
    p.add_argument("--n-baseline", type=int, **flag(DiagnoseConfig, "n_baseline"))
    drops = flag(DiagnoseConfig, "noise_drops")
    drops["default"] = ",".join(f"{d:g}" for d in drops["default"])  # the flag's spelling: 0,1,5
    drops["help"] = drops["help"].replace("[0, 1, 5]", drops["default"])
    p.add_argument("--noise-drops", **drops)
    p.add_argument(
        "--noise-psnr",
        default=None,
        help="INR zoos: PSNR (dB) of a noisy INR's render to its own image that picks each noise sigma"
        " (default 40,30,20)",
    )
    p.add_argument("--k", type=int, **flag(DiagnoseConfig, "k"))
    p.add_argument("--seed", type=int, **flag(DiagnoseConfig, "seed"))
    p.add_argument("--canonical", choices=["auto", "store", "align"], **flag(DiagnoseConfig, "canonical"))
    p.add_argument("--refine", type=int, **flag(DiagnoseConfig, "refine"))
    p.add_argument("--budget", type=float, **flag(DiagnoseConfig, "budget"))
    p.add_argument(
        "--recalibrate-bn",
        action="store_true",
        help=flag(DiagnoseConfig, "recalibrate_samples")["help"].replace(" (default: false)", ""),
    )
    p.add_argument(
        "--repair-average",
        action="store_true",
        help=flag(DiagnoseConfig, "repair_average")["help"].replace(" (default: false)", ""),
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="folder that now holds the training zoo's data on disk, if it moved (default: $WSZOO_DATA_ROOT)",
    )
    p.add_argument("--no-plots", action="store_true", help="write diagnose.json only")
    p.add_argument("--threads", type=int, default=THREADS, help=THREADS_HELP)
    p.add_argument(
        "--device",
        default="cpu",
        help=f"where the networks are evaluated and the nearest neighbours and error overlaps searched: {DEVICE_HELP}"
        " (default cpu; the baselines' construction and the weight matchings run on the CPU)",
    )
    p.add_argument("--json", action="store_true", help="print the per-method summary as one JSON object")
    return p


class DiagnoseFlags(DiagnoseConfig):
    """DiagnoseConfig whose errors name the command-line flags."""

    FLAGS = True


def _drops(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ZooError(f"--noise-drops must be comma-separated numbers, got {text!r}") from None


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
    if args.threads < 0:
        raise ZooError("--threads must be >= 0")
    drops = _drops(args.noise_drops)
    settings = dict(n_baseline=args.n_baseline, noise_drops=drops, k=args.k, seed=args.seed)
    settings.update(refine=args.refine, canonical=args.canonical, budget=args.budget)
    validate(DiagnoseFlags, settings)  # one line naming the flag, before any zoo is read
    resolve_device(args.device)  # --device cuda without a GPU: one line, before any zoo is read
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
        budget=args.budget,
        plots=not args.no_plots,
        progress=not args.json,
        data_root=args.data_root,
        threads=args.threads,
        device=args.device,
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
