"""Whole BatchNorm ResNets from the simplex generator (issue 24 item 4), on a tiny staged ResNet zoo built here:
samples are whole networks in the zoo's layout, their BatchNorm statistics are re-estimated on TRAINING inputs
only (a seeded subset with ``bn_points``) and differ from the vertices' mix, and one seed gives the same bits."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import generators
import zoo
from tests.conftest import build_zoo
from zoo.arch import ResNet, arch_spec, build_model
from zoo.evaluate import BN_POINTS_SEED

FAST = {"vertices": None, "steps": 4, "val_every": 2, "batch_models": 2, "batch_size": 32, "val_samples": 2}


@pytest.fixture(scope="module")
def resnet_zoo(tmp_path_factory) -> zoo.Zoo:
    """8 staged BatchNorm ResNets on 8x8 digits (stem stride 2, 2 stages of widths 4 and 8), 8 seeds, 1 epoch."""
    return build_zoo(
        str(tmp_path_factory.mktemp("resnet") / "resnet.zarr"),
        "recipe.dataset=digits-image",
        "recipe.arch=resnet",
        "+recipe.stride=2",
        "+recipe.resnet_stages=2",
        "recipe.widths=[4]",
        "recipe.depths=[1]",
        "recipe.seeds=8",
        "recipe.epochs=1",
        "recipe.checkpoint_epochs=[1]",
    )


@pytest.fixture(scope="module")
def run(resnet_zoo, tmp_path_factory) -> generators.Generator:
    out = tmp_path_factory.mktemp("resnet") / "run"
    return generators.fit("simplex", resnet_zoo.path, out=str(out), bn_points=64, **FAST)


def test_staged_resnet_spec_and_modules():
    """stride/stages enter the spec only when set; stages double the width, halve the map, project the skip."""
    assert "stages" not in arch_spec("resnet", [1, 8, 8], 10, 4, 1) and "stride" not in arch_spec(
        "resnet", [1, 8, 8], 10, 4, 1
    )
    spec = arch_spec("resnet", [1, 28, 28], 10, 16, 1, stride=2, stages=4)
    assert spec["stride"] == 2 and spec["stages"] == 4
    net = build_model(spec)
    assert isinstance(net, ResNet) and net.head.in_features == 128
    assert sum(p.numel() for p in net.parameters()) == 308_538  # conf/recipe/resnet-mnist.yaml's count
    assert [b.shortcut is not None for b in net.blocks] == [False, True, True, True]
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_samples_are_whole_resnets_with_recalibrated_statistics(run, resnet_zoo):
    """Every entry of the layout (BatchNorm buffers too) is filled; the running statistics are those of
    ``zoo.recalibrate_bn`` on the seeded training subset, not the training models' stored ones."""
    assert run.has_batchnorm
    states = run.sample(3, seed=1)
    layout = resnet_zoo.layouts[run.origin["layout_key"]]
    ref = layout.unflatten_batch(torch.zeros(1, layout.size))
    assert len(states) == 3 and all(
        {k: v.shape for k, v in s.items()} == {k: v.shape[1:] for k, v in ref.items()} for s in states
    )
    flat, _ = run.sample_flat(3, seed=1)
    assert torch.isfinite(flat).all()
    raw = run.buffer_fill.expand(3, -1).clone()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        raw[:, run.param_mask] = run.generate(3, gen, None).to(torch.float32)
    again = zoo.recalibrate_bn(layout, raw, run.dataset(), points=64)
    assert torch.equal(flat, again)  # parameters as generated, statistics from the training subset
    buffers = ~run.param_mask
    assert not torch.equal(flat[:, buffers], raw[:, buffers])  # the stored mix of statistics was replaced
    acc = zoo.evaluate(layout, flat, run.dataset(), split="train")["acc"]
    assert (acc > 0.2).all()  # whole networks that work (chance is 0.1), not collapsed ones


def test_recalibration_reads_training_inputs_only(resnet_zoo):
    """recalibrate_bn(points=...) estimates from the seeded training subset: the same as recalibrating on a dataset
    whose training split is that subset, whatever the test split holds."""
    layout = next(iter(resnet_zoo.layouts.values()))
    w = resnet_zoo.weights([0, 1])
    data = resnet_zoo.dataset()
    a = zoo.recalibrate_bn(layout, w, data, points=50)
    idx = torch.randperm(len(data.X_train), generator=torch.Generator().manual_seed(BN_POINTS_SEED))[:50]
    sub = dataclasses.replace(data, X_train=data.X_train[idx], y_train=data.y_train[idx], X_test=data.X_test + 7.0)
    assert torch.equal(a, zoo.recalibrate_bn(layout, w, sub))
    assert not torch.equal(a, w)  # the running statistics moved
    assert not torch.equal(a, zoo.recalibrate_bn(layout, w, data))  # a subset, not the whole split


def test_same_seed_same_bits(run):
    """One seed gives identical whole networks, also from the reloaded run folder; another seed differs."""
    a, _ = run.sample_flat(4, seed=5)
    b, _ = generators.load(run.run_dir).sample_flat(4, seed=5)
    c, _ = run.sample_flat(4, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
