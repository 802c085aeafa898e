"""task=label on an INR zoo: the zoo's stored split, every encoder runs, and one classifies digits above chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import build_zoo
from wsl.augment import Augmenter
from wsl.data import WeightDataModule
from wsl.space import WeightSpace
from wsl.train import train
from zoo.app.config import compose
from zoo.inr import coordinate_grid
from zoo.layout import Layout

ENCODERS = ["mlp", "statnn", "nfn", "graph", "transformer"]


@pytest.fixture(scope="module")
def inr_zoo(tmp_path_factory):
    """300 INRs of the 8x8 digits (shared initialization, 60 full-batch steps): ~10 s of one core."""
    path = tmp_path_factory.mktemp("inr") / "inr.zarr"
    return build_zoo(
        str(path),
        "recipe=inr-digits",
        "recipe.max_images=300",
        "recipe.shared_init=true",
        "recipe.epochs=60",
        "recipe.checkpoint_epochs=[0,60]",
    )


def test_label_target_splits_by_the_stored_split(inr_zoo) -> None:
    dm = WeightDataModule(inr_zoo, target="label", split=(0.34, 0.33, 0.33))  # fractions are ignored here
    dm.setup()
    stored = inr_zoo.models.set_index("model_id")["split"].replace({"validation": "val"})
    got = dm.samples.set_index("model_id")["split"]
    assert (got == stored.loc[got.index]).all()
    assert set(got) == {"train", "val", "test"}
    labels = inr_zoo.models.set_index("model_id")["label"]
    assert (dm.samples.set_index("model_id")["target"] == labels.loc[got.index]).all()  # classes "0".."9" in order
    assert dm.target.classes == [str(c) for c in range(10)]


def test_inr_augmentation_preserves_every_function(inr_zoo) -> None:
    """The ``inr`` augmentation (permutation + sign flip) changes the weights, never the image an INR draws."""
    key = next(iter(inr_zoo.layouts))
    layout: Layout = inr_zoo.layouts[key]
    space = WeightSpace([layout])
    w = inr_zoo.weights(list(range(8)))
    aug = Augmenter(space, {"permute": {"p": 1.0}, "sign_flip": {"p": 1.0}}, seed=0)
    out = aug({"w": space.pad(w, 0), "y": torch.zeros(8, dtype=torch.long), "layout": torch.zeros(8, dtype=torch.long)})
    moved = space.unpad(out["w"], 0)
    assert not torch.allclose(moved, w)
    template, grid = layout.build(), coordinate_grid(8, 8)
    for a, b in zip(w, moved):
        template.load_state_dict(layout.unflatten(a))
        ya = template(grid)
        template.load_state_dict(layout.unflatten(b))
        assert torch.allclose(template(grid), ya, atol=1e-5)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_every_encoder_runs_on_an_inr_zoo(inr_zoo, tmp_path, encoder) -> None:
    cfg = compose(
        "train",
        [f"zoo={inr_zoo.path}", f"out={tmp_path}", f"encoder={encoder}", "task=label", "augment=inr"]
        + ["trainer.max_epochs=1", "trainer.enable_progress_bar=false"],
    )
    s = train(cfg)
    assert 0.0 <= s["test"]["acc"] <= 1.0 and np.isfinite(s["test"]["loss"])
    assert s["splits"]["test"]["models"] == int((inr_zoo.models["split"] == "test").sum())


def test_an_encoder_classifies_inrs_above_chance(inr_zoo, tmp_path) -> None:
    """The flat MLP on 300 shared-init digit INRs: test accuracy well above the 10% of chance."""
    cfg = compose(
        "train",
        [f"zoo={inr_zoo.path}", f"out={tmp_path}", "encoder=mlp", "task=label"]
        + ["trainer.max_epochs=15", "trainer.enable_progress_bar=false"],
    )
    assert train(cfg)["test"]["acc"] > 0.3
