"""The training data of a generator: one layout's models of a zoo, split by model id, optionally canonicalized.

Only the zoo's models and its TRAINING data split are read here. The validation split is a held-out set
of model ids (for early stopping); nothing reads the zoo's test data, and the re-basing reference is
chosen by training accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import zoo

if TYPE_CHECKING:
    import pandas as pd
from zoo.errors import ZooError
from zoo.layout import Layout

# Columns copied to a sample zoo's models table when all training models share one value.
SHARED_COLUMNS = ("arch", "width", "depth", "activation", "dataset", "optimizer", "epochs")


@dataclass
class TrainingModels:
    """Weights [n, P] of the train and validation models, condition indices, and what a sample zoo needs."""

    info: dict  # JSON-ready provenance: zoo path, layout, ids, canonical mode, dataset, condition values, ...
    layout: Layout
    train: torch.Tensor  # [n_train, P]
    val: torch.Tensor  # [n_val, P]
    train_condition: torch.Tensor | None = None  # [n_train] int64 index into info["condition"]["values"]
    val_condition: torch.Tensor | None = None
    shared: dict = field(default_factory=dict)


def _json_value(v: Any) -> Any:
    """A numpy scalar as the plain Python value JSON writes."""
    return v.item() if isinstance(v, np.generic) else v


def _pick_layout(models: pd.DataFrame, layouts: Mapping[str, Layout], key: str | None) -> str:
    present = sorted(set(models["layout"]))
    if key is not None:
        if key not in layouts:
            raise ZooError(f"layout {key!r} is not in the zoo; it holds {sorted(layouts)}")
        return key
    if len(present) != 1:
        raise ZooError(
            f"the zoo's models span several layouts {present}; this generator learns one: "
            "pick it with generator.layout=KEY"
        )
    return present[0]


def _split(ids: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of model ids into (train, val); at least one of each."""
    if not 0 < val_fraction < 1:
        raise ZooError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(ids) < 2:
        raise ZooError(f"a generator needs at least 2 done models (train + validation), found {len(ids)}")
    perm = np.random.default_rng(seed).permutation(ids)
    n_val = min(max(1, int(round(val_fraction * len(ids)))), len(ids) - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _canonicalize(
    z: zoo.Zoo,
    models: pd.DataFrame,
    layout: Layout,
    ids: np.ndarray,
    train_ids: np.ndarray,
    checkpoint: int,
    mode: Any,
    raw: torch.Tensor,
    seed: int,
) -> tuple[torch.Tensor, dict]:
    """Weights in one canonical frame: the store's (``zoo align``) or aligned here to the reference that
    :func:`zoo.rebasin.choose_reference` picks among the TRAINING-split models."""
    mode = "auto" if mode == "auto" else ("auto" if bool(mode) else "raw")
    frame = zoo.rebasin.canonical_frame(  # imported on first use (scipy): sampling never needs it
        z, layout, ids, raw, models[models["model_id"].isin(train_ids)], mode, checkpoint=checkpoint, seed=seed
    )
    if frame.mode == "aligned":
        return frame.weights, {"canonical": "aligned", "reference_id": frame.reference_id}
    return frame.weights, {"canonical": frame.mode}


def _conditions(models: pd.DataFrame, column: str | None, ids: np.ndarray) -> tuple[dict | None, np.ndarray | None]:
    """({"column", "values"}, index of each model's value) for a conditioning column, or (None, None)."""
    if column is None:
        return None, None
    if column not in models:
        raise ZooError(
            f"cannot condition on {column!r}: the models table has no such column (columns: {sorted(models.columns)})"
        )
    col = models.set_index("model_id").loc[ids, column]
    if col.isna().any():
        raise ZooError(f"cannot condition on {column!r}: some models have no value")
    values = sorted(col.unique().tolist(), key=lambda v: (str(type(v)), v))
    if len(values) < 2:
        raise ZooError(f"cannot condition on {column!r}: every selected model has the value {values[0]!r}")
    index = {v: i for i, v in enumerate(values)}
    return {"column": column, "values": [_json_value(v) for v in values]}, np.asarray(
        [index[v] for v in col.tolist()], dtype=np.int64
    )


def load_training_models(zoo_path: str, cfg: Mapping, seed: int = 0) -> TrainingModels:
    """Read the models a generator config selects (``layout``, ``query``, ``checkpoint``, ``canonical``,
    ``condition``, ``val_fraction``) from the zoo at ``zoo_path``."""
    z = zoo.open(zoo_path)
    models = z.models
    key = _pick_layout(models, z.layouts, cfg.get("layout"))
    layout = z.layouts[key]
    sel = models[(models["layout"] == key) & (models["status"] == "done")]
    if cfg.get("query"):
        sel = zoo.query.select(sel, str(cfg["query"]), "generator.query")
    ids = np.sort(sel["model_id"].to_numpy(dtype=np.int64))
    train_ids, val_ids = _split(ids, float(cfg.get("val_fraction", 0.1)), seed)
    checkpoint = int(cfg.get("checkpoint", -1))
    raw = z.weights(ids.tolist(), checkpoint=checkpoint)
    weights, canon = _canonicalize(
        z, models, layout, ids, train_ids, checkpoint, cfg.get("canonical", "auto"), raw, seed
    )
    if not torch.isfinite(weights).all():
        raise ZooError("some selected models have non-finite weights; select done models with finite weights")
    cond, cond_idx = _conditions(models, cfg.get("condition"), ids)
    pos_train, pos_val = np.searchsorted(ids, train_ids), np.searchsorted(ids, val_ids)
    if (
        cond is not None and cond_idx is not None
    ):  # how often each value occurs among training models: sampling without a condition
        cond["counts"] = np.bincount(cond_idx[pos_train], minlength=len(cond["values"])).tolist()
    data = z.dataset(str(sel["dataset"].iloc[0])) if "dataset" in sel else z.dataset()
    epochs = z.checkpoint_epochs
    shared = {c: _json_value(sel[c].iloc[0]) for c in SHARED_COLUMNS if c in sel and sel[c].nunique() == 1}
    info = {
        "zoo": str(zoo_path),
        "layout_key": key,
        "layout": layout.to_json(),
        "checkpoint": checkpoint,
        "epoch": int(epochs[checkpoint]) if -len(epochs) <= checkpoint < len(epochs) else None,
        "train_ids": train_ids.tolist(),
        "val_ids": val_ids.tolist(),
        **canon,
        "dataset": {
            "name": data.name,
            "source": data.key,
            "seed": int(data.seed),
            "fingerprint": data.fingerprint,
            # an INR zoo's record is its image set, but its models draw images: nothing to classify
            "kind": "inr" if isinstance(z.attrs.get("inr"), dict) else data.kind,
        },
        "inr": z.attrs.get("inr") if isinstance(z.attrs.get("inr"), dict) else None,
        "metric_names": z.metric_names,
        "condition": cond,
        "train_mean": {
            m: float(sel.set_index("model_id").loc[train_ids, m].mean())
            for m in ("train_acc", "train_loss")
            if m in sel
        },
    }
    t = (lambda p: torch.from_numpy(cond_idx[p])) if cond_idx is not None else (lambda p: None)
    return TrainingModels(
        info, layout, weights[pos_train].contiguous(), weights[pos_val].contiguous(), t(pos_train), t(pos_val), shared
    )
