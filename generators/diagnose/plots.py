"""A diagnose report as pictures: accuracy vs max_iou scatter, nn_l2 vs train_nn_l2 histograms (matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from generators.diagnose.table import TRAIN, _pct

SCATTER_PNG = "accuracy_vs_max_iou.png"
HIST_PNG = "nn_l2_histogram.png"
MIN_SPAN = 0.12  # the zoom shows at least this much test accuracy below the good cut-off
GAP = 0.05  # points this close below the zoom's edge pull it down with them


def scatter_view(report: Mapping) -> dict:
    """The scatter's zoom, kept in diagnose.json: test accuracy from ``MIN_SPAN`` below the good cut-off, extended
    down over points that lie within ``GAP`` of the edge (a cloud is never cut in two), up to the best point; max IoU
    over the points shown. Points further down (a weak baseline) are counted per method and drawn in the full panel."""
    per, th = report["per_sample"], report["thresholds"]
    good = float(th["good_test_acc"])
    accs = sorted({float(a) for d in per.values() for a in d["test_acc"] if a is not None and np.isfinite(a)})
    y0 = good - MIN_SPAN
    for a in reversed([a for a in accs if a < y0]):
        if a < y0 - GAP:
            break
        y0 = a
    top = max(accs, default=good)
    pad = 0.04 * (max(top, good) - y0)
    y0, y1 = max(0.0, y0 - pad), max(top, good) + pad
    shown_x = [
        float(x)
        for d in per.values()
        for x, a in zip(d["max_iou"], d["test_acc"])
        if a is not None and x is not None and np.isfinite(x) and a >= y0
    ]
    x0 = max(0.0, min(shown_x, default=0.0) - 0.05)
    off = {}
    for n, d in per.items():
        acc = [float(a) for a in d["test_acc"] if a is not None and np.isfinite(a)]
        low = [a for a in acc if a < y0]
        if low:
            off[n] = {"count": len(low), "of": len(acc), "min": min(low), "max": max(low)}
    return {"test_acc": [y0, y1], "max_iou": [x0, 1.02], "off_scale": off}


def write_plots(report: Mapping, out_dir: str | Path) -> dict[str, str]:
    """Accuracy vs max_iou scatter and nn_l2 vs train_nn_l2 histograms as PNGs in ``out_dir``; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    per = report["per_sample"]
    names = list(per)
    palette = [plt.get_cmap("tab10")(i) for i in (1, 2, 3, 4, 5, 6, 8, 9, 0)]  # no grey: it marks training models
    colours = {n: palette[i % len(palette)] for i, n in enumerate(n for n in names if n != TRAIN)}
    colours[TRAIN] = (0.2, 0.2, 0.2, 1.0)
    th = report["thresholds"]

    view = scatter_view(report)
    (y0, y1), (x0, x1) = view["test_acc"], view["max_iou"]
    fig, (ax, full) = plt.subplots(
        1, 2, figsize=(10.0, 6.2), width_ratios=[3.2, 1], layout="constrained", gridspec_kw={"wspace": 0.04}
    )
    for panel in (ax, full):
        for n in names:
            d = per[n]
            label = "training models" if n == TRAIN else n
            panel.scatter(
                d["max_iou"],
                d["test_acc"],
                s=(10 if n != TRAIN else 14) if panel is ax else 5,
                alpha=0.6,
                color=colours[n],
                label=f"{label} (good & novel {_pct(report['methods'][n]['good_and_novel'])})" if panel is ax else None,
                marker="x" if n == TRAIN else "o",
                linewidths=0.8 if n == TRAIN else None,
            )
        curve = (report.get("baselines", {}).get("noise") or {}).get("test_curve")
        if curve:
            panel.plot(
                curve["max_iou"],
                curve["test_acc"],
                color="black",
                ls="-.",
                lw=1.2,
                alpha=0.8,
                label="noise frontier (means per sigma)" if panel is ax else None,
            )
        panel.axhline(th["good_test_acc"], color="tab:green", ls="--", lw=0.9)
        panel.axvline(th["novel_max_iou"], color="tab:blue", ls=":", lw=1.1)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.fill_between([x0, th["novel_max_iou"]], th["good_test_acc"], y1, color="tab:green", alpha=0.07, lw=0)
    ax.text(
        x0 + 0.01 * (x1 - x0),
        th["good_test_acc"],
        f"good: test acc ≥ {th['good_test_acc']:.3f} (training models' 5th percentile)",
        color="tab:green",
        fontsize=7.5,
        va="bottom",
    )
    ax.text(
        th["novel_max_iou"],
        y0 + 0.02 * (y1 - y0),
        f" novel: max IoU < {th['novel_max_iou']:.3f} (training models' median) ",
        color="tab:blue",
        fontsize=7.5,
        rotation=90,
        ha="right",
        va="bottom",
    )
    ax.text(x0 + 0.01 * (x1 - x0), y1, "good & novel ", color="tab:green", fontsize=8, va="top", fontweight="bold")
    ax.set_xlabel("max IoU of misclassified test points with any training model")
    ax.set_ylabel("test accuracy")
    ax.set_title("where good meets novel (copies sit at max IoU 1)", fontsize=10)
    below = view["off_scale"]
    if below:
        note = "off scale (below; right panel):\n" + "\n".join(  # one line per method: stays inside the axes
            f"  {n} {c['count']}/{c['of']} (test acc {c['min']:.2f}–{c['max']:.2f})" for n, c in below.items()
        )
        ax.text(
            0.01,
            0.01,
            note,
            transform=ax.transAxes,
            fontsize=7.5,
            va="bottom",
            color="#444444",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
    full.add_patch(
        matplotlib.patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="black", lw=0.8, ls="--")
    )
    full.set_title("all points\n(dashed box: the zoom)", fontsize=9)
    full.set_xlabel("max IoU", fontsize=8)
    full.tick_params(labelsize=7)
    fig.legend(loc="outside lower center", ncol=3, fontsize=7.5, frameon=False)
    fig.savefig(out_dir / SCATTER_PNG, dpi=110)
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
