"""Phase diagrams: width (load) x temperature grid, one panel per metric plus the phase labels.

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


def _phase_legend(fig, shown: set[str], any_marginal: bool) -> None:
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
                label="marginal ('?'): interval crosses a cut-off",
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


def phase_diagram(
    cells: pd.DataFrame, out_dir: str | Path, cutoffs: Mapping, extra: Mapping | None = None, name: str = "phases"
) -> tuple[Path, Path]:
    """Draw ``<name>.png`` and write ``<name>.json`` (cells, axes, cut-offs) into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches  # noqa: F401 (hatched marginal cells)
    import matplotlib.pyplot as plt
    from matplotlib.colors import SymLogNorm

    if cells.empty:
        raise ZooError("no cells to draw: the landscape table is empty")
    if "width" not in cells.columns:
        raise ZooError("the zoo's models have no 'width' column to draw on the load axis")
    temp = temperature_axis(cells)
    fixed = ["width", temp]
    others = [
        c
        for c in cells.columns
        if c not in fixed
        and c not in {*MODEL_METRICS, *SCORE_METRICS, *CELL_METRICS}
        and c
        not in {
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
        and not c.endswith(("_se", "_lo", "_hi"))
        and cells[c].nunique(dropna=False) > 1
    ]
    combos = (
        [()] if not others else list(cells[others].astype(str).drop_duplicates().itertuples(index=False, name=None))
    )
    widths = sorted(cells["width"].unique())
    temps = sorted(cells[temp].unique())
    n_cols = 3  # each combination of the other varying axes gets a 3 x 3 block of panels
    n_rows = 3 * len(combos)
    panel_w = max(4.2, 0.55 * len(widths) + 1.2)
    # constrained layout keeps the suptitle, titles, colorbars and the phase legend apart
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(panel_w * n_cols + 1.0, 3.2 * n_rows + 0.9), squeeze=False, layout="constrained"
    )
    for r, combo in enumerate(combos):
        sub = cells if not others else cells[(cells[others].astype(str) == pd.Series(combo, index=others)).all(axis=1)]
        for c, (col, title, scale) in enumerate([*_panels(cells), ("phase", "phase", "phase")]):
            ax = axes[3 * r + c // 3, c % 3]
            grid = np.full((len(temps), len(widths)), np.nan)
            labels = [["" for _ in widths] for _ in temps]
            dark = np.full(grid.shape, col == "phase")  # text colour per cell: black on light backgrounds
            hatched = []
            for _, row in sub.iterrows():
                i, j = temps.index(row[temp]), widths.index(row["width"])
                if col == "phase":
                    labels[i][j] = row["phase"] + ("?" if bool(row.get("marginal", False)) else "")
                    if bool(row.get("marginal", False)):
                        hatched.append((i, j))
                    continue
                v = row[col]
                if pd.notna(v):
                    grid[i, j] = math.log10(v) if scale == "log" and v > 0 else (np.nan if scale == "log" else v)
                    labels[i][j] = f"{v:.2g}"
                    se = row.get(f"{col}_se", np.nan)
                    if col in ("train_loss", "mode_connectivity", "cka") and pd.notna(se):  # the label's interval
                        labels[i][j] += f"\n±{float(cutoffs.get('interval_z', 2.0)) * float(se):.1g}"
            if col == "phase":
                colors = np.array(
                    [
                        [
                            matplotlib.colors.to_rgb(PHASE_COLORS.get(labels[i][j].rstrip("?"), "#dddddd"))
                            for j in range(len(widths))
                        ]
                        for i in range(len(temps))
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
            else:
                finite = grid[np.isfinite(grid)]
                kw = {}
                if scale == "diverging" and finite.size:  # symmetric log scale, linear inside +-mc_tol
                    m = max(float(np.abs(finite).max()), 1e-9)
                    lin = float(cutoffs.get("mc_tol", 0.0)) or m / 100
                    kw["norm"] = SymLogNorm(linthresh=min(lin, m), vmin=-m, vmax=m)
                im = ax.imshow(
                    grid, origin="lower", aspect="auto", cmap="RdBu" if scale == "diverging" else "viridis", **kw
                )
                bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
                bar.ax.tick_params(labelsize=7)
                for i, j in itertools.product(range(len(temps)), range(len(widths))):
                    if np.isfinite(grid[i, j]):  # dark text on light cells, white on dark ones
                        r_, g_, b_, _ = im.cmap(im.norm(grid[i, j]))
                        dark[i, j] = 0.299 * r_ + 0.587 * g_ + 0.114 * b_ > 0.55
            for i, j in itertools.product(range(len(temps)), range(len(widths))):
                if labels[i][j]:
                    ax.text(
                        j,
                        i,
                        labels[i][j],
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="black" if dark[i, j] else "white",
                    )
            ax.set_xticks(range(len(widths)), [str(w) for w in widths], fontsize=7)
            ax.set_yticks(range(len(temps)), [f"{t:g}" for t in temps], fontsize=7)
            ax.set_xlabel("width (load)", fontsize=8)
            ax.set_ylabel(f"{temp} (temperature {'↓' if temp == 'batch_size' else '↑'})", fontsize=8)
            if col == "phase":
                title = "phase (hatched, '?': marginal)"
            head = title if not others else f"{title}\n" + ", ".join(f"{k}={v}" for k, v in zip(others, combo))
            ax.set_title(head, fontsize=8)
    _phase_legend(
        fig,
        {str(v) for v in cells["phase"]},
        "marginal" in cells.columns and bool(cells["marginal"].astype(bool).any()),
    )
    cut_txt = ", ".join(f"{k}={v}" for k, v in cutoffs.items())
    name_txt = f"{extra['recipe']}: " if extra and extra.get("recipe") else ""
    fig.suptitle("\n".join(textwrap.wrap(f"{name_txt}phase diagram — cut-offs: {cut_txt}", 40 * n_cols)), fontsize=9)
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
        "cells": records,
    }
    js.write_text(json.dumps(payload, indent=1))
    return png, js
