"""Generators on INR zoos (issue 22 item 6): DeepWeightFlow fits an INR zoo, follows its loss (samples of an
INR zoo have no accuracy to score), and `zoo sample` writes samples that render, plus a PNG of each sample's
image beside the training INR whose image is nearest."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

import zoo
from generators.diagnose.inr import nearest_renders
from tests.conftest import build_zoo, run_cli

INR = ["recipe=inr-digits", "recipe.max_images=40", "recipe.epochs=30", "recipe.checkpoint_epochs=[30]"]
# dB the shared-init samples beat the mean image by: measured 13.8 vs 11.5 dB (seed 0); independent
# initializations (recipe.shared_init=false) fail it, as their samples draw noise
MARGIN_DB = 1.5
FAST = [
    "generator.hidden=32",
    "generator.time_dim=16",
    "steps_per_epoch=10",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
]


def test_dwf_fits_an_inr_zoo_and_its_samples_render_beside_their_nearest(tmp_path, capsys):
    train = build_zoo(str(tmp_path / "inr.zarr"), *INR)
    run = tmp_path / "run"
    rc, out, err = run_cli(capsys, "fit", "generator=dwf", f"zoo={train.path}", f"out={run}", *FAST)
    assert rc == 0, err
    assert "following val/loss" in out + err  # the auto monitor: nothing to classify in an INR zoo
    rc, out, err = run_cli(capsys, "sample", str(run), "-n", "6", "--out", str(tmp_path / "s.zarr"))
    assert rc == 0, err
    s = zoo.open(str(tmp_path / "s.zarr"))
    assert s.attrs["inr"] == train.attrs["inr"]  # the samples know their image shape: they render
    assert zoo.render(s, list(range(6))).shape == (6, 8, 8)
    png = mpimg.imread(str(tmp_path / "s.png"))
    assert png.shape[0] > 8 and "PSNR to it" in out
    r = nearest_renders(s, train)
    # the nearest training image is the nearest: a brute-force check over every training INR's image
    every = zoo.render(train, list(range(len(train)))).reshape(len(train), -1).double()
    brute = torch.cdist(r.samples.reshape(len(r.samples), -1).double(), every).argmin(1).numpy()
    assert np.array_equal(r.train_ids, brute)
    own = nearest_renders(train, train, count=3)  # a training INR's nearest image is its own
    assert own.train_ids.tolist() == [0, 1, 2]
    rc, out, err = run_cli(
        capsys, "diagnose", str(tmp_path / "s.zarr"), "--train", train.path, "--out", str(tmp_path / "d")
    )
    assert rc == 0 and "psnr_render dB" in out, err  # PSNR instead of accuracy (tests/generators/diagnose)


@pytest.mark.slow  # ~40 s on one busy thread: a 100-INR build and 200 flow steps
def test_dwf_on_a_shared_init_inr_zoo_samples_digits_nearer_than_the_mean_image(tmp_path, capsys):
    """The setting of docs/dwf-inr-digits.md, scaled down: every INR from one SIREN initialization, a DWF
    conditioned on the digit label. Its samples draw images far nearer a training image than the mean image is,
    without copying one (a copy's render is within 40 dB of its source's)."""
    train = build_zoo(
        str(tmp_path / "inr.zarr"), "recipe=inr-digits", "recipe.max_images=100", "recipe.shared_init=true"
    )
    run = tmp_path / "run"
    rc, out, err = run_cli(
        capsys,
        "fit",
        "generator=dwf",
        f"zoo={train.path}",
        f"out={run}",
        "generator.query=\"split == 'train'\"",
        "generator.canonical=false",
        "generator.condition=label",
        "generator.pca=false",
        "generator.hidden=128",
        "generator.time_dim=16",
        "steps_per_epoch=50",
        "trainer.max_epochs=4",
        "trainer.enable_progress_bar=false",
    )
    assert rc == 0, err
    rc, out, err = run_cli(capsys, "sample", str(run), "-n", "40", "--out", str(tmp_path / "s.zarr"))
    assert rc == 0, err
    r = nearest_renders(str(tmp_path / "s.zarr"), train, count=40)
    images = zoo.render(train, list(range(len(train)))).reshape(len(train), -1).double()
    mean_psnr = float((-10.0 * torch.log10((images - images.mean(0)).square().mean(1))).median())
    sample_psnr = float(r.psnr.median())
    print(f"samples {sample_psnr:.1f} dB, mean image {mean_psnr:.1f} dB, max {float(r.psnr.max()):.1f} dB")
    assert sample_psnr > mean_psnr + MARGIN_DB
    assert float(r.psnr.max()) < 40.0  # none a copy of a training INR's image
