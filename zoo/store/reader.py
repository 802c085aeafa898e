"""The zoo store: one Zarr v3 group per zoo, readable without touching weights it does not need.

Layout of the group (schema version 2; written only through :mod:`zoo.store.writer`):
  attrs["wszoo"]                 schema version, checkpoint epochs, metric names, layouts (parameter names,
                                 shapes, offsets, dtypes, architecture spec, model count), datasets
                                 (fingerprint and split seed), block size, and the producer's provenance
                                 (a build's resolved config and its hash, package versions, ...)
  models/<column>  [N]           the models table, one array per column (see zoo.store.columns): any columns,
                                 always model_id, layout and row (the model's position within its layout)
  layouts/<key>/state    int32 [n, 2]      (status, last finite checkpoint) per model: its commit marker
  layouts/<key>/metrics  float64 [n, C, K] metric_names per model and checkpoint
  layouts/<key>/weights  float32 [n, C, P] one shard per block of models, one checksummed chunk per model
                                 and checkpoint inside it (a batch of models is one small read each)
  layouts/<key>/canonical  the same shape: re-based weights written by ``zoo align``
  tables/<name>                  small per-model tables (landscape, alignment) as JSON columns
Every per-model array is cut into the same blocks of ``block_size`` rows, and every chunk carries a
crc32c checksum: a missing or corrupt chunk of a committed model is an error, never NaN.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch
import zarr
from torch import nn

from zoo.datasets import Dataset, load_recorded
from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.store._group import PENDING, STATUS, location, open_group, read_models_table
from zoo.store.fastread import read_checkpoint_rows, read_whole


class Zoo:
    """Read a zoo (never writes: every write goes through :class:`zoo.store.writer.ZooWriter`). Construct with
    :func:`zoo.open`."""

    def __init__(self, path: str):
        self.path = str(path)
        self._group = open_group(self.path, "r")
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
        """The resolved build config the zoo was made from ({} for zoos not made by ``zoo build``)."""
        return self._meta.get("config") or {}

    @property
    def attrs(self) -> dict:
        """All wszoo attributes: schema version, provenance, fingerprints, checkpoint epochs, ..."""
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

    @property
    def block_size(self) -> int:
        return int(self._meta["block_size"])

    @cached_property
    def _table(self) -> pd.DataFrame:
        """The static models table (written once at creation)."""
        return read_models_table(self._group, self.path)

    @cached_property
    def _where(self) -> tuple[np.ndarray, np.ndarray]:
        """(layout key, row within the layout) of every model id."""
        return self._table["layout"].to_numpy(), self._table["row"].to_numpy().astype(np.int64)

    def _read(self, name: str, selection: Any = ..., orthogonal: bool = False) -> np.ndarray:
        """Read from one array of the store; a missing or corrupt chunk is a ZooError naming the array."""
        try:
            array = self._group[name]
            fast = read_whole(array) if selection is ... else None
            if fast is not None:
                return fast[0]
            return np.asarray(array.oindex[selection] if orthogonal else array[selection])
        except Exception as e:  # zarr surfaces truncated or garbled chunks as ValueError, KeyError, ...
            raise ZooError(
                f"array {name!r} of zoo {self.path!r} is corrupt or unreadable ({e.__class__.__name__}: {e})"
            ) from None

    def _per_layout(self, name: str, fill: float | int, shape_tail: tuple[int, ...], dtype) -> np.ndarray:
        """A per-model array gathered from every layout into model-id order: [N, *shape_tail]."""
        keys, rows = self._where
        out = np.full((len(self), *shape_tail), fill, dtype=dtype)
        for key in self.layouts:
            ids = np.nonzero(keys == key)[0]
            if len(ids):
                out[ids] = self._read(f"layouts/{key}/{name}")[rows[ids]]
        return out

    def _state(self) -> np.ndarray:
        """(status, last checkpoint) of every model, read fresh (a build may be writing)."""
        self._state_cache = self._per_layout("state", 0, (2,), np.int32)
        return self._state_cache

    def _metric_values(self, state: np.ndarray | None = None) -> np.ndarray:
        """[N, C, K] metrics in model-id order. ``state`` (read fresh when not given, always before the metrics:
        a model's metrics are written before its state row) says which blocks hold committed models."""
        state = self._state() if state is None else state
        keys, rows = self._where
        out = np.full((len(self), len(self.checkpoint_epochs), len(self.metric_names)), np.nan, dtype=np.float64)
        for key in self.layouts:
            ids = np.nonzero(keys == key)[0]
            if len(ids):
                out[ids] = self._layout_metrics(key, ids, rows[ids], state[ids, 0] != PENDING)[rows[ids]]
        return out

    def _layout_metrics(self, key: str, ids: np.ndarray, rows: np.ndarray, committed: np.ndarray) -> np.ndarray:
        """The metrics array of one layout (models ``ids`` at ``rows``). A missing chunk of a block that holds
        committed models, or any unreadable chunk, is a ZooError naming the block; a block of pending models
        only reads as NaN (a build may be writing it). Chunk existence is checked once per block, not per model."""
        name = f"layouts/{key}/metrics"
        try:
            array = self._group[name]
        except Exception as e:
            raise ZooError(
                f"array {name!r} of zoo {self.path!r} is corrupt or unreadable ({e.__class__.__name__}: {e})"
            ) from None
        rows_per = int(array.chunks[0])

        def damaged(block: int | None, what: str) -> str:
            members = np.sort(ids[rows // rows_per == block])
            span = f" (models {int(members[0])}..{int(members[-1])})" if len(members) else ""
            where = f"layout {key}" if block is None else f"layout {key}, block {block}{span}"
            return (
                f"the metrics chunk of zoo {self.path!r}, {where} {what}: `zoo verify {self.path} --repair` marks"
                " the block pending, then the same `zoo build` retrains it"
            )

        try:
            fast = read_whole(array)
            values, written = fast if fast is not None else (np.asarray(array[...]), self._written_chunks(array))
        except Exception as e:  # a truncated or garbled chunk: find which one, for the message
            bad = next((b for b in range(-(-array.shape[0] // rows_per)) if not _readable(array, b, rows_per)), None)
            detail = (str(e).splitlines() or [""])[0]
            raise ZooError(damaged(bad, f"is corrupt or unreadable ({e.__class__.__name__}: {detail})")) from None
        if array.size == 0:  # a zoo without metrics (an import without metrics.csv): there are no chunks
            return values
        needed = np.unique(rows[committed] // rows_per)
        missing = needed[~written[needed]]
        if len(missing):
            raise ZooError(damaged(int(missing[0]), "is missing though its models are committed"))
        return values

    def _written_chunks(self, array: zarr.Array) -> np.ndarray:
        """Whether each chunk of an array chunked along its first axis exists (one listing, for non-local stores)."""
        fs, root = location(self.path)
        try:
            found = {
                p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(f"{root.rstrip('/')}/{array.path}/c", detail=False)
            }
        except FileNotFoundError:
            found = set()
        return np.asarray([str(b) in found for b in range(-(-array.shape[0] // int(array.chunks[0])))], dtype=bool)

    @property
    def models(self) -> pd.DataFrame:
        """One row per model: id, status, its columns (hyperparameters, provenance), final metrics."""
        df = self._table.copy()
        state = self._state()
        df.insert(1, "status", [STATUS[s] for s in state[:, 0]])
        df["last_checkpoint"] = state[:, 1]
        values = self._metric_values(state)
        last = np.where(state[:, 1] >= 0, state[:, 1], 0)
        final = values[np.arange(len(df)), last]
        final[state[:, 1] < 0] = np.nan
        for k, name in enumerate(self.metric_names):
            df[name] = final[:, k]
        return df

    @property
    def metrics(self) -> pd.DataFrame:
        """Long table: model_id, checkpoint, epoch and every metric, one row per model and checkpoint."""
        values = self._metric_values()  # [N, C, K]
        n, c, _ = values.shape
        df = pd.DataFrame(values.reshape(n * c, -1), columns=self.metric_names)
        df.insert(0, "epoch", np.tile(np.asarray(self.checkpoint_epochs), n))
        df.insert(0, "checkpoint", np.tile(np.arange(c), n))
        df.insert(0, "model_id", np.repeat(np.arange(n), c))
        return df

    @property
    def datasets(self) -> list[str]:
        """Names (or .npz paths) of the datasets this zoo's models were trained or evaluated on."""
        return list(self._meta.get("datasets") or {})

    def dataset(self, name: str | None = None, data_root: str | None = None) -> Dataset:
        """The dataset (train/test tensors) the zoo was trained on; checks the stored fingerprint.

        A zoo over several datasets (``recipe.datasets``) needs ``name``: the models table's ``dataset`` column
        says which one each model was trained on. Data on disk is recorded by its absolute path; data that
        moved is found in ``data_root`` (else ``$WSZOO_DATA_ROOT``) under its recorded base name."""
        datasets = self._meta.get("datasets") or {}
        if not datasets:
            raise ZooError(f"zoo {self.path!r} records no dataset")
        if name is None and len(datasets) > 1:
            names = list(datasets)
            raise ZooError(
                f"zoo {self.path!r} holds {len(names)} datasets ({', '.join(names[:3])}"
                f"{', ...' if len(names) > 3 else ''}); name one: Zoo.dataset(name), see its models' dataset column"
            )
        name = name or next(iter(datasets))
        if name not in datasets:
            names = list(datasets)
            raise ZooError(
                f"zoo was not trained on {name!r}; it holds {len(names)} datasets"
                f" ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
            )
        record = datasets[name]
        return load_recorded(name, int(record.get("seed", 0)), record["fingerprint"], data_root)

    # ------------------------------------------------------------------ weights
    def _row(self, model_id: int) -> tuple[str, int, int, int]:
        """(layout key, row in layout, status, last checkpoint) of a model, validating the id."""
        n = len(self)
        if not isinstance(model_id, (int, np.integer)) or not 0 <= int(model_id) < n:
            raise ZooError(f"model id {model_id} is out of range: this zoo has ids 0..{n - 1}")
        keys, rows = self._where
        status, last = (int(v) for v in self._states(np.asarray([int(model_id)]))[0])
        return str(keys[int(model_id)]), int(rows[int(model_id)]), status, last

    def layout(self, model_id: int) -> Layout:
        return self.layouts[self._row(model_id)[0]]

    def _states(self, ids: np.ndarray) -> np.ndarray:
        """[n, 2] (status, last checkpoint) of models, from the cache; pending ones are re-read (they may be done
        now)."""
        cache = getattr(self, "_state_cache", None)
        if cache is None:
            cache = self._state()
        if (cache[ids, 0] == PENDING).any():
            cache = self._state()
        return cache[ids]

    def _resolve_checkpoints(self, ids: np.ndarray, checkpoint: int, states: np.ndarray) -> np.ndarray:
        """Checkpoint index to read per model; ZooError for pending models or checkpoints past a divergence."""
        c = len(self.checkpoint_epochs)
        if not -c <= checkpoint < c:
            raise ZooError(
                f"checkpoint {checkpoint} is out of range: this zoo has {c} checkpoints"
                f" (epochs {self.checkpoint_epochs})"
            )
        last = states[:, 1].astype(np.int64)
        if checkpoint == -1:
            return last
        ckpt = checkpoint + c if checkpoint < 0 else checkpoint
        beyond = np.nonzero(ckpt > last)[0]
        if len(beyond):
            raise ZooError(
                f"model {int(ids[beyond[0]])} diverged after checkpoint {int(last[beyond[0]])};"
                f" checkpoint {checkpoint} does not exist"
            )
        return np.full(len(ids), ckpt, dtype=np.int64)

    def _weights_array(self, key: str, canonical: bool) -> zarr.Array:
        name = f"layouts/{key}/{'canonical' if canonical else 'weights'}"
        cache = self.__dict__.setdefault("_arrays", {})  # opening an array through zarr costs ~4 ms
        if name not in cache:
            if canonical and name not in self._group:
                raise ZooError(f"zoo has no canonical weights for layout {key}: run `zoo align {self.path}` first")
            cache[name] = self._group[name]
        return cache[name]

    def weights(
        self, model_ids: Sequence[int] | int, checkpoint: int | None = -1, canonical: bool = False
    ) -> torch.Tensor:
        """Flat weights of several models of one layout: [n, P] at one checkpoint, [n, C, P] if checkpoint=None.

        ``checkpoint=-1`` means each model's last valid checkpoint (a diverged model's last finite one).
        """
        ids = np.atleast_1d(np.asarray(model_ids))
        if ids.size == 0:
            raise ZooError("no model ids given")
        if ids.dtype.kind not in "iu" or ids.ndim != 1 or ids.min() < 0 or ids.max() >= len(self):
            bad = next((i for i in ids.ravel().tolist() if not isinstance(i, int) or not 0 <= i < len(self)), ids)
            raise ZooError(f"model id {bad} is out of range: this zoo has ids 0..{len(self) - 1}")
        ids = ids.astype(np.int64)
        keys, rows = self._where
        layout_keys = set(keys[ids].tolist())
        if len(layout_keys) > 1:
            raise ZooError(
                f"models {ids.tolist()} span several layouts {sorted(layout_keys)}; ask for one layout at a time"
            )
        key = layout_keys.pop()
        array = self._weights_array(key, canonical)
        layout_rows = rows[ids]
        states = self._states(ids)
        pending = np.nonzero(states[:, 0] == PENDING)[0]
        if len(pending):
            raise ZooError(f"model {int(ids[pending[0]])} is pending (not trained yet): it has no weights")
        what = "canonical weights" if canonical else "weights"
        if checkpoint is None:  # one direct read per checkpoint (zarr's orthogonal selection was ~30x slower)
            out = np.stack([read_checkpoint_rows(array, layout_rows, c) for c in range(array.shape[1])], axis=1)
            committed = np.arange(out.shape[1])[None, :] <= states[:, 1][:, None]
            bad = np.nonzero((np.isnan(out).any(axis=2) & committed).any(axis=1))[0]
            if len(bad) and not canonical:  # canonical trajectories are NaN where `zoo align` skipped them
                raise ZooError(self._missing(what, int(ids[bad[0]]), canonical))
            return torch.from_numpy(out)
        ckpts = self._resolve_checkpoints(ids, int(checkpoint), states)
        if (ckpts == ckpts[0]).all():  # the usual case: one vectorized read
            out = read_checkpoint_rows(array, layout_rows, int(ckpts[0]))
        else:
            out = np.empty((len(ids), array.shape[2]), dtype=np.float32)
            for c in np.unique(ckpts):
                sel = np.nonzero(ckpts == c)[0]
                out[sel] = read_checkpoint_rows(array, layout_rows[sel], int(c))
        bad = np.nonzero(np.isnan(out).any(axis=1))[0]
        if len(bad):
            raise ZooError(self._missing(what, int(ids[bad[0]]), canonical))
        return torch.from_numpy(out)

    def _missing(self, what: str, model_id: int, canonical: bool) -> str:
        if canonical:
            return (
                f"canonical weights of model {model_id} were not written for this checkpoint;"
                " run `zoo align --checkpoint all`"
            )
        return f"{what} of model {model_id} in zoo {self.path!r} are missing or corrupt (NaN where data was committed)"

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

    # ------------------------------------------------------------------ tables (written by ZooWriter.write_table)
    @property
    def tables(self) -> list[str]:
        """The names of the zoo's tables (``landscape``, ``alignment``, ...), sorted; read each with :meth:`table`."""
        return sorted(self._group["tables"].group_keys()) if "tables" in self._group else []

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


def _readable(array: zarr.Array, block: int, rows_per: int) -> bool:
    """Whether one block of an array chunked along its first axis reads back through zarr (checksums verified)."""
    try:
        np.asarray(array[block * rows_per : (block + 1) * rows_per])
    except Exception:
        return False
    return True


def open(path: str | os.PathLike) -> Zoo:  # noqa: A001 - mirrors zarr.open / builtins by intent
    """Open a zoo for reading; a clear ZooError when the path is missing or not a zoo."""
    return Zoo(str(path))


def summarize(z: Zoo) -> dict:
    """The numbers ``zoo info`` prints: models by status, layouts, checkpoints, accuracy range."""
    df = z.models
    counts = df["status"].value_counts()
    score = next((c for c in ("test_acc", "test_r2", "psnr") if c in df), None)  # psnr: INR zoos (zoo.inr)
    values = df.loc[df["status"] != "pending", score].dropna() if score else pd.Series(dtype=float)
    layouts = {
        k: {"models": int((df["layout"] == k).sum()), "parameters": int(v.size), "arch": v.arch.get("name")}
        for k, v in z.layouts.items()
    }
    return {
        "path": z.path,
        "models": int(len(df)),
        "done": int(counts.get("done", 0)),
        "diverged": int(counts.get("diverged", 0)),
        "pending": int(counts.get("pending", 0)),
        "layouts": layouts,
        "checkpoints": z.checkpoint_epochs,
        "datasets": z.datasets,
        "score": score,
        "score_min": None if values.empty else float(values.min()),
        "score_max": None if values.empty else float(values.max()),
        "score_mean": None if values.empty else float(values.mean()),
        "schema_version": z.attrs["schema_version"],
        "has_canonical": any(f"layouts/{k}/canonical" in z._group for k in z.layouts),
        "tables": z.tables,
    }
