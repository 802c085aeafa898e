"""Bar chart of bench/rebasin.py's loss barriers: before, after matching, + REPAIR of hidden units, + REPAIR of all.

Rerun: .venv/bin/python bench/rebasin_plot.py   (reads docs/bench-rebasin.json, writes docs/bench-rebasin.png)
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLUMNS = [
    ("barrier_before", "before"),
    ("barrier_after", "matched (BN reset)"),
    ("barrier_after_repair_hidden_only", "+ REPAIR hidden units"),
    ("barrier_after_repair", "+ REPAIR all units (logits too)"),
]


def main(src: str = "docs/bench-rebasin.json", out: str = "docs/bench-rebasin.png") -> int:
    quality = json.load(open(src))["quality"]
    fig, axes = plt.subplots(1, len(quality), figsize=(5.5 * len(quality), 4))
    for ax, q in zip(np.atleast_1d(axes), quality):
        for j, (key, label) in enumerate(COLUMNS):
            vals = [p[key] for p in q["pairs"]]
            x = np.arange(len(vals)) + (j - 1.5) * 0.2
            ax.bar(x, vals, width=0.2, label=f"{label}: mean {np.mean(vals):.3f}")
        ax.set_xticks(range(len(q["pairs"])), [f"seed {p['seed']}" for p in q["pairs"]])
        red = q["mean"]
        ax.set_title(
            f"{q['name']}\nreduction {100 * red['barrier_reduction']:.1f}% -> "
            f"{100 * red['barrier_reduction_repair']:.1f}% with REPAIR",
            fontsize=10,
        )
        ax.set_ylabel("train loss barrier (to seed 0)")
        ax.set_ylim(0, 1.7 * max(p["barrier_before"] for p in q["pairs"]))  # room for the legend
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
