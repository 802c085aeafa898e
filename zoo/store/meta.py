"""What a zoo says about its models without their weights: metadata, the models table, states, metrics and
tables, read without torch; opened by :func:`open_meta`, a local zoo is read straight from its files
(:mod:`zoo.store.localread`: no zarr, and pandas only for the DataFrames), so ``zoo info`` answers in a fraction of
a second.

:class:`zoo.store.reader.Zoo` extends :class:`ZooMeta` with the weights, layouts and modules (torch); the store's
layout is described in :mod:`zoo.store.reader`. Open one with :func:`open_meta`, or use a ``Zoo``: it is a
``ZooMeta`` too, and :func:`summarize` takes either.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo.errors import ZooError
from zoo.store._group import PENDING, STATUS, location, open_group, read_models_table
from zoo.store.columns import read_columns
from zoo.store.fastread import read_whole

if TYPE_CHECKING:  # imported where used: `zoo info` needs neither (~0.8 s of imports)
    import pandas as pd
    import zarr


class ZooMeta:
    """A zoo's metadata, models table, states, metrics and tables (read only, no weights, no torch). Construct
    with :func:`open_meta`; :class:`zoo.store.reader.Zoo` adds the weights."""

    def __init__(self, path: str, light: bool = False):
        self.path = str(path)
        self._group = open_group(self.path, "r", light=light)
        self._meta = dict(self._group.attrs["wszoo"])
        if not self._meta.get("initialized", False):
            raise ZooError(f"{self.path!r} is a zoo whose creation was interrupted; run the build again")

    def __repr__(self) -> str:
        counts = self.models["status"].value_counts().to_dict()
        return f"{type(self).__name__}({self.path!r}, models={len(self)}, {counts}, layouts={self.layout_keys})"

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

    @property
    def layout_keys(self) -> list[str]:
        """The keys of the zoo's parameter layouts (``Zoo.layouts`` maps them to :class:`zoo.layout.Layout`)."""
        return list(self._meta["layouts"])

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
        try:
            models = self._group["models"]
        except KeyError:
            raise ZooError(f"zoo {self.path!r} has no models table") from None
        cols = read_columns(models, self.path, ["layout", "row"])
        return np.asarray(cols["layout"], dtype=object), np.asarray(cols["row"]).astype(np.int64)

    @cached_property
    def table_columns(self) -> list[str]:
        """The names of the static models table's columns (the models table adds status, checkpoint, metrics)."""
        try:
            return [str(c) for c in self._group["models"].attrs.get("columns", [])]
        except KeyError:
            raise ZooError(f"zoo {self.path!r} has no models table") from None

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
        for key in self.layout_keys:
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
        for key in self.layout_keys:
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
        final = self._final_metrics(state)
        for k, name in enumerate(self.metric_names):
            df[name] = final[:, k]
        return df

    def _final_metrics(self, state: np.ndarray) -> np.ndarray:
        """[N, K] each model's metrics at its last written checkpoint (NaN for models with none)."""
        values = self._metric_values(state)
        last = np.where(state[:, 1] >= 0, state[:, 1], 0)
        final = values[np.arange(len(values)), last]
        final[state[:, 1] < 0] = np.nan
        return final

    @property
    def metrics(self) -> pd.DataFrame:
        """Long table: model_id, checkpoint, epoch and every metric, one row per model and checkpoint."""
        import pandas as pd

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

    def _states(self, ids: np.ndarray) -> np.ndarray:
        """[n, 2] (status, last checkpoint) of models, from the cache; pending ones are re-read (they may be done
        now)."""
        cache = getattr(self, "_state_cache", None)
        if cache is None:
            cache = self._state()
        if (cache[ids, 0] == PENDING).any():
            cache = self._state()
        return cache[ids]

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
        import pandas as pd

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


def open_meta(path: str | os.PathLike) -> ZooMeta:
    """Open what a zoo says about its models, without its weights and without importing torch (nor zarr, for a
    local zoo in the store's own encodings)."""
    return ZooMeta(str(path), light=True)


def summarize(z: ZooMeta) -> dict:
    """The numbers ``zoo info`` prints: models by status, layouts, checkpoints, accuracy range (numpy only)."""
    keys, _ = z._where
    state = z._state()
    status = state[:, 0]
    score = next((c for c in ("test_acc", "test_r2", "psnr") if c in z.metric_names or c in z.table_columns), None)
    values = np.empty(0)
    if score in z.metric_names:
        values = z._final_metrics(state)[:, z.metric_names.index(score)]
    elif score is not None:  # psnr: a column of INR zoos' models table (zoo.inr)
        column = read_columns(z._group["models"], z.path, [score])[score]
        values = np.asarray([np.nan if v is None else v for v in column], dtype=np.float64)
    if len(values):
        values = values[(status != PENDING) & ~np.isnan(values)]
    layouts = {
        k: {"models": int((keys == k).sum()), "parameters": _size(v), "arch": v.get("arch", {}).get("name")}
        for k, v in z.attrs["layouts"].items()
    }
    return {
        "path": z.path,
        "models": len(z),
        "done": int((status == STATUS.index("done")).sum()),
        "diverged": int((status == STATUS.index("diverged")).sum()),
        "pending": int((status == PENDING).sum()),
        "layouts": layouts,
        "checkpoints": z.checkpoint_epochs,
        "datasets": z.datasets,
        "score": score,
        "score_min": float(values.min()) if len(values) else None,
        "score_max": float(values.max()) if len(values) else None,
        "score_mean": float(values.mean()) if len(values) else None,
        "schema_version": z.attrs["schema_version"],
        "has_canonical": any(f"layouts/{k}/canonical" in z._group for k in z.layout_keys),
        "tables": z.tables,
    }


def _size(layout: dict) -> int:
    """The flat vector length P of a stored layout (as :attr:`zoo.layout.Layout.size`, from its JSON)."""
    entries = layout.get("entries") or []
    if not entries:
        return 0
    last = entries[-1]
    return int(last["offset"]) + int(np.prod(last["shape"], dtype=np.int64))
