"""Scaling and sign symmetries beside permutations: random transforms keep the function and canonicalize to one
point; ``zoo align --symmetries`` writes that canonical form."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.app.config import compose
from zoo.arch import arch_spec, build_model
from zoo.commands.main import main as zoo_main
from zoo.errors import ZooError
from zoo.evaluate import predict
from zoo.layout import layout_of
from zoo.rebasin.align import align_flat
from zoo.rebasin.spec import spec_for_layout
from zoo.rebasin.symmetries import canonicalize_units, parse_symmetries, random_transform, scale_groups

ALL = ("permutation", "scale", "sign")


def _check_canonical(layout, w: torch.Tensor, x: torch.Tensor, n: int = 100) -> None:
    """n random symmetry transforms of w [P]: same outputs, and one canonical form within 1e-5."""
    spec = spec_for_layout(layout)
    moved = random_transform(spec, layout, w.expand(n, -1), torch.Generator().manual_seed(0), ALL, log_std=0.5)
    assert (moved - w).abs().max() > 0.1  # the transforms really move the weights
    torch.testing.assert_close(
        predict(layout, moved, x), predict(layout, w[None], x).expand(n, -1, -1), atol=1e-4, rtol=1e-4
    )
    target = canonicalize_units(spec, layout, w[None], ALL)[0]
    aligned, _ = align_flat(layout, w, moved, symmetries=ALL)
    assert (aligned - target).abs().max() < 1e-5


@pytest.mark.parametrize(
    "name,extra,shape",
    [
        ("mlp", {"activation": "tanh"}, [64]),
        ("cnn", {}, [1, 8, 8]),
        ("resnet", {}, [1, 8, 8]),
    ],
)
def test_random_transforms_keep_function_and_share_one_canonical_form(name, extra, shape):
    torch.manual_seed(0)
    spec = arch_spec(name, shape, 10, 6, 2, **extra)
    model = build_model(spec)
    with torch.no_grad():  # BatchNorm affine parameters and statistics away from their initial values
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
    layout = layout_of(model, spec)
    s = spec_for_layout(layout)
    assert (s.odd if extra else s.scales) and not (s.scales if extra else s.odd)
    if name == "cnn":  # BatchNorm units are scaled at the BatchNorm's affine parameters, never at the conv rows
        assert scale_groups(s)[0].incoming == ("features.1.weight", "features.1.bias")
    if name == "resnet":  # the residual stream has no scaling symmetry; the blocks' inner units do
        assert s.scales == ("P_blocks.0.conv1", "P_blocks.1.conv1")
    _check_canonical(layout, layout.flatten(model.state_dict()), torch.randn(16, *shape))


def test_stored_relu_model_and_zoo_align_symmetries_cli(tmp_path, capsys):
    path = tmp_path / "mlp.zarr"
    zoo.build(
        compose(
            "build",
            [
                f"out={path}",
                "recipe=tiny",
                "progress=false",
                "recipe.widths=[16]",
                "recipe.seeds=2",
                "recipe.learning_rates=[0.05]",
            ],
        )
    )
    z = zoo.open(str(path))
    layout = next(iter(z.layouts.values()))
    X = z.dataset().X_test[:32]
    _check_canonical(layout, z.weights([0])[0], X)
    assert zoo_main(["align", str(path), "--symmetries", "sign,scale,permutation", "--pairs", "0"]) == 0
    assert "symmetries: permutation,scale,sign" in capsys.readouterr().out
    z = zoo.open(str(path))
    can = z.weights([0, 1], canonical=True)
    torch.testing.assert_close(predict(layout, can, X), predict(layout, z.weights([0, 1]), X), atol=1e-4, rtol=1e-4)
    states = layout.unflatten_batch(can)
    for g in scale_groups(spec_for_layout(layout)):  # every hidden ReLU unit has a unit-norm incoming vector
        sq = sum(states[t].reshape(2, states[t].shape[1], -1).square().sum(2) for t in g.incoming)
        torch.testing.assert_close(sq, torch.ones_like(sq), atol=1e-5, rtol=1e-5)
    with pytest.raises(ZooError, match="include permutation"):
        zoo.rebasin.align_zoo(z, symmetries="scale", write=False)
    with pytest.raises(ZooError, match="unknown symmetry"):
        parse_symmetries("permutation,rotation")
