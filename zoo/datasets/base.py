"""The dataset type every loader ends in, the metric names per dataset kind, and the checks and fingerprint
that every dataset passes through (``finish``), whichever loader read it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from zoo.errors import ZooError

# The one spelling of the per-model metrics a zoo stores, by dataset kind (the store, the trainer, the landscape
# and every writer of samples use these): regression has no accuracy, so it reports R^2, named as such.
CLASSIFICATION_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
REGRESSION_METRICS = ("train_loss", "test_loss", "train_r2", "test_r2")
# an INR (zoo.inr) is fitted to all pixels of its one image: its fit error and PSNR (peak 1), no held-out data
INR_METRICS = ("mse", "psnr")
ALL_METRICS = tuple(dict.fromkeys(CLASSIFICATION_METRICS + REGRESSION_METRICS + INR_METRICS))

MAX_CLASSES = 100_000  # a label beyond this is a data error, not a 10^9-way classifier


def metric_names(kind: str) -> tuple[str, ...]:
    """The metrics a zoo of models trained on a dataset of this kind ("classification" | "regression" | "inr")
    stores."""
    if kind == "inr":
        return INR_METRICS
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
    location: str = ""  # a name, or the absolute path the data was read from: reloads it with ``seed``
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


@dataclass(frozen=True)
class Arrays:
    """What a loader read, before checks: numpy train/test arrays; ``num_outputs`` when the data defines its
    class count (CIFAR-100 has 100 classes even where a split lacks some), else labels' max + 1."""

    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    regression: bool = False
    num_outputs: int | None = None


def finish(arrays: Arrays, name: str, location: str, seed: int) -> Dataset:
    """Tensors, the label checks and the fingerprint (sha256 of each array's shape and bytes, train then test).

    Classification labels must be integers 0..classes-1, and every class of the test split must occur in the
    training split (a model cannot learn a class it never sees: its test accuracy would be silently low).
    X and regression targets must be finite.
    """
    a = arrays
    X_tr, X_te = (torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32) for x in (a.X_train, a.X_test))
    if a.regression:
        y_tr, y_te = (
            torch.as_tensor(np.asarray(y, dtype=np.float32).reshape(len(y), -1)) for y in (a.y_train, a.y_test)
        )
        num_outputs, kind = int(y_tr.shape[1]), "regression"
    else:
        for y, part in ((a.y_train, "y_train"), (a.y_test, "y_test")):
            if np.asarray(y).dtype.kind not in "iub":
                raise ZooError(f"dataset {name!r}: class labels {part} must be integers, got {np.asarray(y).dtype}")
        y_tr, y_te = (torch.as_tensor(np.asarray(y).astype(np.int64)) for y in (a.y_train, a.y_test))
        if min(int(y_tr.min()), int(y_te.min())) < 0:
            raise ZooError(f"dataset {name!r}: class labels must be non-negative integers")
        top = int(max(int(y_tr.max()), int(y_te.max())))
        if top + 1 > MAX_CLASSES:
            raise ZooError(
                f"dataset {name!r}: class label {top} implies more than {MAX_CLASSES:,} classes;"
                " labels must be 0..classes-1"
            )
        num_outputs, kind = (top + 1 if a.num_outputs is None else int(a.num_outputs)), "classification"
        if top >= num_outputs:
            raise ZooError(f"dataset {name!r}: class label {top} is out of range for its {num_outputs} classes")
        unseen = sorted(set(torch.unique(y_te).tolist()) - set(torch.unique(y_tr).tolist()))
        if unseen:
            shown = ", ".join(map(str, unseen[:10])) + (", ..." if len(unseen) > 10 else "")
            raise ZooError(
                f"dataset {name!r}: test labels {shown} never occur in the training split, so no model can learn"
                " them; put examples of every test class into training"
            )
    for t, part in ((X_tr, "X_train"), (y_tr, "y_train"), (X_te, "X_test"), (y_te, "y_test")):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ZooError(f"dataset {name!r}: {part} holds NaN or inf values")
    h = hashlib.sha256()
    for t in (X_tr, y_tr, X_te, y_te):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return Dataset(name, X_tr, y_tr, X_te, y_te, kind, num_outputs, h.hexdigest(), location, int(seed))
