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

import numpy as np
import torch
import zarr
from torch import nn

from zoo.datasets import Dataset, load_recorded
from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.store._group import PENDING
from zoo.store.fastread import read_checkpoint_rows
from zoo.store.meta import ZooMeta


class Zoo(ZooMeta):
    """Read a zoo (never writes: every write goes through :class:`zoo.store.writer.ZooWriter`). Construct with
    :func:`zoo.open`. Its metadata, models table, metrics and tables come from :class:`zoo.store.meta.ZooMeta`;
    this class adds the layouts, weights, modules and datasets (torch)."""

    @cached_property
    def layouts(self) -> dict[str, Layout]:
        return {k: Layout.from_json(v) for k, v in self._meta["layouts"].items()}

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


def open(path: str | os.PathLike) -> Zoo:  # noqa: A001 - mirrors zarr.open / builtins by intent
    """Open a zoo for reading; a clear ZooError when the path is missing or not a zoo."""
    return Zoo(str(path))
