"""Phase labels of grid cells (I, II, III, IV-A, IV-B) from landscape metrics and configured cut-offs.

Rules (DESIGN.md, after Table 1 of Yang, Hodgkinson, Theisen et al., "Taxonomizing local versus global
structure in neural network loss landscapes", NeurIPS 2021):
  I    high train loss, large Hessian, mc < 0        II   high train loss, large Hessian, mc > 0
  III  low train loss, small Hessian, mc < 0         IV-A low loss, small Hessian, mc ~ 0, low CKA
  IV-B the same with high CKA.
One rule, two-sided: each metric falls in one region and the regions pick the phase. mc < -mc_tol is a
barrier, |mc| <= mc_tol is connected (the paper's "mc ~ 0"), mc > +mc_tol means the curve found lower loss
than the ends. The paper (and its code, nsfzyzz/loss_landscape_taxonomy, which computes mc and draws the
diagrams but fixes no numeric band) has no phase for a low-loss cell with mc > 0 nor for a high-loss cell
with mc ~ 0: such cells stay unlabelled ("") with the reason in ``note``. The train loss decides "poorly /
well trained"; the Hessian cut-off is checked alongside and a cell where it disagrees is flagged
(``hessian_agrees`` False) rather than left unlabelled. Cells with no usable metric get "".

Uncertainty: every cell metric carries a standard error (``<metric>_se``: the spread over seeds or seed
pairs divided by sqrt(count), and for mc also the bootstrap spread over evaluation examples) and an interval
``value +- interval_z * se``. A cell whose interval crosses a cut-off that its label depends on is
``marginal`` (``marginal_on`` names the metrics): its label rests on a value inside its own noise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from zoo.errors import ZooError

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

    train_loss_high: float = 0.1  # median train loss above this: poorly trained (I / II)
    hessian_metric: str = "hessian_trace"  # or hessian_top_eigenvalue
    hessian_cut_kind: str = "quantile"  # absolute: value is the cut; quantile: value is a quantile of the zoo
    hessian_cut: float = 0.5
    mc_tol: float = 0.03  # |mc| <= mc_tol counts as connected (loss units), two-sided
    cka_high: float = 0.9  # CKA at or above: IV-B, below: IV-A
    interval_z: float = 2.0  # interval = value +- interval_z * standard error (marginal cells)

    @classmethod
    def from_mapping(cls, cfg: Mapping | None) -> Cutoffs:
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ZooError(f"unknown phase cut-off keys {unknown}; known: {sorted(known)}")
        out = cls(**cfg)
        if out.hessian_metric not in ("hessian_trace", "hessian_top_eigenvalue"):
            raise ZooError(
                f"phases.hessian_metric must be hessian_trace or hessian_top_eigenvalue, got {out.hessian_metric!r}"
            )
        if out.hessian_cut_kind not in ("absolute", "quantile"):
            raise ZooError(f"phases.hessian_cut_kind must be absolute or quantile, got {out.hessian_cut_kind!r}")
        if out.hessian_cut_kind == "quantile" and not 0 <= out.hessian_cut <= 1:
            raise ZooError(f"phases.hessian_cut is a quantile here and must lie in [0, 1], got {out.hessian_cut}")
        if out.mc_tol < 0:
            raise ZooError(f"phases.mc_tol must be >= 0, got {out.mc_tol}")
        if out.interval_z < 0:
            raise ZooError(f"phases.interval_z must be >= 0, got {out.interval_z}")
        return out


def cell_columns(models: pd.DataFrame) -> list[str]:
    """Hyperparameter columns that define a grid cell: everything but the seed and per-model bookkeeping."""
    return [
        c
        for c in models.columns
        if c not in NOT_CELL
        and c not in MODEL_METRICS
        and c not in SCORE_METRICS
        and c not in CELL_METRICS
        and c != "test_loss"
    ]


def cell_ids(table: pd.DataFrame, keys: list[str]) -> pd.Series:
    """A string id per row naming its cell (NaN-safe: optimizers without momentum still group)."""
    if not keys:
        return pd.Series(["all"] * len(table), index=table.index, name="cell")
    return table[keys].map(str).agg("|".join, axis=1).rename("cell")


def cell_table(table: pd.DataFrame, keys: list[str], pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell: medians of per-model metrics over seeds, cell metrics, member count, standard errors.

    ``train_loss_se`` is the std over seeds / sqrt(seeds). With ``pairs`` (table ``landscape_pairs``: one row
    per seed pair, ``cell`` as in :func:`cell_ids`), ``mode_connectivity_se`` combines the spread over pairs
    (std / sqrt(pairs)) with the pairs' mean bootstrap std over evaluation examples, and ``cka_se`` is the
    CKA std / sqrt(pairs); without them those are NaN (no interval).
    """
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
    agg["train_loss_se"] = grouped["train_loss"].std() / np.sqrt(agg["members_ok"].clip(lower=1))
    agg = (
        agg.join(pair_spread(pairs), how="left")
        if pairs is not None and len(pairs)
        else agg.assign(mode_connectivity_std=np.nan, mode_connectivity_se=np.nan, cka_se=np.nan, pairs=0)
    )
    agg["pairs"] = agg["pairs"].fillna(0).astype(int)
    return agg.reset_index()


def pair_spread(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per cell (index): mc std over seed pairs, standard errors of the cell's mc and CKA, number of pairs."""
    p = pairs.copy()
    for c in ("mode_connectivity", "cka", "mode_connectivity_boot_std"):
        p[c] = pd.to_numeric(p[c], errors="coerce") if c in p.columns else np.nan
    g = p.groupby("cell")
    n = g["mode_connectivity"].count()
    root = np.sqrt(n.clip(lower=1))
    between = g["mode_connectivity"].std() / root
    boot = g["mode_connectivity_boot_std"].mean()  # the pairs share their resamples: no 1/sqrt(n) here
    se = np.sqrt(between.fillna(0) ** 2 + boot.fillna(0) ** 2).where(between.notna() | boot.notna())
    return pd.DataFrame(
        {
            "mode_connectivity_std": g["mode_connectivity"].std(),
            "mode_connectivity_se": se,
            "cka_se": g["cka"].std() / root,
            "pairs": n,
        }
    )


def hessian_threshold(cells: pd.DataFrame, cut: Cutoffs) -> float:
    """The Hessian cut-off in the metric's units (a quantile of the zoo's cells, or the absolute value)."""
    if cut.hessian_cut_kind == "absolute":
        return float(cut.hessian_cut)
    vals = cells[cut.hessian_metric].dropna()
    vals = vals[vals > 0]
    if vals.empty:
        return float("nan")
    return float(np.exp(np.quantile(np.log(vals.to_numpy()), cut.hessian_cut)))


def mc_region(mc: float, tol: float) -> str:
    """'barrier' (mc < -tol), 'connected' (|mc| <= tol) or 'positive' (mc > tol): the one two-sided mc rule."""
    if mc < -tol:
        return "barrier"
    return "positive" if mc > tol else "connected"


def phase_of(loss: float, mc: float, cka: float, cut: Cutoffs) -> tuple[str, str]:
    """(phase, note) of one cell's values: the whole rule table in one place; note says why a cell is ''."""
    if pd.isna(loss) or pd.isna(mc):
        return "", "no train loss or mode connectivity"
    high = loss > cut.train_loss_high
    region = mc_region(mc, cut.mc_tol)
    if high:
        if region == "connected":
            return "", "high loss with |mc| <= mc_tol: between I (mc < 0) and II (mc > 0)"
        return ("I" if region == "barrier" else "II"), ""
    if region == "barrier":
        return "III", ""
    if region == "positive":
        return "", "low loss with mc > mc_tol: the taxonomy has no well-trained phase with mc > 0"
    if pd.isna(cka):
        return "", "no CKA"
    return ("IV-B" if cka >= cut.cka_high else "IV-A"), ""


def _straddles(value: float, se: float, z: float, side: Callable[[float], bool]) -> bool:
    """True if the ends of value +- z*se fall on different sides of a cut (``side``: which side a value is on)."""
    if pd.isna(value) or pd.isna(se):
        return False
    return side(value - z * se) != side(value + z * se)


def marginal_metrics(r: Mapping, phase: str, cut: Cutoffs) -> list[str]:
    """Metrics whose interval (value +- interval_z * se) crosses a cut-off that decides this cell's label."""
    z = cut.interval_z
    out = []
    loss, mc = r.get("train_loss"), r.get("mode_connectivity")
    if _straddles(loss, r.get("train_loss_se"), z, lambda v: v > cut.train_loss_high):
        out.append("train_loss")
    if pd.notna(mc) and pd.notna(r.get("mode_connectivity_se")):
        half = z * float(r["mode_connectivity_se"])
        if mc_region(mc - half, cut.mc_tol) != mc_region(mc + half, cut.mc_tol):
            out.append("mode_connectivity")
    if phase in ("IV-A", "IV-B") and _straddles(r.get("cka"), r.get("cka_se"), z, lambda v: v >= cut.cka_high):
        out.append("cka")
    return out


def label_cells(cells: pd.DataFrame, cut: Cutoffs) -> pd.DataFrame:
    """Add ``phase``, ``note``, ``marginal``, ``marginal_on``, interval bounds and Hessian flags to a cell table."""
    out = cells.copy()
    for c in ("train_loss_se", "mode_connectivity_se", "cka_se"):
        if c not in out.columns:
            out[c] = np.nan
    h_cut = hessian_threshold(out, cut)
    phase, note, marginal, on, high, large, agrees = [], [], [], [], [], [], []
    for _, r in out.iterrows():
        loss, h = r["train_loss"], r[cut.hessian_metric]
        p, why = phase_of(loss, r["mode_connectivity"], r["cka"], cut)
        m = marginal_metrics(r, p, cut)
        hi = bool(loss > cut.train_loss_high) if pd.notna(loss) else None
        lg = bool(h > h_cut) if pd.notna(h) and np.isfinite(h_cut) else None
        phase.append(p)
        note.append(why)
        marginal.append(bool(m))
        on.append(",".join(m))
        high.append(hi)
        large.append(lg)
        agrees.append(None if hi is None or lg is None else hi == lg)
    out["phase"] = phase
    out["note"] = note
    out["marginal"] = marginal
    out["marginal_on"] = on
    z = cut.interval_z
    for c in ("train_loss", "mode_connectivity", "cka"):
        out[f"{c}_lo"] = out[c] - z * out[f"{c}_se"]
        out[f"{c}_hi"] = out[c] + z * out[f"{c}_se"]
    out["high_loss"] = high
    out["large_hessian"] = large
    out["hessian_agrees"] = agrees
    out.attrs["hessian_threshold"] = h_cut
    return out


def label_models(
    table: pd.DataFrame, keys: list[str], cut: Cutoffs, pairs: pd.DataFrame | None = None
) -> tuple[pd.Series, pd.DataFrame]:
    """Phase of every model (its cell's label) and the labelled cell table (spreads from ``pairs``)."""
    cells = label_cells(cell_table(table, keys, pairs), cut)
    lookup = dict(zip(cells["cell"], cells["phase"]))
    phases = [lookup.get(c, "") for c in cell_ids(table, keys)]
    return pd.Series(phases, index=table.index, name="phase"), cells
