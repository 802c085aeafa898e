"""Datasets a zoo is trained on: bundled scikit-learn data, generated ones (modular arithmetic, function
regression), families of related tasks (digit-class subsets, seeded ``make_classification`` tasks) and
users' own ``.npz`` files.

``load_dataset(name_or_path, seed)`` returns tensors and a fingerprint (sha256 of the arrays and the
recipe of the split), so a store can tell whether the data it was built on is the data at hand.
Splits are deterministic in the seed; nothing is downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from zoo.errors import ZooError

TEST_FRACTION = 0.2

# The one spelling of the per-model metrics a zoo stores, by dataset kind (the store, the trainer, the landscape
# and every writer of samples use these): regression has no accuracy, so it reports R^2, named as such.
CLASSIFICATION_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
REGRESSION_METRICS = ("train_loss", "test_loss", "train_r2", "test_r2")
ALL_METRICS = tuple(dict.fromkeys(CLASSIFICATION_METRICS + REGRESSION_METRICS))


def metric_names(kind: str) -> tuple[str, ...]:
    """The metrics a zoo of models trained on a dataset of this kind ("classification" | "regression") stores."""
    return REGRESSION_METRICS if kind == "regression" else CLASSIFICATION_METRICS


@dataclass(frozen=True)
class Dataset:
    """Train/test tensors of one dataset. Classification: y int64 labels; regression: y float32 [n, k]."""

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    kind: str  # "classification" | "regression"
    num_outputs: int
    fingerprint: str
    location: str = ""  # what load_dataset was given (a name or a .npz path): reloads it with ``seed``
    seed: int = 0

    @property
    def key(self) -> str:
        """The name a zoo records this dataset under and reloads it by: its location, else its name."""
        return self.location or self.name

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.X_train.shape[1:])

    def __iter__(self):
        """Unpack as ``X_train, y_train, X_test, y_test, fingerprint``."""
        return iter((self.X_train, self.y_train, self.X_test, self.y_test, self.fingerprint))


def _split(X: np.ndarray, y: np.ndarray, seed: int, stratify: bool):
    from sklearn.model_selection import train_test_split

    return train_test_split(X, y, test_size=TEST_FRACTION, random_state=seed, stratify=y if stratify else None)


def _standardize(X_tr: np.ndarray, X_te: np.ndarray):
    mu, sd = X_tr.mean(0), X_tr.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    return (X_tr - mu) / sd, (X_te - mu) / sd


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits scaled to [0, 1] (read once: a 250-task zoo loads it 250 times)."""
    from sklearn import datasets

    d = datasets.load_digits()
    X, y = (d.data / 16.0).astype(np.float32), np.asarray(d.target)
    X.flags.writeable = y.flags.writeable = False
    return X, y


def _sklearn_dataset(name: str, seed: int):
    from sklearn import datasets

    if name in ("digits", "digits-image"):
        X, y = _digits()
        if name == "digits-image":
            X = X.reshape(-1, 1, 8, 8)
        return (*_split(X, y, seed, True), False)
    if name in ("wine", "breast-cancer"):
        d = datasets.load_wine() if name == "wine" else datasets.load_breast_cancer()
        X_tr, X_te, y_tr, y_te = _split(d.data.astype(np.float64), d.target, seed, True)
        X_tr, X_te = _standardize(X_tr, X_te)
        return X_tr, X_te, y_tr, y_te, False
    if name in ("moons", "circles"):
        if name == "moons":
            X, y = datasets.make_moons(n_samples=1000, noise=0.2, random_state=seed)
        else:
            X, y = datasets.make_circles(n_samples=1000, noise=0.1, factor=0.5, random_state=seed)
        return (*_split(X, y, seed, True), False)
    return None


def _modular_addition(p: int = 31, train_fraction: float = 0.5, seed: int = 0):
    """All pairs (a, b) with label (a+b) mod p; operands one-hot, concatenated: input 2p."""
    grid_a, grid_b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = grid_a.ravel(), grid_b.ravel()
    X = np.concatenate([np.eye(p)[a], np.eye(p)[b]], axis=1).astype(np.float32)
    y = (a + b) % p
    perm = np.random.default_rng(seed).permutation(len(y))
    n_tr = int(round(train_fraction * len(y)))
    tr, te = perm[:n_tr], perm[n_tr:]
    return X[tr], X[te], y[tr], y[te], False


def _sine_regression(n: int = 1000, noise: float = 0.05, seed: int = 0):
    """y = sin(x) + noise for x uniform in [-pi, pi]: a smooth one-dimensional function fit."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-np.pi, np.pi, size=(n, 1))
    y = np.sin(x) + noise * rng.standard_normal((n, 1))
    return (*_split(x, y, seed, False), True)


def _npz_dataset(path: str):
    if not os.path.exists(path):
        raise ZooError(f"dataset file {path!r} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ZooError(
                f"dataset file {path!r} holds a single .npy array, not an .npz archive with X_train,"
                " y_train, X_test, y_test (write it with numpy.savez)"
            )
        with loaded as f:
            missing = [k for k in ("X_train", "y_train", "X_test", "y_test") if k not in f.files]
            if missing:
                raise ZooError(f"dataset file {path!r} lacks arrays {missing} (needs X_train, y_train, X_test, y_test)")
            X_tr, y_tr, X_te, y_te = (np.asarray(f[k]) for k in ("X_train", "y_train", "X_test", "y_test"))
    except ZooError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ZooError(f"dataset file {path!r} is not a readable .npz file ({e.__class__.__name__}: {e})") from None
    for X, y, part in ((X_tr, y_tr, "train"), (X_te, y_te, "test")):
        if X.ndim < 2 or y.ndim < 1:
            raise ZooError(
                f"dataset file {path!r}: X_{part} must be [rows, features...] and y_{part} [rows] or"
                f" [rows, k], got shapes {X.shape} and {y.shape}"
            )
        if len(X) != len(y) or len(X) == 0:
            raise ZooError(f"dataset file {path!r}: X_{part} has {len(X)} rows but y_{part} has {len(y)}")
        if X.dtype.kind not in "fiub" or y.dtype.kind not in "fiub":
            raise ZooError(f"dataset file {path!r}: arrays must be numeric, got {X.dtype} and {y.dtype}")
    if X_tr.shape[1:] != X_te.shape[1:]:
        raise ZooError(f"dataset file {path!r}: X_train rows {X_tr.shape[1:]} differ from X_test rows {X_te.shape[1:]}")
    regression = y_tr.dtype.kind == "f" or y_te.dtype.kind == "f"
    if not regression and (y_tr.ndim != 1 or y_te.ndim != 1):
        raise ZooError(
            f"dataset file {path!r}: integer labels must be one per row ([rows]), got shapes"
            f" {y_tr.shape} and {y_te.shape} (float y means regression)"
        )
    return X_tr, X_te, y_tr, y_te, regression


DIGITS_PREFIX = "digits-classes-"
MAKE_CLASSIFICATION_PREFIX = "make-classification-"
# what every make-classification task shares (one architecture fits the family); the rest is drawn per task
MAKE_CLASSIFICATION_SHAPE = dict(n_samples=1000, n_features=20, n_classes=4)


def _digit_classes(name: str) -> list[int]:
    """The digit classes a ``digits-classes-<digits>`` name selects, in label order (one-line errors)."""
    tail = name[len(DIGITS_PREFIX) :]
    if not tail.isdigit() or not tail.isascii():
        raise ZooError(f"dataset {name!r}: after {DIGITS_PREFIX!r} come the digit classes, e.g. digits-classes-01234")
    classes = [int(c) for c in tail]
    if len(set(classes)) != len(classes):
        raise ZooError(f"dataset {name!r} repeats a digit class; each of 0-9 may appear once")
    if len(classes) < 2:
        raise ZooError(f"dataset {name!r} has {len(classes)} class; a task needs at least 2 digits")
    return classes


def _digits_subset(name: str, seed: int):
    """The k-way task on some digit classes: label = position of the class in the name (13579: 1->0, 3->1...),
    split like ``digits`` (stratified, ``seed``)."""
    classes = _digit_classes(name)
    X, y = _digits()
    keep = np.isin(y, classes)
    relabel = np.full(10, -1, dtype=np.int64)
    relabel[classes] = np.arange(len(classes))
    return (*_split(X[keep], relabel[y[keep]], seed, True), False)


def _task_seed(name: str) -> int:
    tail = name[len(MAKE_CLASSIFICATION_PREFIX) :]
    if not (tail.isascii() and tail.isdigit()) or str(int(tail)) != tail or int(tail) >= 2**32:
        raise ZooError(
            f"dataset {name!r}: after {MAKE_CLASSIFICATION_PREFIX!r} comes a task seed 0..2^32-1 without"
            " leading zeros, e.g. make-classification-7"
        )
    return int(tail)


def make_classification_params(task_seed: int) -> dict:
    """scikit-learn ``make_classification`` arguments of one task of the family, drawn from its seed."""
    rng = np.random.default_rng([20_251_125, int(task_seed)])
    return dict(
        MAKE_CLASSIFICATION_SHAPE,
        n_informative=int(rng.integers(4, 11)),
        n_redundant=int(rng.integers(0, 5)),
        n_clusters_per_class=int(rng.integers(1, 3)),
        class_sep=float(rng.uniform(0.7, 1.5)),
        flip_y=float(rng.uniform(0.0, 0.06)),
        random_state=int(task_seed),
    )


def _make_classification(name: str, seed: int):
    """One seeded ``make_classification`` task (20 features, 4 classes), split by ``seed`` (stratified) and
    standardized on the training split's statistics."""
    from sklearn.datasets import make_classification

    X, y = make_classification(**make_classification_params(_task_seed(name)))
    X_tr, X_te, y_tr, y_te = _split(X, y, seed, True)
    X_tr, X_te = _standardize(X_tr, X_te)
    return X_tr, X_te, y_tr, y_te, False


MAX_CLASSES = 100_000  # a label beyond this is a data error, not a 10^9-way classifier


DATASETS = (
    "digits",
    "digits-image",
    "wine",
    "breast-cancer",
    "moons",
    "circles",
    "modular-addition",
    "sine-regression",
)
# families of related tasks, as name patterns (members load like any dataset; see expand_dataset_names)
FAMILIES = (DIGITS_PREFIX + "<digits, e.g. 01234>", MAKE_CLASSIFICATION_PREFIX + "<task seed>")
_CHOOSE = re.compile(re.escape(DIGITS_PREFIX) + r"choose(\d+)$")
_RANGE = re.compile(re.escape(MAKE_CLASSIFICATION_PREFIX) + r"(\d+)\.\.(\d+)$")
MAX_EXPANDED = 100_000


def _expand(entry: str) -> list[str] | None:
    """The members a pattern entry stands for, in a fixed order; None when ``entry`` is no pattern."""
    m = _CHOOSE.match(entry)
    if m:
        k = int(m.group(1))
        if not 2 <= k <= 10:
            raise ZooError(f"dataset pattern {entry!r}: choose 2..10 of the 10 digit classes")
        return [DIGITS_PREFIX + "".join(map(str, c)) for c in itertools.combinations(range(10), k)]
    m = _RANGE.match(entry)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if hi < lo or hi - lo >= MAX_EXPANDED:
            raise ZooError(
                f"dataset pattern {entry!r}: a range a..b of task seeds with a <= b and fewer than"
                f" {MAX_EXPANDED:,} tasks"
            )
        return [f"{MAKE_CLASSIFICATION_PREFIX}{s}" for s in range(lo, hi + 1)]
    return None


def expand_dataset_names(entries: Iterable[str], held_out: Sequence[str] = ()) -> list[str]:
    """Dataset names of a recipe's ``datasets`` list with its patterns expanded, held-out tasks left out.

    Patterns: ``digits-classes-choose<k>`` (every k-of-10 digit subset, lexicographic) and
    ``make-classification-<a>..<b>`` (task seeds a to b, both included). A held-out name never enters the
    list: patterns skip it and naming it outright is an error, so a zoo cannot train on its own held-out tasks.
    A name listed twice (directly or through patterns) is an error.
    """
    held = set(str(h) for h in held_out)
    out: list[str] = []
    for entry in entries:
        entry = str(entry)
        members = _expand(entry)
        if members is None:
            if entry in held:
                raise ZooError(f"dataset {entry!r} is listed both in recipe.datasets and in recipe.held_out")
            members = [entry]
        out.extend(m for m in members if m not in held)
    seen: set[str] = set()
    for name in out:
        if name in seen:
            raise ZooError(f"dataset {name!r} appears twice in recipe.datasets (directly or through a pattern)")
        seen.add(name)
    if not out:
        raise ZooError(f"recipe.datasets {list(entries)} leaves no dataset once the held-out tasks are removed")
    return out


def load_dataset(name_or_path: str, seed: int = 0) -> Dataset:
    """Load a named dataset or a ``.npz`` file with X_train, y_train, X_test, y_test (deterministic in seed)."""
    name = str(name_or_path)
    if name.endswith(".npz") or os.sep in name:
        X_tr, X_te, y_tr, y_te, regression = _npz_dataset(name)
    elif name == "modular-addition":
        X_tr, X_te, y_tr, y_te, regression = _modular_addition(seed=seed)
    elif name == "sine-regression":
        X_tr, X_te, y_tr, y_te, regression = _sine_regression(seed=seed)
    elif _expand(name) is not None:
        raise ZooError(f"{name!r} is a pattern for several datasets (it belongs in recipe.datasets), not one dataset")
    elif name.startswith(DIGITS_PREFIX):
        X_tr, X_te, y_tr, y_te, regression = _digits_subset(name, seed)
    elif name.startswith(MAKE_CLASSIFICATION_PREFIX):
        X_tr, X_te, y_tr, y_te, regression = _make_classification(name, seed)
    else:
        out = _sklearn_dataset(name, seed)
        if out is None:
            raise ZooError(
                f"unknown dataset {name!r}; choose one of {list(DATASETS)}, a family member"
                f" {list(FAMILIES)} or give a path to a .npz file"
            )
        X_tr, X_te, y_tr, y_te, regression = out
    X_tr, X_te = (torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32) for a in (X_tr, X_te))
    if regression:
        y_tr, y_te = (torch.as_tensor(np.asarray(a, dtype=np.float32).reshape(len(a), -1)) for a in (y_tr, y_te))
        num_outputs, kind = int(y_tr.shape[1]), "regression"
    else:
        y_tr, y_te = (torch.as_tensor(np.asarray(a).astype(np.int64)) for a in (y_tr, y_te))
        if min(int(y_tr.min()), int(y_te.min())) < 0:
            raise ZooError(f"dataset {name!r}: class labels must be non-negative integers")
        num_outputs, kind = int(max(int(y_tr.max()), int(y_te.max())) + 1), "classification"
        if num_outputs > MAX_CLASSES:
            raise ZooError(
                f"dataset {name!r}: class label {num_outputs - 1} implies more than {MAX_CLASSES:,} classes;"
                " labels must be 0..classes-1"
            )
        if name == "modular-addition":
            num_outputs = X_tr.shape[1] // 2  # p classes even if a residue is missing from a split
    for t, part in ((X_tr, "X_train"), (y_tr, "y_train"), (X_te, "X_test"), (y_te, "y_test")):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ZooError(f"dataset {name!r}: {part} holds NaN or inf values")
    h = hashlib.sha256()
    for t in (X_tr, y_tr, X_te, y_te):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return Dataset(
        os.path.basename(name) if name.endswith(".npz") else name,
        X_tr,
        y_tr,
        X_te,
        y_te,
        kind,
        num_outputs,
        h.hexdigest(),
        name,
        int(seed),
    )
