"""Phase diagrams: width (load) x temperature grid, one panel per metric plus the phase labels.

Other varying axes (learning rate, weight decay, ...) are summarized, never drawn as more rows: each square shows
the median over them with the range as small text, the phase panel the most frequent phase and its count.

Written as PNG next to a JSON of the same numbers, so the cut-offs can be checked by eye and by script.
"""

from __future__ import annotations

import itertools
import json
import math
import textwrap
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from zoo.errors import ZooError
from zoo.landscape.phases import CELL_METRICS, MODEL_METRICS, PHASES, SCORE_METRICS

PANELS = [  # (column, title, scale): log panels use log10 of positive values
    ("train_loss", "train loss (log10)", "log"),
    ("test_acc", "test accuracy", "linear"),  # test R² on regression zoos (see _panels)
    ("generalization_gap", "generalization gap", "linear"),
    ("hessian_trace", "Hessian trace (log10)", "log"),
    ("hessian_top_eigenvalue", "Hessian top eigenvalue (log10)", "log"),
    ("mode_connectivity", "mode connectivity (Bezier)", "diverging"),
    ("mode_connectivity_linear", "mode connectivity (line)", "diverging"),
    ("cka", "CKA of logits", "linear"),
]
PHASE_COLORS = {"I": "#d62728", "II": "#ff7f0e", "III": "#9467bd", "IV-A": "#2ca02c", "IV-B": "#1f77b4", "": "#dddddd"}
PHASE_LEGEND = {  # the phase panel's legend: what each colour means (rules: zoo/landscape/phases.py)
    "I": "I: high loss, barrier",
    "II": "II: high loss, mc > 0",
    "III": "III: low loss, barrier",
    "IV-A": "IV-A: low loss, connected, low CKA",
    "IV-B": "IV-B: low loss, connected, high CKA",
    "": "unlabelled (see note)",
}


def _phase_legend(fig, shown: set[str], any_marginal: bool, summarized: bool = False) -> None:
    """Legend right of the bottom (phase) panels: colour per phase (every phase; those absent from this
    diagram in grey text) and the hatching of marginal cells."""
    import matplotlib.patches as mpatches

    handles = [
        mpatches.Patch(facecolor=PHASE_COLORS[p], edgecolor="black", linewidth=0.3, label=PHASE_LEGEND[p])
        for p in PHASE_COLORS
        if p in shown or p in PHASES
    ]
    if any_marginal:
        handles.append(
            mpatches.Patch(
                facecolor="white",
                edgecolor="black",
                hatch="///",
                linewidth=0.3,
                label="marginal in most of its cells" if summarized else "marginal ('?'): interval crosses a cut-off",
            )
        )
    legend = fig.legend(
        handles=handles,
        loc="outside right lower",
        fontsize=7,
        frameon=False,
        title="phases",
        title_fontsize=8,
        handlelength=1.2,
    )
    for text, p in zip(legend.get_texts(), [p for p in PHASE_COLORS if p in shown or p in PHASES]):
        if p not in shown:
            text.set_color("#888888")


def _panels(cells: pd.DataFrame) -> list[tuple[str, str, str]]:
    """PANELS for this table: a regression zoo's cells carry test R² where classification ones carry accuracy."""
    if "test_acc" in cells.columns or "test_r2" not in cells.columns:
        return PANELS
    return [("test_r2", "test R²", "linear") if col == "test_acc" else (col, t, s) for col, t, s in PANELS]


def temperature_axis(cells: pd.DataFrame) -> str:
    """Batch size when the grid varies it (the published phase zoos' temperature), else learning rate."""
    for col in ("batch_size", "learning_rate"):
        if col in cells.columns and cells[col].nunique() > 1:
            return col
    return "batch_size" if "batch_size" in cells.columns else "learning_rate"


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v


MIN_SPAN = {  # colour range at least this wide (linear units; log panels: decades) so near-equal values look alike
    "test_acc": 0.1,
    "test_r2": 0.1,
    "generalization_gap": 0.1,
    "cka": 0.1,
    "log": 1.0,
}


BOUNDS = {"test_acc": (0.0, 1.0), "cka": (0.0, 1.0), "test_r2": (-math.inf, 1.0), "generalization_gap": (-1.0, 1.0)}


def _other_axes(cells: pd.DataFrame, temp: str) -> list[str]:
    """The varying hyperparameter columns besides width and temperature: summarized over in the diagram."""
    skip = {
        "cell",
        "phase",
        "members",
        "members_ok",
        "high_loss",
        "large_hessian",
        "hessian_agrees",
        "mode_connectivity_std",
        "pairs",
        "note",
        "marginal",
        "marginal_on",
    }
    return [
        c
        for c in cells.columns
        if c not in ("width", temp)
        and c not in {*MODEL_METRICS, *SCORE_METRICS, *CELL_METRICS, *skip}
        and not c.endswith(("_se", "_lo", "_hi"))
        and cells[c].nunique(dropna=False) > 1
    ]


def _mode_phase(phases: pd.Series) -> tuple[str, int]:
    """The most frequent phase of a group (ties: the earlier phase in PHASES order, unlabelled last) and its count."""
    counts = phases.value_counts()
    order = {p: k for k, p in enumerate([*PHASES, ""])}
    best = min(counts.index, key=lambda p: (-counts[p], order.get(p, len(order))))
    return str(best), int(counts[best])


def summarize_cells(cells: pd.DataFrame, temp: str, others: list[str]) -> list[dict]:
    """One record per (width, temperature): each metric's median, min and max over the other axes' cells, the most
    frequent phase and its count; with no other axes the median is the cell's value."""
    metrics = [col for col, _, _ in _panels(cells) if col in cells.columns]
    out = []
    for (w, t), g in cells.groupby(["width", temp], sort=True):
        rec: dict = {"width": _jsonable(w), temp: _jsonable(t), "cells": len(g)}
        for col in metrics:
            v = pd.to_numeric(g[col], errors="coerce").dropna()
            rec[col] = (
                {"median": float(v.median()), "min": float(v.min()), "max": float(v.max()), "n": len(v)}
                if len(v)
                else None
            )
        rec["phase"], rec["phase_count"] = _mode_phase(g["phase"].astype(str))
        rec["phase_counts"] = {(p or "unlabelled"): int(n) for p, n in g["phase"].astype(str).value_counts().items()}
        rec["marginal"] = int(g["marginal"].astype(bool).sum()) if "marginal" in g.columns else 0
        out.append(rec)
    return out


def _norm(scale: str, col: str, finite: np.ndarray, cutoffs: Mapping):
    """A colour range that never turns near-equal values into opposite extremes: log panels a LogNorm at least a
    decade wide, linear ones at least MIN_SPAN wide, connectivity symmetric about 0 (linear inside +-mc_tol)."""
    from matplotlib.colors import LogNorm, Normalize, SymLogNorm

    if scale == "log":
        pos = finite[finite > 0]
        lo, hi = (float(pos.min()), float(pos.max())) if pos.size else (0.1, 1.0)
        if math.log10(hi / lo) < MIN_SPAN["log"]:
            mid = math.sqrt(lo * hi)
            lo, hi = mid / 10 ** (MIN_SPAN["log"] / 2), mid * 10 ** (MIN_SPAN["log"] / 2)
        return LogNorm(vmin=lo, vmax=hi)
    if scale == "diverging":
        tol = float(cutoffs.get("mc_tol", 0.0))
        m = max(float(np.abs(finite).max()) if finite.size else 0.0, 2 * tol, 0.05)
        return SymLogNorm(linthresh=tol or m / 100, vmin=-m, vmax=m)
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = MIN_SPAN.get(col, 0.1 * max(abs(lo), abs(hi), 1e-9))
    if hi - lo < span:
        mid = (lo + hi) / 2
        lo, hi = mid - span / 2, mid + span / 2
        floor, ceil = BOUNDS.get(col, (-math.inf, math.inf))  # widened, never past what the metric can take
        lo, hi = (floor, floor + span) if lo < floor else (ceil - span, ceil) if hi > ceil else (lo, hi)
    return Normalize(vmin=lo, vmax=hi)


def _plain_ticks(bar, scale: str) -> None:
    """Colorbar tick labels as plain numbers (0.01, 0.2, 50), never exponents."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    if scale == "log":
        bar.ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        bar.ax.yaxis.set_minor_formatter(NullFormatter())
    bar.ax.yaxis.set_major_formatter(fmt)
    bar.ax.tick_params(labelsize=7)


def phase_diagram(
    cells: pd.DataFrame, out_dir: str | Path, cutoffs: Mapping, extra: Mapping | None = None, name: str = "phases"
) -> tuple[Path, Path]:
    """Draw ``<name>.png`` (one width x temperature panel per metric, other axes summarized) and write ``<name>.json``
    (cells, the drawn summary, axes, cut-offs) into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches  # noqa: F401 (hatched marginal cells)
    import matplotlib.pyplot as plt

    if cells.empty:
        raise ZooError("no cells to draw: the landscape table is empty")
    if "width" not in cells.columns:
        raise ZooError("the zoo's models have no 'width' column to draw on the load axis")
    temp = temperature_axis(cells)
    others = _other_axes(cells, temp)
    summary = summarize_cells(cells, temp, others)
    widths = sorted(cells["width"].unique())
    temps = sorted(cells[temp].unique())
    many = bool(others)  # several cells per (width, temperature): medians drawn, ranges as small text
    z = float(cutoffs.get("interval_z", 2.0))
    panel_w = max(3.4, (0.8 if many else 0.6) * len(widths) + 1.2)
    panel_h = max(2.4, 0.42 * len(temps) + 1.3)
    # constrained layout keeps the suptitle, titles, colorbars and the phase legend apart
    fig, axes = plt.subplots(3, 3, figsize=(3 * panel_w + 2.2, 3 * panel_h + 1.0), squeeze=False, layout="constrained")
    by_cell = {(rec["width"], rec[temp]): rec for rec in summary}
    one_cell = {} if many else {(_jsonable(r["width"]), _jsonable(r[temp])): r for _, r in cells.iterrows()}
    for c, (col, title, scale) in enumerate([*_panels(cells), ("phase", "phase", "phase")]):
        ax = axes[c // 3, c % 3]
        grid = np.full((len(temps), len(widths)), np.nan)
        labels = [["" for _ in widths] for _ in temps]
        hatched = []
        for i, j in itertools.product(range(len(temps)), range(len(widths))):
            rec = by_cell.get((_jsonable(widths[j]), _jsonable(temps[i])))
            if rec is None:
                continue
            if col == "phase":
                labels[i][j] = rec["phase"] or "–"
                if many:
                    labels[i][j] += f"\n{rec['phase_count']}/{rec['cells']}"
                elif rec["marginal"]:
                    labels[i][j] += "?"
                if rec["marginal"] * 2 > rec["cells"]:
                    hatched.append((i, j))
                continue
            s = rec.get(col)
            if s is None:
                continue
            v = s["median"]
            grid[i, j] = v if scale != "log" or v > 0 else np.nan
            labels[i][j] = f"{v:.2g}"
            if many and s["n"] > 1:
                labels[i][j] += f"\n{s['min']:.2g}…{s['max']:.2g}"
            elif not many and col in ("train_loss", "mode_connectivity", "cka"):  # the label's interval
                se = one_cell[(rec["width"], rec[temp])].get(f"{col}_se", np.nan)
                if pd.notna(se):
                    labels[i][j] += f"\n±{z * float(se):.1g}"
        dark = np.full(grid.shape, True)  # text colour per cell: black on light backgrounds
        if col == "phase":
            colors = np.array(
                [
                    [matplotlib.colors.to_rgb(PHASE_COLORS.get(by_phase, "#dddddd")) for by_phase in row]
                    for row in [[lab.split("\n")[0].rstrip("?").replace("–", "") for lab in r] for r in labels]
                ]
            )
            ax.imshow(colors, origin="lower", aspect="auto")
            for i, j in hatched:  # marginal: the interval of a deciding metric crosses its cut-off
                ax.add_patch(
                    matplotlib.patches.Rectangle(
                        (j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="black", linewidth=0, alpha=0.4
                    )
                )
            names = [*PHASES, ""]  # a discrete colorbar: phase name <-> colour, beside the panel like the others
            cmap = matplotlib.colors.ListedColormap([PHASE_COLORS[p] for p in names])
            mappable = matplotlib.cm.ScalarMappable(
                matplotlib.colors.BoundaryNorm(np.arange(len(names) + 1) - 0.5, len(names)), cmap
            )
            bar = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.04, ticks=range(len(names)))
            bar.ax.set_yticklabels([p or "none" for p in names], fontsize=7)
            bar.ax.tick_params(length=0)
            title = "phase: most frequent (count/cells)" if many else "phase ('?', hatched: marginal)"
        else:
            norm = _norm(scale, col, grid[np.isfinite(grid)], cutoffs)
            im = ax.imshow(
                grid, origin="lower", aspect="auto", cmap="RdBu" if scale == "diverging" else "viridis", norm=norm
            )
            _plain_ticks(fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04), scale)
            for i, j in itertools.product(range(len(temps)), range(len(widths))):
                if np.isfinite(grid[i, j]):  # dark text on light cells, white on dark ones
                    r_, g_, b_, _ = im.cmap(im.norm(grid[i, j]))
                    dark[i, j] = 0.299 * r_ + 0.587 * g_ + 0.114 * b_ > 0.55
            title = title.replace(" (log10)", " (log colour)")
            if many:
                title = f"{title}: median"
        for i, j in itertools.product(range(len(temps)), range(len(widths))):
            if labels[i][j]:
                ax.text(
                    j, i, labels[i][j], ha="center", va="center", fontsize=7, color="black" if dark[i, j] else "white"
                )
        ax.set_xticks(range(len(widths)), [str(w) for w in widths], fontsize=7)
        ax.set_yticks(range(len(temps)), [f"{t:g}" for t in temps], fontsize=7)
        if c // 3 == 2:
            ax.set_xlabel("width (load)", fontsize=8)
        if c % 3 == 0:
            ax.set_ylabel(f"{temp} (temperature {'↓' if temp == 'batch_size' else '↑'})", fontsize=8)
        ax.set_title(title, fontsize=8)
    _phase_legend(
        fig,
        {str(v) for v in cells["phase"]},
        "marginal" in cells.columns and bool(cells["marginal"].astype(bool).any()),
        summarized=many,
    )
    cut_txt = ", ".join(f"{k}={v}" for k, v in cutoffs.items())
    name_txt = f"{extra['recipe']}: " if extra and extra.get("recipe") else ""
    head = f"{name_txt}phase diagram, {len(cells)} cells"
    if many:
        sizes = " × ".join(f"{k} ({cells[k].nunique()})" for k in others)
        head += (
            f"; each square summarizes the {len(cells) // max(1, len(summary))} cells over {sizes}:"
            " median, small text min…max (every cell in the JSON)"
        )
    fig.suptitle("\n".join(textwrap.wrap(f"{head}. Cut-offs: {cut_txt}", 150)), fontsize=8)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png, js = out / f"{name}.png", out / f"{name}.json"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    records = [{k: _jsonable(v) for k, v in rec.items()} for rec in cells.to_dict(orient="records")]
    counts = {p: int((cells["phase"] == p).sum()) for p in PHASES}
    counts["unlabelled"] = int((cells["phase"] == "").sum())
    marginal = cells[cells["marginal"].astype(bool)] if "marginal" in cells.columns else cells.iloc[:0]
    marginal_list = [
        {"width": _jsonable(r["width"]), temp: _jsonable(r[temp]), "phase": r["phase"], "on": r.get("marginal_on", "")}
        for _, r in marginal.iterrows()
    ]
    payload = {
        "load_axis": "width",
        "temperature_axis": temp,
        "other_axes": others,
        "widths": [_jsonable(w) for w in widths],
        "temperatures": [_jsonable(t) for t in temps],
        "cutoffs": dict(cutoffs),
        "phase_counts": counts,
        "marginal_cells": marginal_list,
        **dict(extra or {}),
        "drawn": {"statistic": "median" if many else "value", "over": others, "squares": summary},
        "cells": records,
    }
    js.write_text(json.dumps(payload, indent=1))
    return png, js
