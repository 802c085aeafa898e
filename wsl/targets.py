"""Prediction targets read from a zoo (what an encoder predicts), and the metrics each target reports.

A target turns the store's tables into one value per (model, checkpoint) sample; the ``zoo train`` config
group ``task`` (``task=test_accuracy``) names one of:
  test_accuracy       regression: test accuracy (test R2 for regression zoos) at that checkpoint
  generalization_gap  regression: train minus test accuracy (R2) at that checkpoint
  hyperparameter      classification: the value of a models-table column (``column``), one class each;
                      with ``regression: true`` regression on the column's value (``log: true``: its log10),
                      for drawn continuous hyperparameters (recipe.hparams: learning_rate, dropout, ...)
  phase               classification: the ``phase`` column of the zoo's ``landscape`` table
  label               classification: the ``label`` column of the models table (INR zoos: the digit an INR
                      draws; zoo.inr), split by the zoo's stored ``split`` column (wsl.data)
Regression reports Kendall tau, R2 and MSE; classification reports accuracy.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from zoo import Zoo
from zoo.app.checks import one_of, optional, typed
from zoo.app.schema import Schema, key
from zoo.errors import ZooError

TARGETS = ("test_accuracy", "generalization_gap", "hyperparameter", "phase", "label")


@dataclass
class TargetSpec:
    """What to predict: ``kind`` regression | classification; ``classes`` for classification (as strings)."""

    name: str
    kind: str
    column: str | None = None
    classes: list[str] = field(default_factory=list)
    log: bool = False  # hyperparameter regression on log10 of the column

    @property
    def out_dim(self) -> int:
        return 1 if self.kind == "regression" else len(self.classes)

    @property
    def monitor(self) -> tuple[str, str]:
        """Validation metric that picks the best checkpoint, and whether to maximize it."""
        return ("val/kendall_tau", "max") if self.kind == "regression" else ("val/acc", "max")

    def to_dict(self) -> dict:
        out = {"name": self.name, "kind": self.kind, "column": self.column, "classes": list(self.classes)}
        return {**out, "log": True} if self.log else out

    @classmethod
    def from_dict(cls, d: Mapping) -> TargetSpec:
        return cls(d["name"], d["kind"], d.get("column"), [str(c) for c in d.get("classes", [])], bool(d.get("log")))


@dataclass(frozen=True)
class TaskConfig(Schema, group="task", name="base"):
    """A conf/task/<name>.yaml: the encoder's target (null keys: the task does not use them)."""

    WHERE = "task."

    name: str = key("test_accuracy", one_of(*TARGETS), "the target (task=NAME chooses the config)")
    loss: str = key(
        "mse",
        one_of("mse", "bce"),
        "regression tasks: mse (MSE on standardized targets) | bce (sigmoid output, binary cross-entropy against a "
        "target in [0, 1]; Zhou et al. 2023's loss for accuracy prediction)",
    )
    column: str | None = key(None, optional(typed(str, "a models-table column")), "hyperparameter: the column")
    regression: bool | None = key(
        None, optional(one_of(True, False)), "hyperparameter: true regresses the column's value (null: false)"
    )
    log: bool | None = key(
        None, optional(one_of(True, False)), "hyperparameter with regression: predict log10 of the value (null: false)"
    )


def target_spec(cfg: str | Mapping) -> TargetSpec:
    """TargetSpec from a name or a config mapping (``name`` plus ``column`` for hyperparameter)."""
    d = {"name": cfg} if isinstance(cfg, str) else dict(cfg)
    name = d.get("name")
    if name not in TARGETS:
        raise ZooError(f"unknown task {name!r}; choose one of {list(TARGETS)}")
    if name == "hyperparameter":
        if not d.get("column"):
            raise ZooError("task hyperparameter needs a column, e.g. task.column=learning_rate")
        if d.get("log") and not d.get("regression"):
            raise ZooError("task hyperparameter: log=true needs regression=true (a log of class labels means nothing)")
        kind = "regression" if d.get("regression") else "classification"
        return TargetSpec(name, kind, str(d["column"]), log=bool(d.get("log")))
    if name == "label":
        return TargetSpec(name, "classification", "label")
    return TargetSpec(name, "classification" if name == "phase" else "regression")


def _accuracy_columns(metrics: pd.DataFrame) -> tuple[str, str]:
    if "test_acc" in metrics and metrics["test_acc"].notna().any():
        return "train_acc", "test_acc"
    if "test_r2" in metrics and metrics["test_r2"].notna().any():
        return "train_r2", "test_r2"
    raise ZooError("the zoo's metrics table has no test accuracy (test_acc) or test R2 (test_r2) column")


def targets(z: Zoo, spec: TargetSpec, samples: pd.DataFrame) -> pd.DataFrame:
    """``samples`` (model_id, checkpoint) with a ``target`` column added; rows without a target dropped.

    For classification, ``spec.classes`` is filled (sorted values) and ``target`` is the class index.
    """
    if spec.name in ("test_accuracy", "generalization_gap"):
        m = z.metrics
        tr, te = _accuracy_columns(m)
        cols = ["model_id", "checkpoint", te] + ([tr] if spec.name == "generalization_gap" else [])
        missing = [c for c in cols if c not in m]
        if missing:
            raise ZooError(f"task {spec.name}: the zoo's metrics table lacks {missing}")
        m = m[cols].copy()
        m["target"] = m[te] if spec.name == "test_accuracy" else m[tr] - m[te]
        out = samples.merge(m[["model_id", "checkpoint", "target"]], on=["model_id", "checkpoint"], how="left")
    elif spec.kind == "regression":  # hyperparameter regression: the column's value (or its log10) per model
        name = str(spec.column)
        if name not in z.models:
            raise ZooError(
                f"task hyperparameter: the models table has no column {name!r}; columns: {sorted(z.models.columns)}"
            )
        values = pd.to_numeric(z.models[name], errors="coerce")
        if values.isna().all():
            raise ZooError(f"task hyperparameter: column {name!r} is not numeric; drop regression=true to classify it")
        if spec.log:
            if (values <= 0).any():
                raise ZooError(f"task hyperparameter: column {name!r} has values <= 0, so log=true cannot apply")
            values = np.log10(values)
        table = pd.DataFrame({"model_id": z.models["model_id"], "target": values})
        out = samples.merge(table, on="model_id", how="left")
    else:
        if spec.name == "phase":
            table = z.table("landscape")
            if table is None or "phase" not in table:
                raise ZooError(
                    "task phase needs a 'landscape' table with a 'phase' column; run `zoo landscape` on this zoo first"
                )
            col: str | None = "phase"
            values = table[["model_id", "phase"]]
        else:
            col = spec.column
            if col not in z.models:
                hint = " (build an INR zoo: a kind: inr recipe)" if spec.name == "label" else ""
                raise ZooError(
                    f"task {spec.name}: the models table has no column {col!r}{hint}; columns:"
                    f" {sorted(z.models.columns)}"
                )
            values = z.models[["model_id", col]]
        out = samples.merge(values, on="model_id", how="left")
        out = out[out[col].notna() & (out[col].astype(str) != "")].copy()  # unlabelled models have no target
        labels = out[col].astype(str) if out[col].dtype == object else out[col]
        classes = sorted(pd.unique(labels), key=lambda v: (isinstance(v, str), v))
        if len(classes) < 2:
            raise ZooError(f"task {spec.name}: column {col!r} has fewer than two distinct values in the selection")
        spec.classes = [str(c) for c in classes]
        index = {c: i for i, c in enumerate(classes)}
        out["target"] = labels.map(index).astype(np.int64)
    out = out[out["target"].notna() & np.isfinite(out["target"].astype(float))]
    if out.empty:
        raise ZooError(f"task {spec.name}: no selected model has a target")
    return out.reset_index(drop=True)


def regression_metrics(pred: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Kendall tau (tau-b), R2 and MSE of predictions against targets (1-D), from torchmetrics.

    Undefined values are NaN (null in summary.json), never a made-up 0: Kendall tau with fewer than two
    samples or with constant predictions or targets, R2 with fewer than two samples or constant targets
    (torchmetrics would report 0 there).
    """
    from torchmetrics.functional.regression import kendall_rank_corrcoef, mean_squared_error, r2_score

    p, t = pred.detach().double().cpu().ravel(), y.detach().double().cpu().ravel()
    if p.shape != t.shape:
        raise ZooError(f"predictions {tuple(p.shape)} and targets {tuple(t.shape)} differ in shape")
    nan = float("nan")
    if len(t) == 0:
        return {"kendall_tau": nan, "r2": nan, "mse": nan}
    mse = float(mean_squared_error(p, t))
    if len(t) < 2:
        return {"kendall_tau": nan, "r2": nan, "mse": mse}
    with warnings.catch_warnings():  # torchmetrics warns on constant inputs; the NaN below says it
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torchmetrics\.")
        tau = float(kendall_rank_corrcoef(p, t, variant="b"))  # type: ignore[arg-type]  # one tensor for 1-d inputs
    const_p, const_t = bool((p == p[0]).all()), bool((t == t[0]).all())
    if const_p or const_t:
        tau = nan
    r2 = nan if const_t else float(r2_score(p, t))
    return {"kendall_tau": tau, "r2": r2, "mse": mse}


def classification_metrics(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Accuracy of argmax predictions (torchmetrics, micro average: the fraction of samples right)."""
    from torchmetrics.functional.classification import multiclass_accuracy

    if len(y) == 0:
        return {"acc": float("nan")}
    k = max(int(logits.shape[1]), 2)
    return {"acc": float(multiclass_accuracy(logits.detach().cpu(), y.detach().cpu(), num_classes=k, average="micro"))}
