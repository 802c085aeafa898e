"""Phase rules on hand-made metric tables, config validation, and the diagram's PNG + JSON."""

import json

import numpy as np
import pandas as pd
import pytest

from zoo.errors import ZooError
from zoo.landscape.compute import analysis_indices, resolve_config, seed_pairs
from zoo.landscape.phases import Cutoffs, cell_table, label_cells, label_models, mc_region, pair_spread, phase_of
from zoo.landscape.plot import phase_diagram

CUT = Cutoffs(
    train_loss_high=0.1,
    hessian_metric="hessian_trace",
    hessian_cut_kind="absolute",
    hessian_cut=50.0,
    mc_tol=0.02,
    cka_high=0.9,
)
# (width, batch_size): (train_loss, hessian_trace, mc, cka, expected phase)
CELLS = {
    (4, 1024): (1.5, 200.0, -0.30, 0.5, "I"),
    (64, 1024): (0.5, 120.0, 0.40, 0.8, "II"),
    (4, 16): (0.02, 10.0, -0.10, 0.6, "III"),
    (32, 16): (0.01, 5.0, 0.005, 0.7, "IV-A"),
    (128, 16): (0.005, 3.0, -0.01, 0.95, "IV-B"),
    (128, 64): (0.005, 3.0, 0.30, 0.97, ""),  # low loss, mc > +tol: outside the taxonomy (two-sided rule)
    (64, 64): (0.05, 80.0, 0.0, 0.9, "IV-B"),  # low loss but large Hessian: labelled, flagged
    (8, 64): (2.0, 5.0, 0.02, 0.3, ""),  # high loss, |mc| = tol counts as connected: neither I nor II
}


def _table():
    rows, mid = [], 0
    for (w, b), (loss, tr, mc, cka, _) in CELLS.items():
        for s in range(3):  # per-model metrics jitter around the cell value; cell metrics repeat
            rows.append(
                dict(
                    model_id=mid,
                    width=w,
                    batch_size=b,
                    seed=s,
                    train_loss=loss * (1 + 0.1 * (s - 1)),
                    train_acc=1 - loss / 3,
                    test_acc=0.9,
                    generalization_gap=0.05,
                    hessian_trace=tr * (1 + 0.05 * s),
                    hessian_top_eigenvalue=tr / 5,
                    mode_connectivity=mc,
                    mode_connectivity_linear=mc - 0.1,
                    cka=cka,
                )
            )
            mid += 1
    return pd.DataFrame(rows)


def test_phase_rules_on_hand_made_table():
    table = _table()
    phase, cells = label_models(table, ["width", "batch_size"], CUT)
    got = {(r.width, r.batch_size): r.phase for r in cells.itertuples()}
    assert got == {k: v[-1] for k, v in CELLS.items()}
    # every member carries its cell's label
    for (w, b), v in CELLS.items():
        assert set(phase[(table.width == w) & (table.batch_size == b)]) == {v[-1]}
    flagged = cells.set_index(["width", "batch_size"])["hessian_agrees"]
    assert flagged[(64, 64)] is False or flagged[(64, 64)] == False  # noqa: E712 (pandas object column)
    assert flagged[(4, 1024)] == True and flagged[(8, 64)] == False  # noqa: E712
    # medians over seeds: the middle seed's value
    c = cells.set_index(["width", "batch_size"])
    assert c.loc[(4, 1024), "train_loss"] == pytest.approx(1.5)
    assert (c["members"] == 3).all()


def test_notes_say_why_a_cell_is_unlabelled():
    cells = label_models(_table(), ["width", "batch_size"], CUT)[1].set_index(["width", "batch_size"])
    assert "between I" in cells.loc[(8, 64), "note"] and "mc > 0" in cells.loc[(128, 64), "note"]
    assert cells.loc[(4, 1024), "note"] == ""


@pytest.mark.parametrize(
    "mc,region",
    [(-0.0301, "barrier"), (-0.03, "connected"), (0.0, "connected"), (0.03, "connected"), (0.0301, "positive")],
)
def test_mc_rule_is_two_sided_with_the_tolerance_inclusive(mc, region):
    assert mc_region(mc, 0.03) == region


@pytest.mark.parametrize(
    "loss,mc,cka,phase",
    [
        (0.1, -0.0301, 0.5, "III"),  # loss exactly at train_loss_high is well trained
        (0.1001, -0.0301, 0.5, "I"),
        (0.1001, 0.0301, 0.5, "II"),
        (0.1001, 0.03, 0.5, ""),  # high loss, |mc| <= tol: neither I nor II
        (0.05, -0.03, 0.9, "IV-B"),  # CKA exactly at cka_high is high
        (0.05, 0.03, 0.8999, "IV-A"),
        (0.05, 0.0301, 0.99, ""),  # the old one-sided rule called this IV-B
        (0.05, -0.0301, 0.99, "III"),
    ],
)
def test_phase_rule_at_the_boundaries(loss, mc, cka, phase):
    cut = Cutoffs(train_loss_high=0.1, mc_tol=0.03, cka_high=0.9)
    assert phase_of(loss, mc, cka, cut)[0] == phase


def test_marginal_cells_are_those_whose_interval_crosses_a_deciding_cutoff():
    cut = Cutoffs(
        train_loss_high=0.1, hessian_cut_kind="absolute", hessian_cut=50.0, mc_tol=0.03, cka_high=0.9, interval_z=2.0
    )
    base = dict(
        hessian_trace=5.0,
        hessian_top_eigenvalue=1.0,
        train_loss=0.02,
        train_loss_se=0.001,
        mode_connectivity=0.0,
        mode_connectivity_se=0.001,
        cka=0.95,
        cka_se=0.001,
    )
    rows = {
        "robust": {},
        "mc": dict(mode_connectivity=0.02, mode_connectivity_se=0.006),  # 0.02 + 2*0.006 > 0.03
        "mc_inside": dict(mode_connectivity=0.02, mode_connectivity_se=0.004),  # 0.028: stays connected
        "loss": dict(train_loss=0.09, train_loss_se=0.01),
        "cka": dict(cka=0.91, cka_se=0.01),
        "cka_irrelevant": dict(mode_connectivity=-0.2, cka=0.91, cka_se=0.01),  # III: CKA decides nothing
        "no_spread": dict(mode_connectivity=0.029, mode_connectivity_se=np.nan),
    }
    cells = pd.DataFrame(
        [{"cell": k, "width": i, "batch_size": 16, **base, **v} for i, (k, v) in enumerate(rows.items())]
    )
    out = label_cells(cells, cut).set_index("cell")
    assert out["marginal_on"].to_dict() == {
        "robust": "",
        "mc": "mode_connectivity",
        "mc_inside": "",
        "loss": "train_loss",
        "cka": "cka",
        "cka_irrelevant": "",
        "no_spread": "",
    }
    assert out.loc["mc", "phase"] == "IV-B" and out.loc["cka_irrelevant", "phase"] == "III"  # labels unchanged
    assert out.loc["mc", "mode_connectivity_hi"] == pytest.approx(0.032)
    # the same cell with a tighter interval_z is no longer marginal
    assert (
        not label_cells(cells, Cutoffs(**{**cut.__dict__, "interval_z": 1.0})).set_index("cell").loc["mc", "marginal"]
    )


def test_pair_spread_combines_pairs_and_bootstrap():
    pairs = pd.DataFrame(
        {
            "cell": ["a"] * 3 + ["b"],
            "mode_connectivity": [0.0, 0.03, 0.06, 0.1],
            "mode_connectivity_boot_std": [0.01, 0.01, 0.01, 0.02],
            "cka": [0.9, 0.92, 0.94, 0.8],
        }
    )
    s = pair_spread(pairs)
    assert s.loc["a", "pairs"] == 3 and s.loc["a", "mode_connectivity_std"] == pytest.approx(0.03)
    assert s.loc["a", "mode_connectivity_se"] == pytest.approx(np.sqrt((0.03 / np.sqrt(3)) ** 2 + 0.01**2))
    assert s.loc["a", "cka_se"] == pytest.approx(0.02 / np.sqrt(3))
    assert s.loc["b", "mode_connectivity_se"] == pytest.approx(0.02)  # one pair: only the bootstrap spread
    # cell_table attaches them by cell id
    table = _table()
    t = cell_table(table, ["width", "batch_size"])
    cid = t["cell"].iloc[0]
    t2 = cell_table(table, ["width", "batch_size"], pairs.assign(cell=[cid] * 3 + ["nope"]))
    assert t2.set_index("cell").loc[cid, "pairs"] == 3 and (t2["pairs"] == 0).sum() == len(t2) - 1
    assert t.set_index("cell").loc[cid, "train_loss_se"] > 0


def test_phase_rules_missing_metrics_and_quantile_cut():
    table = _table()
    table.loc[table.width == 4, "mode_connectivity"] = np.nan  # e.g. a cell with one trained seed
    cells = label_cells(
        cell_table(table, ["width", "batch_size"]), Cutoffs(hessian_cut_kind="quantile", hessian_cut=0.5)
    )
    c = cells.set_index(["width", "batch_size"])
    assert c.loc[(4, 16), "phase"] == "" and c.loc[(4, 1024), "phase"] == ""
    thr = cells.attrs["hessian_threshold"]
    vals = c["hessian_trace"]
    assert (vals > thr).sum() in (len(vals) // 2, len(vals) - len(vals) // 2)  # a median split on log scale


def test_cutoff_and_config_validation():
    with pytest.raises(ZooError, match="unknown phase cut-off"):
        Cutoffs.from_mapping({"loss_high": 1})
    with pytest.raises(ZooError, match="quantile"):
        Cutoffs.from_mapping({"hessian_cut_kind": "quantile", "hessian_cut": 3})
    with pytest.raises(ZooError, match="hessian_metric"):
        Cutoffs.from_mapping({"hessian_metric": "trace"})
    with pytest.raises(ZooError, match="unknown landscape config"):
        resolve_config({"probez": 3})
    with pytest.raises(ZooError, match="probes"):
        resolve_config({"probes": 0})
    assert Cutoffs.from_mapping(resolve_config()["phases"]) == Cutoffs()  # code defaults == conf defaults
    cfg = resolve_config({"enabled": True, "probes": 8, "phases": {"mc_tol": 0.5}})
    assert cfg["probes"] == 8 and cfg["phases"]["mc_tol"] == 0.5 and cfg["phases"]["cka_high"] == 0.9


def test_analysis_indices_are_fixed_and_distinct():
    a = analysis_indices(1000, 4, 128, seed=3)
    b = analysis_indices(1000, 4, 128, seed=3)
    assert a.shape == (4, 128) and np.array_equal(a, b) and len(set(a.reshape(-1).tolist())) == 512
    small = analysis_indices(100, 4, 128, seed=0)
    assert small.shape == (4, 25)


def test_seed_pairs():
    members = pd.DataFrame({"model_id": [7, 3, 5], "seed": [2, 0, 1]})
    assert seed_pairs(members, "all", 3) == [(3, 5), (3, 7), (5, 7)]
    assert seed_pairs(members, "consecutive", 3) == [(3, 5), (5, 7)]
    assert seed_pairs(members, "all", 1) == [(3, 5)]


def test_phase_diagram_png_and_json_agree(tmp_path):
    cells = label_cells(cell_table(_table(), ["width", "batch_size"]), CUT)
    png, js = phase_diagram(cells, tmp_path, {"train_loss_high": 0.1})
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(js.read_text())
    assert data["temperature_axis"] == "batch_size" and data["widths"] == [4, 8, 32, 64, 128]
    assert data["phase_counts"] == {"I": 1, "II": 1, "III": 1, "IV-A": 1, "IV-B": 2, "unlabelled": 2}
    assert data["marginal_cells"] == []  # hand-made table without pairs: no intervals
    by = {(c["width"], c["batch_size"]): c for c in data["cells"]}
    assert by[(4, 1024)]["phase"] == "I" and by[(4, 1024)]["mode_connectivity"] == pytest.approx(-0.30)


def _drawn(monkeypatch, cells, tmp_path, cutoffs=None):
    """phase_diagram's PNG, JSON and its figure (kept open for inspection)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    png, js = phase_diagram(cells, tmp_path, cutoffs or {"train_loss_high": 0.1, "mc_tol": 0.02})
    return png, json.loads(js.read_text()), figures[0]


def test_phase_diagram_summarizes_other_axes_into_one_plane(tmp_path, monkeypatch):
    """Learning rate x weight decay (4 x 2) varying beside width x batch size: still nine panels of the width x
    temperature plane (never a row per slice), each square the median over the 8 slices, the phase panel the most
    frequent phase; the JSON holds the drawn numbers next to every cell."""
    from PIL import Image

    base = label_cells(cell_table(_table(), ["width", "batch_size"]), CUT)
    slices = []
    for k, (lr, wd) in enumerate((lr, wd) for lr in (0.01, 0.02, 0.05, 0.1) for wd in (0.0, 1e-4)):
        s = base.assign(learning_rate=lr, weight_decay=wd, train_loss=base.train_loss * (1 + k))
        s.loc[s.width == 4, "phase"] = "I" if k < 5 else "II"  # 5 of 8 slices say I
        slices.append(s)
    cells = pd.concat(slices, ignore_index=True)
    png, data, fig = _drawn(monkeypatch, cells, tmp_path)
    assert len([ax for ax in fig.axes if ax.get_title()]) == 9
    w, h = Image.open(png).size
    assert h < 1200 and w < 2400, (w, h)  # the 20-row version of the main job's diagram was 1496 x 8547
    assert data["other_axes"] == ["learning_rate", "weight_decay"] and data["drawn"]["statistic"] == "median"
    squares = {(s["width"], s["batch_size"]): s for s in data["drawn"]["squares"]}
    assert len(squares) == len(base) and all(s["cells"] == 8 for s in squares.values())
    for (wd_, b), g in cells.groupby(["width", "batch_size"]):
        s = squares[(wd_, b)]["train_loss"]
        assert s["median"] == pytest.approx(g.train_loss.median()) and s["max"] == pytest.approx(g.train_loss.max())
    assert squares[(4, 1024)]["phase"] == "I" and squares[(4, 1024)]["phase_count"] == 5
    assert squares[(4, 1024)]["phase_counts"] == {"I": 5, "II": 3}
    assert len(data["cells"]) == len(cells)  # every cell still in the JSON
    phase_ax = next(ax for ax in fig.axes if ax.get_title().startswith("phase"))
    assert "I\n5/8" in [t.get_text() for t in phase_ax.texts]


def test_phase_diagram_colours_near_equal_values_alike_and_labels_log_scales_plainly(tmp_path, monkeypatch):
    """Test accuracies 0.950 and 0.951 are near-equal colours (not the two ends of the colormap); a log panel's
    colorbar reads as plain numbers (no exponents) on a LogNorm at least a decade wide."""
    from matplotlib.colors import LogNorm

    cells = label_cells(cell_table(_table(), ["width", "batch_size"]), CUT)
    cells["test_acc"] = np.where(cells.width > 8, 0.951, 0.950)
    cells["hessian_top_eigenvalue"] = np.where(cells.width > 8, 20.0, 21.0)
    _, _, fig = _drawn(monkeypatch, cells, tmp_path)
    fig.canvas.draw()
    acc = next(ax for ax in fig.axes if ax.get_title().startswith("test accuracy")).images[0]
    assert abs(acc.norm(0.951) - acc.norm(0.950)) < 0.05
    eig = next(ax for ax in fig.axes if ax.get_title().startswith("Hessian top")).images[0]
    assert isinstance(eig.norm, LogNorm) and eig.norm.vmax / eig.norm.vmin >= 10 - 1e-9
    assert abs(eig.norm(21.0) - eig.norm(20.0)) < 0.05
    bar = eig.colorbar.ax
    ticks = [t.get_text() for t in bar.get_yticklabels() if t.get_text()]
    assert ticks and all("^" not in t and "$" not in t and "e" not in t for t in ticks), ticks
    float(ticks[0])  # a plain number


def test_phase_diagram_widened_colour_range_stays_within_the_metric(tmp_path, monkeypatch):
    """Accuracies all near 0 (a memorizing zoo): the minimum span widens the range upward, never below 0."""
    cells = label_cells(cell_table(_table(), ["width", "batch_size"]), CUT)
    cells["test_acc"] = np.where(cells.width > 8, 0.01, 0.0)
    _, _, fig = _drawn(monkeypatch, cells, tmp_path)
    acc = next(ax for ax in fig.axes if ax.get_title().startswith("test accuracy")).images[0]
    assert acc.norm.vmin == 0.0 and acc.norm.vmax == pytest.approx(0.1)
