"""`zoo diagnose` on INR zoos (issue 22 item 6): PSNR to the data and to the nearest training render instead of
test accuracy, beside the weight-space nearest-neighbour distance; copies must read as copies."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import zoo
from generators.diagnose.inr_report import PSNR_CAP, nearest_psnr, training_images
from tests.conftest import build_zoo, run_cli
from tests.generators.diagnose.test_diagnose import write_samples

INR = ["recipe=inr-digits", "recipe.max_images=24"]  # the recipe's 100 full-batch steps: fits far above 40 dB


@pytest.fixture(scope="module")
def inr_zoo(tmp_path_factory) -> zoo.Zoo:
    """24 SIRENs of the first 8x8 digits (20 training and 4 test images), fitted as the recipe fits them."""
    return build_zoo(str(tmp_path_factory.mktemp("inrdiag") / "inr.zarr"), *INR)


def write_inr_samples(path, z: zoo.Zoo, weights: torch.Tensor) -> str:
    """A samples zoo holding INR ``weights`` [n, P] in the training zoo's layout, recording its image shape."""
    return write_samples(path, z, weights, attrs={"inr": dict(z.attrs["inr"])})


def test_training_images_are_what_each_inr_was_fitted_on(inr_zoo):
    ids = np.arange(len(inr_zoo))
    images = training_images(inr_zoo, ids)
    d = zoo.load_dataset("digits-image")
    every = torch.cat([d.X_train, d.X_test])[:, 0]
    assert torch.equal(images, every[torch.as_tensor(inr_zoo.models["image"].to_numpy().copy())])
    # each INR's PSNR to its own image is the PSNR its fit recorded
    psnr, arg = nearest_psnr(zoo.render(inr_zoo, ids.tolist()), images)
    m = inr_zoo.metrics
    stored = m[m["checkpoint"] == m["checkpoint"].max()].sort_values("model_id")["psnr"].to_numpy()
    assert np.array_equal(arg.numpy(), ids) and np.allclose(psnr.numpy(), stored, atol=0.05)


def test_copies_noise_and_the_psnr_table(inr_zoo, tmp_path, capsys):
    raw = inr_zoo.weights(list(range(len(inr_zoo))))
    copies = write_inr_samples(tmp_path / "copies.zarr", inr_zoo, raw[:6])
    out = tmp_path / "diag"
    rc, text, err = run_cli(capsys, "diagnose", copies, "--train", inr_zoo.path, "--out", str(out), "--n-baseline", "8")
    assert rc == 0, err
    head = next(line for line in text.splitlines() if line.startswith("method"))
    for column in ("psnr_data dB", "psnr_render dB", "nn_l2", "nn_l2/med", "nearer than train"):
        assert column in head
    assert "test_acc" not in text
    report = json.loads((out / "diagnose.json").read_text())
    assert report["kind"] == "inr" and (out / "psnr_vs_novelty.png").read_bytes()[:4] == b"\x89PNG"
    methods, per = report["methods"], report["per_sample"]
    assert list(methods) == ["train", "copies", "noise-40dB", "noise-30dB", "noise-20dB", "average", "gaussian"]
    # exact copies: the nearest training render is their own (PSNR at the cap), weight distance 0
    c = per["copies"]
    assert c["nearest_render_train_id"] == list(range(6)) and min(c["psnr_render"]) == PSNR_CAP
    assert max(c["nn_l2"]) < 1e-4 and methods["copies"]["nearer_than_train"] == 1.0
    assert np.allclose(c["psnr_data"], per["train"]["psnr_data"][:6])
    # the nearest noise level is a near copy; the noise levels order by their PSNR, as chosen
    med = report["thresholds"]["train_psnr_render_median"]
    noise = [methods[f"noise-{t}dB"]["psnr_render"]["mean"] for t in (40, 30, 20)]
    assert noise[0] > med + 5 and noise[0] > noise[1] > noise[2]
    assert methods["noise-40dB"]["nearer_than_train"] == 1.0
    chosen = report["baselines"]["noise"]
    assert all(t <= chosen["psnr_to_own_image"][f"{t}dB"] < t + 0.5 for t in (40, 30, 20))  # fits are ~60 dB
    # weight-space novelty of the nearest noise: the norm of the noise it was built with (its source is found)
    size = int(inr_zoo.layouts[report["layout"]].parameter_mask().sum())
    norm = chosen["sigmas"]["40dB"] * size**0.5
    assert abs(methods["noise-40dB"]["nn_l2"]["median"] / norm - 1) < 0.1
    # the training INRs' nearest OTHER render is another image: far below a copy
    assert med < 40 and all(i != j for i, j in zip(per["train"]["model_id"], per["train"]["nearest_render_train_id"]))


def test_bad_inr_inputs_are_one_line_errors(inr_zoo, tiny_zoo, tmp_path, capsys):
    copies = write_inr_samples(tmp_path / "c.zarr", inr_zoo, inr_zoo.weights([0, 1]))
    cases = [
        ([copies, "--train", inr_zoo.path, "--noise-psnr", "40,x"], "--noise-psnr"),
        ([copies, "--train", inr_zoo.path, "--noise-psnr", "0"], "--noise-psnr must be dB"),
        ([copies, "--train", inr_zoo.path, "--recalibrate-bn"], "no BatchNorm"),
        ([tiny_zoo.path, "--train", inr_zoo.path], "holds no INRs"),
        (["--train", tiny_zoo.path, "--noise-psnr", "30"], "is for INR zoos"),
    ]
    for args, message in cases:
        rc, _, err = run_cli(capsys, "diagnose", *args, "--out", str(tmp_path / "o"))
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and message in lines[0], (args, err)
