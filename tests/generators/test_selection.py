"""Selection that does not reward copying (generators.selection): copies of training models are good but not
novel, noise is novel but not good, held-out real models are novel by construction; ``zoo fit`` follows it."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

import generators
import zoo
from generators.selection import NoveltyReference, nearest_distance
from generators.training_models import load_training_models
from tests.conftest import build_zoo
from zoo.errors import ZooError

FAST = {"hidden": 32, "time_dim": 16, "val_samples": 8, "steps_per_epoch": 10, "trainer.max_epochs": 2}
FAST.update({"trainer.enable_progress_bar": False, "snapshot_every_n_steps": 0})
CFG = {"layout": None, "query": None, "checkpoint": -1, "canonical": "auto", "condition": None, "val_fraction": 0.3}


@pytest.fixture(scope="module")
def mlp_zoo(tmp_path_factory) -> zoo.Zoo:
    """12 digits MLPs of one layout, independent seeds."""
    return build_zoo(str(tmp_path_factory.mktemp("sel") / "z.zarr"), "recipe.widths=[8]", "recipe.seeds=12")


@pytest.fixture(scope="module")
def reference(mlp_zoo):
    models = load_training_models(mlp_zoo.path, CFG, seed=0)
    return models, NoveltyReference.from_models(models.layout, models.train, models.val, mlp_zoo.dataset())


def test_nearest_distance_is_the_brute_force_minimum():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=g), torch.randn(300, 5, generator=g)
    brute = torch.tensor([min(float((x - y).double().norm()) for y in b) for x in a], dtype=torch.float64)
    assert torch.allclose(nearest_distance(a, b, chunk=3), brute, atol=1e-12)


def test_copies_are_good_but_not_novel(reference):
    models, ref = reference
    s = ref.score(models.train)
    assert s["sample_novel"] == s["good_novel"] == s["novel_acc"] == 0.0  # distance 0 to themselves
    assert s["sample_train_acc"] > ref.good_acc  # and yet as accurate as the real models


def test_held_out_models_are_novel_by_construction(reference):
    models, ref = reference
    assert ref.novel_l2 > 0
    s = ref.score(models.val)
    assert s["sample_novel"] >= 0.5  # at least half reach their own median distance
    assert s["good_novel"] > 0 and 0 < s["novel_acc"] <= s["sample_train_acc"]


def test_novel_accuracy_discounts_by_closeness(reference):
    """A training model moved by a fraction of the novelty distance earns that fraction of its accuracy (or less,
    when another training model is nearer); moved beyond it, its whole accuracy."""
    models, ref = reference
    mask = models.layout.parameter_mask()
    g = torch.Generator().manual_seed(2)
    one = models.train[:1].clone()
    step = torch.randn(1, int(mask.sum()), generator=g)
    for frac in (0.25, 0.5, 2.0):
        moved = one.clone()
        moved[:, mask] += step / step.norm() * ref.novel_l2 * frac
        s = ref.score(moved)
        d = float(nearest_distance(moved[:, mask], ref.train_params))  # may be nearer another training model
        assert s["novel_acc"] == pytest.approx(s["sample_train_acc"] * min(1.0, d / ref.novel_l2), rel=1e-9)
        assert d <= ref.novel_l2 * frac + 1e-6
        if frac < 1:
            assert s["novel_acc"] < s["sample_train_acc"]  # closer than a held-out model: discounted


def test_noise_is_novel_but_not_good(reference):
    models, ref = reference
    g = torch.Generator().manual_seed(1)
    mask = models.layout.parameter_mask()
    noise = models.train[:8].clone()
    noise[:, mask] = torch.randn(8, int(mask.sum()), generator=g) * 50.0
    s = ref.score(noise)
    assert s["sample_novel"] == 1.0 and s["good_novel"] == 0.0
    assert s["novel_acc"] == pytest.approx(s["sample_train_acc"]) and s["novel_acc"] < 0.5  # earns only its accuracy


def test_non_finite_samples_count_as_neither(reference):
    models, ref = reference
    bad = models.val.clone()
    bad[:] = float("nan")
    s = ref.score(bad)
    assert s == {
        "sample_train_acc": 0.0,
        "sample_novel": 0.0,
        "novel_acc": 0.0,
        "good_novel": 0.0,
        "sample_nn_over_val": 0.0,
    }


def test_fit_follows_novel_accuracy_by_default(mlp_zoo, tmp_path):
    g = generators.fit("dwf", mlp_zoo.path, out=str(tmp_path / "r"), **FAST)
    summary = json.loads((g.run_dir / "summary.json").read_text())
    assert summary["monitor"] == "val/novel_acc"
    log = pd.read_csv(g.run_dir / "metrics.csv")
    for key in ("val/novel_acc", "val/good_novel", "val/sample_novel", "val/sample_train_acc"):
        assert log[key].dropna().between(0, 1).all() and log[key].notna().sum() == 2
    assert (log["val/novel_acc"].dropna() <= log["val/sample_train_acc"].dropna() + 1e-6).all()
    assert summary["best_score"] == pytest.approx(log["val/novel_acc"].max())


def test_a_monitor_that_rewards_copying_still_logs_novelty(mlp_zoo, tmp_path):
    g = generators.fit("dwf", mlp_zoo.path, out=str(tmp_path / "r"), monitor="val/sample_train_acc", **FAST)
    assert pd.read_csv(g.run_dir / "metrics.csv")["val/novel_acc"].notna().sum() == 2


def test_auto_without_samples_follows_the_held_out_loss(mlp_zoo, tmp_path):
    g = generators.fit("dwf", mlp_zoo.path, out=str(tmp_path / "r"), **{**FAST, "val_samples": 0})
    assert json.loads((g.run_dir / "summary.json").read_text())["monitor"] == "val/loss"


def test_good_novel_needs_samples(mlp_zoo, tmp_path):
    with pytest.raises(ZooError, match="monitor=val/good_novel needs generator.val_samples > 0"):
        generators.fit(
            "dwf", mlp_zoo.path, out=str(tmp_path / "r"), monitor="val/good_novel", **{**FAST, "val_samples": 0}
        )
    assert not (tmp_path / "r").exists()
