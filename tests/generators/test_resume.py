"""An interrupted `zoo fit` resumes for real from its last full checkpoint (issue 27): re-run into the same folder
with the same settings it continues at the checkpoint's step and ends with the bits of an uninterrupted fit (the
same computation: the random states and the sampler's generator travel in the checkpoint); otherwise it says it
restarts from scratch."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import generators
import zoo
from generators.lit import EMA
from tests.conftest import build_zoo

SETTINGS = {
    "hidden": 32,
    "time_dim": 16,
    "val_samples": 4,
    "steps_per_epoch": 15,
    "snapshot_every_n_steps": 5,
    "threads": 1,
    "trainer.max_epochs": 3,
    "trainer.enable_progress_bar": False,
    "early_stopping.patience": 10,
}

CLI = [  # SETTINGS as `zoo fit` overrides
    "generator.hidden=32",
    "generator.time_dim=16",
    "generator.val_samples=4",
    "steps_per_epoch=15",
    "snapshot_every_n_steps=5",
    "threads=1",
    "trainer.max_epochs=3",
    "trainer.enable_progress_bar=false",
    "early_stopping.patience=10",
]


@pytest.fixture(scope="module")
def mlp_zoo(tmp_path_factory) -> zoo.Zoo:
    """10 digits MLPs of one layout (width 8)."""
    return build_zoo(
        str(tmp_path_factory.mktemp("resume") / "z.zarr"),
        "recipe.widths=[8]",
        "recipe.seeds=5",
        "recipe.learning_rates=[0.05,0.1]",
    )


@pytest.fixture(scope="module")
def uninterrupted(mlp_zoo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "full"
    generators.fit("dwf", mlp_zoo.path, out=str(out), **SETTINGS)
    return out


class Killed(RuntimeError):
    """What the simulated kill raises."""


def _same_files(a: Path, b: Path) -> None:
    """Weights, snapshots and metrics of two run folders are the same bits."""
    for rel in ["model.safetensors", *(f"snapshots/{p.name}" for p in sorted((a / "snapshots").iterdir()))]:
        x, y = load_file(str(a / rel)), load_file(str(b / rel))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), rel
    assert sorted(p.name for p in (a / "snapshots").iterdir()) == sorted(p.name for p in (b / "snapshots").iterdir())
    pd.testing.assert_frame_equal(pd.read_csv(a / "metrics.csv"), pd.read_csv(b / "metrics.csv"))


def test_killed_fit_resumes_from_its_checkpoint_with_the_bits_of_an_uninterrupted_fit(
    mlp_zoo, uninterrupted, tmp_path, monkeypatch, capfd
):
    """Killed at the end of its second epoch (last.ckpt holds the first), the re-run says it resumes at step 15
    and every weight, snapshot and metric equals the uninterrupted fit's: resuming is the same computation."""
    out = tmp_path / "run"
    end, seen = EMA.on_validation_end, []

    def killed(self, trainer, pl_module):
        end(self, trainer, pl_module)
        seen.append(trainer.current_epoch)
        if len(seen) == 2:
            raise Killed("killed in the second epoch")

    with monkeypatch.context() as m:
        m.setattr(EMA, "on_validation_end", killed)
        with pytest.raises(Killed):
            generators.fit("dwf", mlp_zoo.path, out=str(out), **SETTINGS)
    assert (out / "INCOMPLETE").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    capfd.readouterr()
    # overwrite=true only lets a FINISHED run be replaced: an interrupted one still resumes
    generators.fit("dwf", mlp_zoo.path, out=str(out), overwrite=True, **SETTINGS)
    assert "resuming the interrupted fit from its last checkpoint (step 15, epoch 0)" in capfd.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] == 15 and summary["steps"] == 45
    assert not (out / "INCOMPLETE").exists() and not (out / "checkpoints" / "metrics-before-resume.csv").exists()
    _same_files(uninterrupted, out)


def test_interrupted_fit_with_other_settings_says_it_restarts(mlp_zoo, uninterrupted, tmp_path, monkeypatch, capfd):
    """A re-run with a different seed cannot continue the killed fit: it says 'restarting from scratch', keeps
    none of the killed fit's snapshots or metrics, and ends like a fresh fit with that seed."""
    out = tmp_path / "run"
    end = EMA.on_validation_end

    def killed(self, trainer, pl_module):
        end(self, trainer, pl_module)
        raise Killed("killed after the first epoch")

    with monkeypatch.context() as m:
        m.setattr(EMA, "on_validation_end", killed)
        with pytest.raises(Killed):
            generators.fit("dwf", mlp_zoo.path, out=str(out), **{**SETTINGS, "seed": 1})
    capfd.readouterr()
    generators.fit("dwf", mlp_zoo.path, out=str(out), **SETTINGS)
    err = capfd.readouterr().err
    assert "the earlier fit was interrupted and its settings or training models differ" in err
    assert "restarting from scratch" in err and "resuming" not in err
    assert json.loads((out / "summary.json").read_text())["resumed_from_step"] is None
    _same_files(uninterrupted, out)  # seed 0 from scratch: nothing of the seed-1 fit left


def test_truncated_last_checkpoint_restarts_from_scratch(mlp_zoo, uninterrupted, tmp_path, capfd):
    """A last.ckpt that cannot be read (a disk error; our own writes are atomic) is not resumed from."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    (out / "INCOMPLETE").write_text("killed\n")
    last = out / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    capfd.readouterr()
    generators.fit("dwf", mlp_zoo.path, out=str(out), **SETTINGS)
    assert "saved no readable checkpoint; restarting from scratch" in capfd.readouterr().err
    _same_files(uninterrupted, out)
