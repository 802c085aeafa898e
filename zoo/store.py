"""The zoo store: one Zarr v3 group per zoo, readable without touching weights it does not need.

Layout of the group (schema version 1):
  attrs["wszoo"]                 schema version, resolved build config and its hash, package versions,
                                 dataset fingerprints, checkpoint epochs, layouts, hyperparameter table
  models/state     int32 [N, 2]  (status code, last finite checkpoint index); one chunk per model. It is
                                 written last for a model, so it is the commit marker of that model.
  metrics/values   float64 [N, C, K]   K metric names in attrs; one chunk per model
  layouts/<key>/weights    float32 [n, C, P]  one uncompressed chunk per model and checkpoint: a batch of
                                 models at one checkpoint is one vectorized read of exactly those bytes.
                                 (Measured here: per-model shards made random reads ~2x slower through
                                 zarr's shard index, and blosc saved only ~8% on float32 weights.)
  layouts/<key>/canonical  the same shape: re-based weights written by ``zoo align``
  tables/<name>                  small per-model tables (landscape, alignment) as JSON columns
Every per-model array is chunked by model, so writers that own disjoint models never touch one object.
"""
from __future__ import annotations

import json
import os
from functools import cached_property
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import zarr
from torch import nn

from .errors import ZooError
from .fastread import read_checkpoint_rows
from .layout import Layout

SCHEMA_VERSION = 1
STATUS = ("pending", "done", "diverged")
PENDING, DONE, DIVERGED = 0, 1, 2
CLASSIFICATION_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
REGRESSION_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "train_r2", "test_r2")


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def location(path: str) -> tuple[Any, str]:
    """(fsspec filesystem, root) for a local path, a file:// URL or any fsspec URL."""
    import fsspec

    return fsspec.core.url_to_fs(str(path))


def _store_for(path: str, read_only: bool) -> Any:
    """A zarr store: LocalStore on local disk (the fast read path relies on it), FsspecStore elsewhere."""
    path = str(path)
    if _is_url(path):
        return zarr.storage.FsspecStore.from_url(path, read_only=read_only)
    return zarr.storage.LocalStore(path.removeprefix("file://"), read_only=read_only)


def _exists(path: str) -> bool:
    """Whether a zarr group is present at path (local or fsspec)."""
    fs, root = location(path)
    return fs.exists(root.rstrip("/") + "/zarr.json")


def _path_exists(path: str) -> bool:
    fs, root = location(path)
    return fs.exists(root)


def open_group(path: str, mode: str = "r") -> zarr.Group:
    """Open the zoo's root group; ZooError when nothing or something else is there."""
    if not _path_exists(path):
        raise ZooError(f"no zoo at {path!r}: the path does not exist")
    if not _exists(path):
        raise ZooError(f"{path!r} is not a zoo: it has no zarr.json (is it the right folder?)")
    try:
        group = zarr.open_group(store=_store_for(path, read_only=(mode == "r")), mode="r" if mode == "r" else "r+")
    except Exception as e:  # corrupt metadata, a zarr v2 array, ...
        raise ZooError(f"{path!r} is not a readable zoo ({e.__class__.__name__}: {e})") from None
    meta = group.attrs.get("wszoo")
    if not isinstance(meta, Mapping):
        raise ZooError(f"{path!r} is a Zarr group but not a wszoo zoo (no 'wszoo' attributes)")
    version = meta.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ZooError(f"{path!r} has zoo schema version {version}; this wszoo reads up to {SCHEMA_VERSION}:"
                       " upgrade wszoo")
    return group


class Zoo:
    """Read (and annotate) a zoo. Construct with :func:`zoo.open`."""

    def __init__(self, path: str, mode: str = "r"):
        self.path = str(path)
        self._group = open_group(self.path, mode)
        self._meta = dict(self._group.attrs["wszoo"])
        if not self._meta.get("initialized", False):
            raise ZooError(f"{self.path!r} is a zoo whose creation was interrupted; run the build again")

    def __repr__(self) -> str:
        counts = self.models["status"].value_counts().to_dict()
        return f"Zoo({self.path!r}, models={len(self)}, {counts}, layouts={list(self.layouts)})"

    def __len__(self) -> int:
        return int(self._meta["num_models"])

    # ------------------------------------------------------------------ metadata
    @property
    def config(self) -> dict:
        """The resolved build config the zoo was made from."""
        return self._meta["config"]

    @property
    def attrs(self) -> dict:
        """All wszoo attributes: schema version, versions, fingerprints, checkpoint epochs, ..."""
        return self._meta

    @property
    def checkpoint_epochs(self) -> list[int]:
        return list(self._meta["checkpoint_epochs"])

    @cached_property
    def layouts(self) -> dict[str, Layout]:
        return {k: Layout.from_json(v) for k, v in self._meta["layouts"].items()}

    @property
    def metric_names(self) -> list[str]:
        return list(self._meta["metric_names"])

    def _read(self, name: str, selection: Any, orthogonal: bool = False) -> np.ndarray:
        """Read from one array of the store; a missing or corrupt chunk is a ZooError naming the array."""
        try:
            array = self._group[name]
            return np.asarray(array.oindex[selection] if orthogonal else array[selection])
        except ZooError:
            raise
        except Exception as e:  # zarr surfaces truncated or garbled chunks as ValueError, KeyError, ...
            raise ZooError(f"array {name!r} of zoo {self.path!r} is corrupt or unreadable"
                           f" ({e.__class__.__name__}: {e})") from None

    def _hparams(self) -> pd.DataFrame:
        return pd.DataFrame(self._meta["models"])

    def _state(self) -> np.ndarray:
        """(status, last checkpoint) of every model, read fresh (a build may be writing)."""
        self._state_cache = self._read("models/state", ...)
        return self._state_cache

    def _cached_state(self, model_id: int) -> tuple[int, int]:
        """State of one model from the cache; a model that looked pending is re-read (it may be done now)."""
        cache = getattr(self, "_state_cache", None)
        if cache is None:
            cache = self._state()
        status, last = (int(v) for v in cache[model_id])
        if status == PENDING:
            status, last = (int(v) for v in self._read("models/state", model_id))
            cache[model_id] = (status, last)
        return status, last

    @property
    def models(self) -> pd.DataFrame:
        """One row per model: id, status, hyperparameters, layout, and its final (last finite) metrics."""
        df = self._hparams()
        state = self._state()
        df.insert(1, "status", [STATUS[s] for s in state[:, 0]])
        df["last_checkpoint"] = state[:, 1]
        values = self._read("metrics/values", ...)
        last = np.where(state[:, 1] >= 0, state[:, 1], 0)
        final = values[np.arange(len(df)), last]
        final[state[:, 1] < 0] = np.nan
        for k, name in enumerate(self.metric_names):
            df[name] = final[:, k]
        return df

    @property
    def metrics(self) -> pd.DataFrame:
        """Long table: model_id, checkpoint, epoch and every metric, one row per model and checkpoint."""
        values = self._read("metrics/values", ...)  # [N, C, K]
        n, c, _ = values.shape
        df = pd.DataFrame(values.reshape(n * c, -1), columns=self.metric_names)
        df.insert(0, "epoch", np.tile(np.asarray(self.checkpoint_epochs), n))
        df.insert(0, "checkpoint", np.tile(np.arange(c), n))
        df.insert(0, "model_id", np.repeat(np.arange(n), c))
        return df

    def dataset(self, name: str | None = None):
        """The dataset (train/test tensors) the zoo was trained on; checks the stored fingerprint."""
        from .datasets import load_dataset

        datasets = self._meta["datasets"]
        name = name or next(iter(datasets))
        if name not in datasets:
            raise ZooError(f"zoo was not trained on {name!r}; it holds {list(datasets)}")
        data = load_dataset(name, seed=int(self.config["recipe"].get("task_seed", 0)))
        if data.fingerprint != datasets[name]:
            raise ZooError(f"data for {name!r} differs from the data this zoo was built on (fingerprint mismatch)")
        return data

    # ------------------------------------------------------------------ weights
    def _row(self, model_id: int) -> tuple[str, int, int, int]:
        """(layout key, row in layout, status, last checkpoint) of a model, validating the id."""
        n = len(self)
        if not isinstance(model_id, (int, np.integer)) or not 0 <= int(model_id) < n:
            raise ZooError(f"model id {model_id} is out of range: this zoo has ids 0..{n - 1}")
        hp = self._meta["models"]
        status, last = self._cached_state(int(model_id))
        return hp["layout"][int(model_id)], int(hp["row"][int(model_id)]), status, last

    def layout(self, model_id: int) -> Layout:
        return self.layouts[self._row(model_id)[0]]

    def _resolve_checkpoint(self, model_id: int, checkpoint: int, status: int, last: int) -> int:
        c = len(self.checkpoint_epochs)
        if status == PENDING:
            raise ZooError(f"model {model_id} is pending (not trained yet): it has no weights")
        if not -c <= checkpoint < c:
            raise ZooError(f"checkpoint {checkpoint} is out of range: this zoo has {c} checkpoints"
                           f" (epochs {self.checkpoint_epochs})")
        if checkpoint < 0:
            return last if checkpoint == -1 else checkpoint + c
        if checkpoint > last:
            raise ZooError(f"model {model_id} diverged after checkpoint {last}; checkpoint {checkpoint} does not exist")
        return checkpoint

    def _weights_array(self, key: str, canonical: bool) -> zarr.Array:
        name = f"layouts/{key}/{'canonical' if canonical else 'weights'}"
        if canonical and name not in self._group:
            raise ZooError(f"zoo has no canonical weights for layout {key}: run `zoo align {self.path}` first")
        return self._group[name]

    def weights(self, model_ids: Sequence[int] | int, checkpoint: int | None = -1,
                canonical: bool = False) -> torch.Tensor:
        """Flat weights of several models of one layout: [n, P] at one checkpoint, [n, C, P] if checkpoint=None.

        ``checkpoint=-1`` means each model's last valid checkpoint (a diverged model's last finite one).
        """
        ids = [int(model_ids)] if isinstance(model_ids, (int, np.integer)) else [int(i) for i in model_ids]
        if not ids:
            raise ZooError("no model ids given")
        rows = [self._row(i) for i in ids]
        keys = {r[0] for r in rows}
        if len(keys) > 1:
            raise ZooError(f"models {ids} span several layouts {sorted(keys)}; ask for one layout at a time")
        key = rows[0][0]
        array = self._weights_array(key, canonical)
        layout_rows = np.asarray([r[1] for r in rows])
        if checkpoint is None:
            for i, (_, _, status, _) in zip(ids, rows):
                if status == PENDING:
                    raise ZooError(f"model {i} is pending (not trained yet): it has no weights")
            return torch.from_numpy(self._read(array.path, (layout_rows, slice(None), slice(None)), orthogonal=True))
        ckpts = np.asarray([self._resolve_checkpoint(i, checkpoint, s, last) for i, (_, _, s, last) in zip(ids, rows)])
        out = np.empty((len(ids), array.shape[2]), dtype=np.float32)
        for c in np.unique(ckpts):  # one vectorized read per distinct checkpoint (usually one)
            sel = np.nonzero(ckpts == c)[0]
            out[sel] = read_checkpoint_rows(array, layout_rows[sel], int(c))
        result = torch.from_numpy(out)
        if canonical and torch.isnan(result).any():
            raise ZooError(f"canonical weights of checkpoint {checkpoint} were not written for some of {ids};"
                           " run `zoo align --checkpoint all`")
        return result

    def trajectory(self, model_id: int, canonical: bool = False) -> torch.Tensor:
        """[C, P] weights of one model at every checkpoint (NaN after a divergence)."""
        return self.weights([model_id], checkpoint=None, canonical=canonical)[0]

    def state_dict(self, model_id: int, checkpoint: int = -1, canonical: bool = False) -> dict[str, torch.Tensor]:
        """Exact tensors of one model at one checkpoint."""
        return self.layout(model_id).unflatten(self.weights([model_id], checkpoint, canonical)[0].clone())

    def module(self, model_id: int, checkpoint: int = -1, canonical: bool = False) -> nn.Module:
        """The model as an ``nn.Module`` (eval mode) with its stored weights, rebuilt from the store alone."""
        module = self.layout(model_id).build()
        module.load_state_dict(self.state_dict(model_id, checkpoint, canonical))
        return module.eval()

    # ------------------------------------------------------------------ annotations written after the build
    def _writable(self) -> zarr.Group:
        if self._group.read_only:
            self._group = open_group(self.path, mode="r+")
        return self._group

    def write_canonical(self, model_ids: Sequence[int], weights: torch.Tensor, checkpoint: int | None = None) -> None:
        """Store re-based weights beside the raw ones: [n, C, P] for all checkpoints or [n, P] at one."""
        ids = [int(i) for i in model_ids]
        keys = {self._row(i)[0] for i in ids}
        if len(keys) != 1:
            raise ZooError(f"write_canonical takes models of one layout, got {sorted(keys)}")
        key = keys.pop()
        raw = self._group[f"layouts/{key}/weights"]
        group = self._writable()
        name = f"layouts/{key}/canonical"
        if name not in group:
            group.create_array(name, shape=raw.shape, dtype="float32", chunks=raw.chunks, compressors=None,
                               fill_value=float("nan"))
        array = group[name]
        rows = np.asarray([self._meta["models"]["row"][i] for i in ids])
        w = weights.detach().to(torch.float32).numpy()
        expected = (len(ids), raw.shape[2]) if checkpoint is not None else (len(ids), raw.shape[1], raw.shape[2])
        if w.shape != expected:
            raise ZooError(f"canonical weights have shape {w.shape}, expected {expected}")
        for row, wi in zip(rows, w):  # one whole shard (or one inner chunk) per model
            if checkpoint is None:
                array[int(row)] = wi
            else:
                array[int(row), int(checkpoint)] = wi

    def write_table(self, name: str, df: pd.DataFrame) -> None:
        """Store a small table (e.g. landscape metrics per model) inside the zoo, replacing any old one."""
        group = self._writable()
        payload = json.loads(df.to_json(orient="split", index=False))
        tables = group.require_group("tables")
        tables.require_group(name).attrs["table"] = payload

    def table(self, name: str) -> pd.DataFrame | None:
        """A table written by :meth:`write_table`, or None if the zoo has none of that name."""
        try:
            payload = self._group[f"tables/{name}"].attrs["table"]
        except KeyError:
            return None
        return pd.DataFrame(payload["data"], columns=payload["columns"])

    @property
    def landscape(self) -> pd.DataFrame | None:
        """Loss-landscape metrics and phase per model (``zoo landscape``), or None."""
        return self.table("landscape")


def open(path: str | os.PathLike) -> Zoo:  # noqa: A001 - mirrors zarr.open / builtins by intent
    """Open a zoo for reading; a clear ZooError when the path is missing or not a zoo."""
    return Zoo(str(path))


def summarize(z: Zoo) -> dict:
    """The numbers ``zoo info`` prints: models by status, layouts, checkpoints, accuracy range."""
    df = z.models
    counts = df["status"].value_counts()
    acc = df.loc[df["status"] != "pending", "test_acc"].dropna()
    layouts = {k: {"models": int((df["layout"] == k).sum()), "parameters": int(v.size), "arch": v.arch.get("name")}
               for k, v in z.layouts.items()}
    return {
        "path": z.path,
        "models": int(len(df)),
        "done": int(counts.get("done", 0)),
        "diverged": int(counts.get("diverged", 0)),
        "pending": int(counts.get("pending", 0)),
        "layouts": layouts,
        "checkpoints": z.checkpoint_epochs,
        "datasets": list(z.attrs["datasets"]),
        "test_acc_min": None if acc.empty else float(acc.min()),
        "test_acc_max": None if acc.empty else float(acc.max()),
        "test_acc_mean": None if acc.empty else float(acc.mean()),
        "schema_version": z.attrs["schema_version"],
        "has_canonical": any(f"layouts/{k}/canonical" in z._group for k in z.layouts),
        "tables": sorted(z._group["tables"].group_keys()) if "tables" in z._group else [],
    }

