"""The diagnose scatter as a reader sees it: zoomed where good meets novel, far points counted, legend and
threshold labels off the points."""

import numpy as np
import pytest

from generators.diagnose.plots import SCATTER_PNG, scatter_view, write_plots
from generators.diagnose.table import TRAIN


def _report() -> dict:
    """A report shaped like `zoo diagnose`'s: training models near 0.93, samples down to 0.80, a gaussian
    baseline near chance (0.17..0.55) that would squash everything else into the top fifth."""
    rng = np.random.default_rng(0)

    def cloud(n, acc, spread, iou):
        return {
            "test_acc": np.clip(acc + spread * rng.standard_normal(n), 0, 1).tolist(),
            "max_iou": np.clip(iou + 0.05 * rng.standard_normal(n), 0, 1).tolist(),
            "nn_l2": (5 + rng.random(n)).tolist(),
        }

    per = {
        TRAIN: {**cloud(40, 0.935, 0.008, 0.63), "train_nn_l2": (5 + rng.random(40)).tolist()},
        "dwf": cloud(30, 0.86, 0.03, 0.40),
        "gaussian": cloud(30, 0.35, 0.1, 0.11),
    }
    per["dwf"]["test_acc"][0] = 0.80  # the lowest sample: still in the zoom
    methods = {n: {"good_and_novel": 0.1} for n in per}
    curve = {"max_iou": [1.0, 0.6, 0.3], "test_acc": [0.94, 0.92, 0.8]}
    return {
        "per_sample": per,
        "methods": methods,
        "thresholds": {"good_test_acc": 0.927, "novel_max_iou": 0.63},
        "baselines": {"noise": {"test_curve": curve}},
    }


def test_scatter_zooms_on_the_decision_and_counts_what_falls_below():
    r = _report()
    view = scatter_view(r)
    y0, y1 = view["test_acc"]
    assert max(r["per_sample"]["gaussian"]["test_acc"]) < y0 <= 0.80  # the far baseline out, every sample in
    assert y1 >= max(r["per_sample"][TRAIN]["test_acc"]) and y1 - y0 < 0.25
    assert view["off_scale"] == {
        "gaussian": {
            "count": 30,
            "of": 30,
            "min": pytest.approx(min(r["per_sample"]["gaussian"]["test_acc"])),
            "max": pytest.approx(max(r["per_sample"]["gaussian"]["test_acc"])),
        }
    }


def test_scatter_legend_outside_the_points_and_thresholds_labelled(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    r = _report()
    write_plots(r, tmp_path)
    assert (tmp_path / SCATTER_PNG).stat().st_size > 10_000
    fig = figures[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    main = fig.axes[0]
    assert main.get_ylim()[0] > max(r["per_sample"]["gaussian"]["test_acc"])  # zoomed
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    assert legends
    for legend in legends:  # no legend over any panel of points
        box = legend.get_window_extent(renderer)
        assert all(not box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)
    texts = " | ".join(t.get_text() for t in main.texts)
    assert "good: test acc ≥ 0.927" in texts and "novel: max IoU < 0.630" in texts
    assert "gaussian 30/30" in texts  # the off-scale note
    assert len(fig.axes) == 2  # the zoom and the full range
