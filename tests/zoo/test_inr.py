"""SIRENs and INR zoos: initialization, exact layouts, fitting an image, the sign symmetry, building and rendering."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import zoo
from tests.conftest import build_zoo
from zoo.arch import arch_spec, build_model
from zoo.commands.info import main as info_main
from zoo.errors import ZooError
from zoo.inr import coordinate_grid, image_grid, render, render_weights
from zoo.layout import layout_of
from zoo.rebasin.apply import permute_state, random_perms
from zoo.rebasin.signs import canonical_signs, flip_present, random_signs
from zoo.rebasin.spec import permutation_spec
from zoo.training.population import train_population
from zoo.training.spec import PopulationSpec

INR = ["recipe=inr-digits", "recipe.max_images=60", "recipe.epochs=60", "recipe.checkpoint_epochs=[0,60]"]


def siren(width: int = 16, depth: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(arch_spec("siren", [2], 1, width, depth))


def test_siren_init_follows_sitzmann() -> None:
    """First layer U(-1/in, 1/in); later layers U(-sqrt(6/in)/w0, sqrt(6/in)/w0) (bounds reached, not exceeded)."""
    m = build_model(arch_spec("siren", [2], 1, 256, 2, w0=30.0, w0_hidden=20.0))
    linears = [x for x in m.layers if isinstance(x, torch.nn.Linear)]
    first = linears[0].weight
    assert first.abs().max() <= 1 / 2 and first.abs().max() > 0.45
    for lin in linears[1:]:
        bound = math.sqrt(6 / lin.weight.shape[1]) / 20.0
        assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > 0.9 * bound
    assert [x.w0 for x in m.layers if hasattr(x, "w0")] == [30.0, 20.0]


def test_siren_layout_roundtrip_is_exact() -> None:
    m = siren()
    spec = arch_spec("siren", [2], 1, 16, 2)
    layout = layout_of(m, spec)
    flat = layout.flatten(m.state_dict())
    back = layout.build()
    back.load_state_dict(layout.unflatten(flat))
    x = coordinate_grid(5, 7)
    assert torch.equal(back(x), m(x))
    assert layout.size == 2 * 16 + 16 + 16 * 16 + 16 + 16 + 1


def test_bad_siren_specs_are_one_line_errors() -> None:
    with pytest.raises(ZooError, match="w0"):
        build_model({**arch_spec("siren", [2], 1, 8, 1), "w0": -1.0})
    with pytest.raises(ZooError, match="width"):
        build_model(arch_spec("siren", [2], 1, 0, 1))


def test_siren_population_fits_an_image() -> None:
    """Four SIRENs (2 -> 32 -> 32 -> 1) on four 8x8 digits through the population trainer: PSNR > 30 dB after
    150 full-batch Adam steps (measured ~60 dB; a ReLU-free tanh or a broken init stays near 15 dB)."""
    d = zoo.load_dataset("digits-image")
    spec = arch_spec("siren", [2], 1, 32, 2)
    grid = zoo.inr.grid_dataset(d, (8, 8))
    layout = layout_of(build_model(spec), spec)
    inits = []
    for s in range(4):
        torch.manual_seed(s)
        inits.append(build_model(spec).state_dict())
    targets = d.X_train[:4].reshape(4, 64, 1)
    res = train_population(
        PopulationSpec(
            template=layout.build(),
            layout=layout,
            init_states=inits,
            learning_rates=[1e-3] * 4,
            weight_decays=[0.0] * 4,
            data_seeds=list(range(4)),
            batch_size=64,
            epochs=150,
            checkpoint_epochs=[0, 150],
            optimizer="adam",
            targets=targets,
        ),
        grid,
        progress=False,
    )
    assert res.metric_names == ["mse", "psnr"]
    psnr = res.metrics[:, -1, 1]
    assert (psnr > 30).all(), psnr
    assert (res.metrics[:, 0, 1] < 15).all()  # the initialization draws no digit
    imgs = render_weights(layout, res.weights[:, -1], (8, 8))
    assert torch.allclose(imgs.reshape(4, 64, 1), targets, atol=0.05)


def _out(m: torch.nn.Module, state: dict) -> torch.Tensor:
    m.load_state_dict(state)
    with torch.no_grad():
        return m(coordinate_grid(9, 9))


def test_sign_flips_and_permutations_preserve_the_function() -> None:
    m = siren(width=12, depth=3)
    spec = permutation_spec(m, torch.zeros(2, 2))
    assert spec.signs == tuple(spec.sizes)  # every hidden group of a sine network has the sign symmetry
    state = {k: v.clone() for k, v in m.state_dict().items()}
    ref = _out(m, state)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        signs = {k: v for k, v in random_signs(spec, g).items()}
        assert any((s < 0).any() for s in signs.values())
        flipped = flip_present(spec, state, signs, batched=False)
        moved = permute_state(spec, flipped, random_perms(spec, g))
        assert not torch.equal(moved["layers.0.weight"], state["layers.0.weight"])
        assert torch.allclose(_out(m, moved), ref, atol=1e-5)
    # a flip of a unit with a non-odd activation is not a symmetry: the spec of a relu MLP has no sign groups
    assert permutation_spec(build_model(arch_spec("mlp", [4], 3, 8, 2))).signs == ()


def test_canonical_signs_resolve_the_sign_symmetry() -> None:
    """Randomly flipped copies of one SIREN all canonicalize to the same weights, with positive biases."""
    m = siren(width=10, depth=2)
    spec = permutation_spec(m, torch.zeros(2, 2))
    state = {k: v.unsqueeze(0).repeat(6, *[1] * v.ndim) for k, v in m.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    flipped = flip_present(spec, state, random_signs(spec, g, 6))
    assert not torch.equal(flipped["layers.2.weight"][0], flipped["layers.2.weight"][1])
    canon = flip_present(spec, flipped, canonical_signs(spec, flipped))
    for k, v in canon.items():
        assert torch.equal(v, v[:1].expand_as(v)), k
    assert (canon["layers.0.bias"] >= 0).all() and (canon["layers.2.bias"] >= 0).all()


def test_inr_zoo_builds_records_splits_and_renders(tmp_path) -> None:
    z = build_zoo(str(tmp_path / "inr.zarr"), *INR)
    models = z.models
    assert len(models) == 60 and set(models["split"]) == {"train", "validation", "test"}
    assert models["arch"].eq("siren").all() and models["image"].is_unique
    d = zoo.load_dataset("digits-image")
    labels = torch.cat([d.y_train, d.y_test]).numpy()
    assert np.array_equal(models["label"].to_numpy(), labels[models["image"].to_numpy()])
    test = models[models["split"] == "test"]
    assert (test["image"] >= len(d.X_train)).all()  # test INRs are exactly the dataset's test images
    m = z.metrics
    last = m[m["checkpoint"] == m["checkpoint"].max()]
    assert last["psnr"].mean() > 25 and (last["psnr"] > m[m["checkpoint"] == 0]["psnr"].mean()).all()
    images = render(z, [0, 1, 2])
    originals = torch.cat([d.X_train, d.X_test])[torch.as_tensor(models["image"].to_numpy()[:3].copy())][:, 0]
    assert images.shape == (3, 8, 8)
    assert ((images - originals) ** 2).mean() < 10 ** (-25 / 10)
    grid = image_grid(images, columns=2)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 9 + 1, 2 * 9 + 1)
    png = tmp_path / "not" / "yet" / "grid.png"  # its folder is made, as for every other output
    assert info_main([z.path, "--render", str(png), "--count", "5"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ZooError, match="cannot write the PNG"):
        info_main([z.path, "--render", str(tmp_path / "a-file" / "grid.png")])
    with pytest.raises(ZooError, match="no INRs"):
        render(build_zoo(str(tmp_path / "tiny.zarr")), [0])
