"""End to end through the CLI: `zoo build` a tiny phase grid, `zoo landscape`, `zoo phases`."""

import json

import numpy as np
import pytest

import zoo
from zoo.commands.main import main


@pytest.mark.slow
def test_build_landscape_phases_end_to_end(tmp_path, capsys):
    out = tmp_path / "phase-tiny.zarr"
    rc = main(
        [
            "build",
            "recipe=tiny",
            f"out={out}",
            "progress=false",
            "recipe.widths=[4,16]",
            "recipe.batch_sizes=[16,256]",
            "recipe.seeds=2",
            "recipe.epochs=3",
        ]
    )
    assert rc == 0
    rc = main(
        ["landscape", str(out), "probes=4", "power_iters=5", "bezier_steps=10", "batches=2", "batch_size=64", "--quiet"]
    )
    assert rc == 0
    z = zoo.open(str(out))
    land = z.landscape
    assert land is not None and len(land) == len(z.models) == 8
    assert (
        land[["train_loss", "hessian_trace", "hessian_top_eigenvalue", "mode_connectivity", "cka"]].notna().all().all()
    )
    # the landscape's train loss at the last checkpoint is the trainer's own final train loss
    merged = z.models.merge(land, on="model_id", suffixes=("_store", ""))
    assert np.allclose(merged["train_loss"], merged["train_loss_store"], rtol=1e-3, atol=1e-5)
    assert np.allclose(merged["test_acc"], merged["test_acc_store"], atol=1e-6)
    # cell values repeat on both seeds of a cell; phases are among the five labels
    for _, cell in merged.groupby(["width", "batch_size"]):
        assert cell["mode_connectivity"].nunique() == 1 and cell["phase"].nunique() == 1
    assert set(land["phase"]) <= {"I", "II", "III", "IV-A", "IV-B"}
    batches = z.table("landscape_batches")
    assert len(batches) == 128 and batches["index"].nunique() == 128

    rc = main(["phases", str(out), "--out", str(tmp_path / "diagram"), "phases.mc_tol=0.05"])
    assert rc == 0
    data = json.loads((tmp_path / "diagram" / "phases.json").read_text())
    assert (tmp_path / "diagram" / "phases.png").stat().st_size > 10_000
    assert data["widths"] == [4, 16] and data["temperatures"] == [16, 256] and len(data["cells"]) == 4
    assert data["cutoffs"]["mc_tol"] == 0.05
    assert sum(data["phase_counts"].values()) == 4


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["landscape", str(tmp_path / "missing.zarr")]) == 2
    assert "zoo landscape: error:" in capsys.readouterr().err
    assert main(["landscape", str(tmp_path / "x.zarr"), "probes"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(["phases", str(tmp_path / "x.zarr")]) == 2  # --out missing
    assert "--out" in capsys.readouterr().err


def test_landscape_of_a_regression_zoo(tmp_path):
    """Sine regression: MSE loss, R^2 named as such (no accuracy columns), gap = test loss - train loss."""
    out = tmp_path / "sine.zarr"
    assert (
        main(
            [
                "build",
                "recipe=tiny",
                f"out={out}",
                "progress=false",
                "recipe.dataset=sine-regression",
                "recipe.widths=[8]",
                "recipe.seeds=2",
                "recipe.epochs=2",
                "recipe.checkpoint_epochs=[0,2]",
            ]
        )
        == 0
    )
    z = zoo.open(str(out))
    from zoo.landscape.compute import compute_landscape

    df = compute_landscape(z, {"probes": 4, "power_iters": 5, "bezier_steps": 5, "batches": 1, "batch_size": 64})
    assert np.allclose(df["train_loss"], z.models["train_loss"], rtol=1e-3, atol=1e-6)
    assert np.allclose(df["generalization_gap"], df["test_loss"] - df["train_loss"], atol=1e-6)
    assert "train_acc" not in df and "test_acc" not in df
    assert np.allclose(df["test_r2"], z.models["test_r2"], rtol=1e-5, atol=1e-6)
    assert (df["train_r2"] <= 1).all() and df["hessian_trace"].gt(0).all() and df["cka"].between(0, 1.0001).all()
