"""Datasets by name and users' .npz files: deterministic splits, one-line errors."""

import numpy as np
import pytest
import torch

from zoo import ZooError, load_dataset
from zoo.datasets import DATASETS, FIXED_SPLIT


@pytest.mark.parametrize("name", DATASETS + ("digits-classes-13579", "make-classification-3"))
def test_every_dataset_loads_deterministically(name):
    a, b = load_dataset(name, seed=0), load_dataset(name, seed=0)
    assert a.fingerprint == b.fingerprint and torch.equal(a.X_train, b.X_train)
    assert len(a.X_train) > 0 and len(a.X_test) > 0 and a.X_train.dtype == torch.float32
    if a.kind == "classification":
        assert a.y_train.dtype == torch.int64 and a.num_outputs >= 2
    else:
        assert a.y_train.shape == (len(a.X_train), 1)
    other = load_dataset(name, seed=1).fingerprint
    # a dataset that carries its own split is the same data for every task seed; the others re-split
    assert (other == a.fingerprint) == (name in FIXED_SPLIT)


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
    with pytest.raises(ZooError, match="unknown dataset 'mnits'.*IDX"):
        load_dataset("mnits")


def _npz(path, y_train, y_test, X_test=None):
    n, m = len(y_train), len(y_test)
    X_test = np.zeros((m, 2)) if X_test is None else X_test
    np.savez(path, X_train=np.ones((n, 2)), y_train=np.asarray(y_train), X_test=X_test, y_test=np.asarray(y_test))
    return str(path)


def test_test_classes_missing_from_training_are_refused(tmp_path):
    """Before, such a split built silently with test accuracy 0.0."""
    with pytest.raises(ZooError, match=r"test labels 2, 3 never occur in the training split"):
        load_dataset(_npz(tmp_path / "a.npz", [0, 1, 0, 1], [2, 3, 0]))
    # the other way round is fine: a class the test split lacks is still learnt
    d = load_dataset(_npz(tmp_path / "b.npz", [0, 1, 2, 2], [0, 1]))
    assert d.num_outputs == 3


@pytest.mark.parametrize(
    "y_train, X_test, match",
    [
        ([0, -1, 1], None, "non-negative"),
        ([0, 1, 1], np.array([[0.0, np.nan]] * 2), "X_test holds NaN"),
        ([True, False, True], None, None),  # booleans are the labels 0 and 1
    ],
)
def test_label_and_value_checks(tmp_path, y_train, X_test, match):
    path = _npz(tmp_path / "c.npz", y_train, [0, 1], X_test)
    if match is None:
        assert load_dataset(path).num_outputs == 2
    else:
        with pytest.raises(ZooError, match=match):
            load_dataset(path)


def test_a_path_is_recorded_absolute(tmp_path, monkeypatch):
    _npz(tmp_path / "rel.npz", [0, 1, 0, 1], [0, 1])
    monkeypatch.chdir(tmp_path)
    d = load_dataset("rel.npz")
    assert d.location == str(tmp_path / "rel.npz") and d.key == d.location and d.name == "rel.npz"
    assert load_dataset("digits").key == "digits"  # names stay names
