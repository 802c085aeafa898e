"""Bad configs and bad data are refused up front: one line, exit 2, nothing created."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from zoo.app.config import compose
from zoo.commands.main import main as zoo_main
from zoo.training.build import prepare


def _refused(capsys, out: str, *args: str) -> str:
    """Run `zoo build` in process; assert exit 2, a one-line message, and no store."""
    code = zoo_main(["build", "recipe=tiny", f"out={out}", "progress=false", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not os.path.exists(out)
    return err


@pytest.mark.parametrize(
    "override,needle",
    [
        ("recipe.widths=abc", "recipe.widths"),
        ("recipe.epochs=abc", "recipe.epochs"),
        ("threads=-1", "threads"),
        ("block_size=0", "block_size"),
        ("+recipe.nope=1", "unknown key recipe.nope"),
        ("recipe.learning_rates=[nan]", "finite number > 0"),
        ("recipe.weight_decays=[-0.1]", "recipe.weight_decays"),
        ("recipe.checkpoint_epochs=[0,9]", "within 0..3"),
        ("recipe.checkpoint_epochs=[3,1]", "increasing"),
        ("recipe.momentum=2", "recipe.momentum"),
        ("recipe.batchnorm=maybe", "true or false"),
        ("out=memory://zoos/x.zarr", "vanishes when this command exits"),
        ("+executor.n_workers=0", "executor.n_workers=0 is invalid: expected an integer >= 1 or null"),
        ("+executor.nope=1", "unknown key executor.nope"),
    ],
)
def test_bad_overrides(capsys, tmp_path, override, needle):
    assert needle in _refused(capsys, str(tmp_path / "never.zarr"), override)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_bad_data_files(capsys, tmp_path):
    X, y = np.random.default_rng(0).standard_normal((20, 3)), np.arange(20) % 2
    cases = {
        "NaN or inf": dict(X_train=np.where(X > 1.5, np.nan, X), y_train=y, X_test=X[:5], y_test=y[:5]),
        "[rows, features": dict(X_train=np.array(1.0), y_train=np.array(1), X_test=np.array(1.0), y_test=np.array(1)),
        "one per row": dict(X_train=X, y_train=np.stack([y, y], 1), X_test=X[:5], y_test=np.stack([y, y], 1)[:5]),
        "more than 100,000 classes": dict(X_train=X, y_train=y * 10**9, X_test=X[:5], y_test=y[:5]),
    }
    for needle, arrays in cases.items():
        path = _npz(tmp_path / "d.npz", **arrays)
        assert needle in _refused(
            capsys, str(tmp_path / "never.zarr"), f"recipe.dataset={path}", "recipe.batch_sizes=[4]"
        )
    np.save(tmp_path / "single.npy", X)
    shutil.move(tmp_path / "single.npy", tmp_path / "renamed.npz")
    assert "single .npy array" in _refused(
        capsys, str(tmp_path / "never.zarr"), f"recipe.dataset={tmp_path / 'renamed.npz'}", "recipe.batch_sizes=[4]"
    )


def test_resume_refuses_changed_data(capsys, tmp_path):
    X, y = np.random.default_rng(0).standard_normal((40, 3)), np.arange(40) % 2
    data = _npz(tmp_path / "mine.npz", X_train=X, y_train=y, X_test=X[:8], y_test=y[:8])
    out = str(tmp_path / "z.zarr")
    args = [f"out={out}", "recipe=tiny", "progress=false", f"recipe.dataset={data}", "recipe.batch_sizes=[8]"]
    prepare(compose("build", args))  # created, nothing trained yet: as if killed right after creation
    _npz(tmp_path / "mine.npz", X_train=X + 1, y_train=y, X_test=X[:8], y_test=y[:8])
    assert zoo_main(["build", *args]) == 2
    assert "changed since this zoo was started" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "encoder=statnn", "trainer.max_epochs=abc"], "trainer.max_epochs"),
        (["train", "encoder=statnn", "data.split=[1,0,0]"], "data.split"),
        (["train", "encoder=statnn", "optim.lr=-1"], "optim.lr"),
        (["train", "encoder.hidden=abc"], "encoder.hidden='abc' is invalid"),
        (["train", "encoder=nfn", "encoder.head=0"], "encoder.head=0 is invalid"),
        (["train", "encoder=graph", "encoder.scalers=[nope]"], "encoder.scalers"),
        (["train", "encoder=transformer", "encoder.heads=3"], "d_model=64 must be divisible by heads=3"),
        (["train", "task.loss=huber"], "task.loss='huber' is invalid: expected one of ['mse', 'bce']"),
        (["train", "augment=mixup", "augment.mixup.mode=weird"], "augment.mixup.mode='weird' is invalid"),
        (["train", "augment.noise.p=2"], "augment.noise.p=2 is invalid: expected a finite number >= 0 and <= 1"),
        (["train", "data.cache=maybe"], "data.cache='maybe' is invalid"),
        (["train", "+nope=1"], "unknown key nope"),
        (["landscape", "{zoo}", "probes=abc"], "landscape.probes"),
        (["landscape", "{zoo}", "pairs=some"], "landscape.pairs"),
        (["phases", "{zoo}", "--out", "{tmp}", "phases.mc_tol=abc"], "landscape.phases.mc_tol"),
    ],
)
def test_bad_train_landscape_and_phase_settings(tiny_zoo, tmp_path, capsys, args, needle):
    argv = [a.format(zoo=tiny_zoo.path, tmp=tmp_path / "ph") for a in args]
    if argv[0] == "train":
        argv += [f"zoo={tiny_zoo.path}", f"out={tmp_path / 'run'}"]
    assert zoo_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "ph").exists()
