"""Phase labels of grid cells (I, II, III, IV-A, IV-B) from landscape metrics and configured cut-offs.

Rules (DESIGN.md, after Yang et al. 2021, "Taxonomizing local versus global structure"):
  I    high train loss, large Hessian, mc < 0        II   high train loss, large Hessian, mc > 0
  III  low train loss, small Hessian, mc < 0         IV-A low loss, small Hessian, mc ~ 0, low CKA
  IV-B the same with high CKA.
The train loss decides "poorly / well trained" and mc decides the sub-phase; the Hessian cut-off is checked
alongside and a cell where it disagrees is flagged (``hessian_agrees`` False) rather than left unlabelled,
so the diagram shows both and a person can judge the cut-offs. Cells with no usable metric get "".
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping

import numpy as np
import pandas as pd

from ..errors import ZooError

PHASES = ("I", "II", "III", "IV-A", "IV-B")
# per-model metrics aggregated over a cell's seeds (median), and cell-level ones (already per cell)
MODEL_METRICS = ("train_loss", "generalization_gap", "hessian_trace", "hessian_top_eigenvalue")
# per-model scores, aggregated like MODEL_METRICS where present: accuracy, or R^2 for regression zoos
SCORE_METRICS = ("train_acc", "test_acc", "train_r2", "test_r2")
CELL_METRICS = ("mode_connectivity", "mode_connectivity_linear", "cka")
# columns that identify a model rather than its cell
NOT_CELL = {"model_id", "seed", "status", "layout", "row", "last_checkpoint", "phase"}


@dataclass(frozen=True)
class Cutoffs:
    """Numeric cut-offs of the phase rules (conf/landscape/default.yaml, key ``phases``)."""

    train_loss_high: float = 0.1          # median train loss above this: poorly trained (I / II)
    hessian_metric: str = "hessian_trace"  # or hessian_top_eigenvalue
    hessian_cut_kind: str = "quantile"     # absolute: value is the cut; quantile: value is a quantile of the zoo
    hessian_cut: float = 0.5
    mc_tol: float = 0.03                   # |mc| <= mc_tol counts as connected (loss units)
    cka_high: float = 0.9                  # CKA at or above: IV-B, below: IV-A

    @classmethod
    def from_mapping(cls, cfg: Mapping | None) -> "Cutoffs":
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ZooError(f"unknown phase cut-off keys {unknown}; known: {sorted(known)}")
        out = cls(**cfg)
        if out.hessian_metric not in ("hessian_trace", "hessian_top_eigenvalue"):
            raise ZooError(f"phases.hessian_metric must be hessian_trace or hessian_top_eigenvalue, got {out.hessian_metric!r}")
        if out.hessian_cut_kind not in ("absolute", "quantile"):
            raise ZooError(f"phases.hessian_cut_kind must be absolute or quantile, got {out.hessian_cut_kind!r}")
        if out.hessian_cut_kind == "quantile" and not 0 <= out.hessian_cut <= 1:
            raise ZooError(f"phases.hessian_cut is a quantile here and must lie in [0, 1], got {out.hessian_cut}")
        if out.mc_tol < 0:
            raise ZooError(f"phases.mc_tol must be >= 0, got {out.mc_tol}")
        return out


def cell_columns(models: pd.DataFrame) -> list[str]:
    """Hyperparameter columns that define a grid cell: everything but the seed and per-model bookkeeping."""
    return [c for c in models.columns
            if c not in NOT_CELL and c not in MODEL_METRICS and c not in SCORE_METRICS and c not in CELL_METRICS
            and c != "test_loss"]


def cell_ids(table: pd.DataFrame, keys: list[str]) -> pd.Series:
    """A string id per row naming its cell (NaN-safe: optimizers without momentum still group)."""
    if not keys:
        return pd.Series(["all"] * len(table), index=table.index, name="cell")
    return table[keys].map(str).agg("|".join, axis=1).rename("cell")


def cell_table(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per cell: medians of per-model metrics over seeds, cell metrics, member count."""
    missing = [c for c in (*keys, *MODEL_METRICS, *CELL_METRICS) if c not in table.columns]
    if missing:
        raise ZooError(f"landscape table lacks columns {missing}")
    per_model = [*MODEL_METRICS, *(c for c in SCORE_METRICS if c in table.columns)]
    t = table.copy()
    for c in (*per_model, *CELL_METRICS):
        t[c] = pd.to_numeric(t[c], errors="coerce").replace([np.inf, -np.inf], np.nan)
    t["cell"] = cell_ids(t, keys)
    grouped = t.groupby("cell", sort=False)
    agg = grouped[list(keys)].first() if keys else pd.DataFrame(index=grouped.size().index)
    agg[per_model] = grouped[per_model].median()
    agg[list(CELL_METRICS)] = grouped[list(CELL_METRICS)].first()
    agg["members"] = grouped.size()
    agg["members_ok"] = grouped["train_loss"].count()
    return agg.reset_index()


def hessian_threshold(cells: pd.DataFrame, cut: Cutoffs) -> float:
    """The Hessian cut-off in the metric's units (a quantile of the zoo's cells, or the absolute value)."""
    if cut.hessian_cut_kind == "absolute":
        return float(cut.hessian_cut)
    vals = cells[cut.hessian_metric].dropna()
    vals = vals[vals > 0]
    if vals.empty:
        return float("nan")
    return float(np.exp(np.quantile(np.log(vals.to_numpy()), cut.hessian_cut)))


def label_cells(cells: pd.DataFrame, cut: Cutoffs) -> pd.DataFrame:
    """Add ``phase``, ``high_loss``, ``large_hessian`` and ``hessian_agrees`` columns to a cell table."""
    out = cells.copy()
    h_cut = hessian_threshold(out, cut)
    phase, high, large, agrees = [], [], [], []
    for _, r in out.iterrows():
        loss, mc, cka, h = r["train_loss"], r["mode_connectivity"], r["cka"], r[cut.hessian_metric]
        hi = bool(loss > cut.train_loss_high) if pd.notna(loss) else None
        lg = bool(h > h_cut) if pd.notna(h) and np.isfinite(h_cut) else None
        if hi is None or pd.isna(mc):
            p = ""
        elif hi:
            p = "II" if mc > cut.mc_tol else "I"
        elif mc < -cut.mc_tol:
            p = "III"
        elif pd.isna(cka):
            p = ""
        else:
            p = "IV-B" if cka >= cut.cka_high else "IV-A"
        phase.append(p)
        high.append(hi)
        large.append(lg)
        agrees.append(None if hi is None or lg is None else hi == lg)
    out["phase"] = phase
    out["high_loss"] = high
    out["large_hessian"] = large
    out["hessian_agrees"] = agrees
    out.attrs["hessian_threshold"] = h_cut
    return out


def label_models(table: pd.DataFrame, keys: list[str], cut: Cutoffs) -> tuple[pd.Series, pd.DataFrame]:
    """Phase of every model (its cell's label) and the labelled cell table."""
    cells = label_cells(cell_table(table, keys), cut)
    lookup = dict(zip(cells["cell"], cells["phase"]))
    phases = [lookup.get(c, "") for c in cell_ids(table, keys)]
    return pd.Series(phases, index=table.index, name="phase"), cells
