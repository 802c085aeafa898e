"""Datasets: bundled data, generated ones, users' .npz files; deterministic splits."""

import numpy as np
import pytest
import torch

from zoo import ZooError, load_dataset
from zoo.datasets import DATASETS


@pytest.mark.parametrize("name", DATASETS + ("digits-classes-13579", "make-classification-3"))
def test_every_dataset_loads_deterministically(name):
    a, b = load_dataset(name, seed=0), load_dataset(name, seed=0)
    assert a.fingerprint == b.fingerprint and torch.equal(a.X_train, b.X_train)
    assert len(a.X_train) > 0 and len(a.X_test) > 0 and a.X_train.dtype == torch.float32
    if a.kind == "classification":
        assert a.y_train.dtype == torch.int64 and a.num_outputs >= 2
    else:
        assert a.y_train.shape == (len(a.X_train), 1)
    assert load_dataset(name, seed=1).fingerprint != a.fingerprint


def test_shapes_and_standardization():
    assert load_dataset("digits").input_shape == (64,)
    assert load_dataset("digits-image").input_shape == (1, 8, 8)
    wine = load_dataset("wine")
    assert torch.allclose(wine.X_train.mean(0), torch.zeros(13), atol=1e-5)
    assert load_dataset("modular-addition").num_outputs == 31


def test_user_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(
        path,
        X_train=rng.normal(size=(40, 3)),
        y_train=rng.integers(0, 4, 40),
        X_test=rng.normal(size=(10, 3)),
        y_test=rng.integers(0, 4, 10),
    )
    t = load_dataset(str(path))
    assert t.kind == "classification" and t.num_outputs == 4 and t.input_shape == (3,)
    np.savez(
        path,
        X_train=rng.normal(size=(40, 3)),
        y_train=rng.normal(size=40),
        X_test=rng.normal(size=(10, 3)),
        y_test=rng.normal(size=10),
    )
    assert load_dataset(str(path)).kind == "regression"


@pytest.mark.parametrize("case", ["missing", "garbage", "keys", "rows", "pickle"])
def test_bad_npz_files_are_clear_errors(tmp_path, case):
    path = tmp_path / "bad.npz"
    if case == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif case == "keys":
        np.savez(path, X_train=np.zeros((4, 2)), y_train=np.zeros(4, dtype=int))
    elif case == "rows":
        np.savez(
            path,
            X_train=np.zeros((4, 2)),
            y_train=np.zeros(3, dtype=int),
            X_test=np.zeros((2, 2)),
            y_test=np.zeros(2, dtype=int),
        )
    elif case == "pickle":
        np.savez(
            path,
            X_train=np.array([{"a": 1}], dtype=object),
            y_train=np.zeros(1, dtype=int),
            X_test=np.zeros((1, 2)),
            y_test=np.zeros(1, dtype=int),
        )
    with pytest.raises(ZooError, match="bad.npz"):
        load_dataset(str(path))


def test_unknown_dataset_name():
    with pytest.raises(ZooError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")
