"""A diagnose report as pictures: accuracy vs max_iou scatter, nn_l2 vs train_nn_l2 histograms (matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from generators.diagnose.table import TRAIN, _pct

SCATTER_PNG = "accuracy_vs_max_iou.png"
HIST_PNG = "nn_l2_histogram.png"


def write_plots(report: Mapping, out_dir: str | Path) -> dict[str, str]:
    """Accuracy vs max_iou scatter and nn_l2 vs train_nn_l2 histograms as PNGs in ``out_dir``; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    per = report["per_sample"]
    names = list(per)
    palette = [plt.get_cmap("tab10")(i) for i in (1, 2, 3, 4, 5, 6, 8, 9, 0)]  # no grey: it marks training models
    colours = {n: palette[i % len(palette)] for i, n in enumerate(n for n in names if n != TRAIN)}
    colours[TRAIN] = (0.2, 0.2, 0.2, 1.0)
    th = report["thresholds"]

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for n in names:
        d = per[n]
        label = "training models" if n == TRAIN else n
        ax.scatter(
            d["max_iou"],
            d["test_acc"],
            s=10 if n != TRAIN else 14,
            alpha=0.6,
            color=colours[n],
            label=f"{label} (good & novel {_pct(report['methods'][n]['good_and_novel'])})",
            marker="x" if n == TRAIN else "o",
            linewidths=0.8 if n == TRAIN else None,
        )
    curve = (report.get("baselines", {}).get("noise") or {}).get("test_curve")
    if curve:
        ax.plot(
            curve["max_iou"],
            curve["test_acc"],
            color="black",
            ls="-.",
            lw=1.2,
            alpha=0.8,
            label="noise frontier (means per sigma)",
        )
    ax.axhline(th["good_test_acc"], color="grey", ls="--", lw=0.8)
    ax.axvline(th["novel_max_iou"], color="grey", ls=":", lw=0.8)
    ymin = ax.get_ylim()[0]
    ax.fill_betweenx(
        [th["good_test_acc"], ax.get_ylim()[1]],
        ax.get_xlim()[0],
        th["novel_max_iou"],
        color="tab:green",
        alpha=0.06,
        lw=0,
    )
    ax.set_ylim(bottom=ymin)
    ax.set_xlabel("max IoU of misclassified test points with any training model")
    ax.set_ylabel("test accuracy")
    ax.set_title("good and novel: upper left (shaded); copies sit at max IoU 1", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out_dir / SCATTER_PNG, dpi=120)
    plt.close(fig)

    others = [n for n in names if n != TRAIN]
    ref = np.asarray(per[TRAIN]["train_nn_l2"], dtype=float)
    cols = min(3, max(1, len(others)))
    rows = max(1, -(-len(others) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.ravel()[len(others) :]:
        ax.axis("off")
    for ax, n in zip(axes.ravel(), others):
        x = np.asarray(per[n]["nn_l2"], dtype=float)
        both = np.concatenate([ref, x])
        both = both[np.isfinite(both)]
        bins = np.linspace(0.0, float(both.max()) if len(both) and both.max() > 0 else 1.0, 16)
        x = x[np.isfinite(x)]
        ax.hist(
            ref,
            bins=bins,
            weights=np.full(len(ref), 1 / max(len(ref), 1)),
            color="grey",
            alpha=0.55,
            label="train_nn_l2 (training models)",
        )
        ax.hist(
            x, bins=bins, weights=np.full(len(x), 1 / max(len(x), 1)), color=colours[n], alpha=0.7, label=f"nn_l2 ({n})"
        )
        ax.set_title(n, fontsize=9)
        ax.set_xlabel("L2 to nearest training model, up to permutations", fontsize=8)
        ax.set_ylabel("fraction of models", fontsize=8)
        ax.legend(fontsize=7)
    if not others:
        axes[0, 0].hist(ref, bins=15, color="grey")
        axes[0, 0].set_title("train_nn_l2 (no samples or baselines)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / HIST_PNG, dpi=110)
    plt.close(fig)
    return {"scatter": SCATTER_PNG, "histogram": HIST_PNG}
