"""Writing zoos: the one way anything that produces weights makes a store every command reads.

``zoo build``, generator samples, nowcasted or merged weights and imports all go through
:func:`create` and :meth:`ZooWriter.write`. Crash safety and distributed writes rest on three rules:
- creation is two metadata writes: the root group with its attributes (``initialized: false``) in one
  atomic write, then ``initialized: true`` after every array exists; a store left uninitialized holds
  nothing of value and is replaced by the next create;
- the per-model arrays of a layout (weights, metrics, state) are cut into *blocks* of ``block_size``
  rows: a weights shard and a metrics and a state chunk per block. Writers that own disjoint blocks never
  touch one object (zarr rewrites a whole shard on a partial write, so two writers in one block would
  lose data); one writer may write parts of a block in several calls;
- a model's weights and metrics are written before its state row, the commit marker: a model whose
  state says done has all its data (LocalStore replaces files atomically).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec

from zoo.app.memory import available_memory
from zoo.datasets import Dataset
from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.store import _group
from zoo.store.columns import check_node_name, json_safe, write_table
from zoo.store.lock import writing
from zoo.store.reader import Zoo
from zoo.store.reader import open as open_zoo

DEFAULT_BLOCK_SIZE = 256
MAX_INDEX = 2**31 - 1  # the largest checkpoint epoch or block size a zoo records (the state array is int32)
RESERVED = (
    "schema_version",
    "initialized",
    "num_models",
    "block_size",
    "checkpoint_epochs",
    "metric_names",
    "layouts",
    "datasets",
)
STATUS_CODES = {"done": _group.DONE, "diverged": _group.DIVERGED, "pending": _group.PENDING}


def refuse_existing(path: str, overwrite: bool) -> dict | None:
    """The wszoo attributes of what is at ``path`` (None if nothing); a one-line ZooError when it holds a zoo
    and ``overwrite`` is false, or holds foreign content. Every writer of a new zoo checks this first."""
    existing = _group.existing_meta(str(path))
    if existing is not None and existing.get("initialized") and not overwrite:
        raise ZooError(
            f"{str(path)!r} already holds a zoo; replace it explicitly (overwrite=True, or --overwrite on the CLI)"
        )
    return existing


@contextlib.contextmanager
def staged(out: str, command: str, overwrite: bool = False) -> Iterator[str]:
    """Hold ``out``'s write lock and yield a sibling path to write the new zoo at; on success it replaces ``out``.

    On any failure the sibling is removed and ``out`` is as before (absent, or the old zoo it would have
    replaced). The destination is checked again under the lock, so a writer that lost a race gets the
    one-line "already holds a zoo" error instead of replacing the winner's zoo.
    """
    out = str(out).rstrip("/")
    partial, previous = out + ".partial", out + ".replaced"
    with writing(out, command):
        fs, root = _group.location(out)
        _, old = _group.location(previous)
        if fs.exists(old):  # a replacement killed between its two renames: the old zoo is there
            if fs.exists(root):
                _group.remove(previous)
            else:
                fs.mv(old, root, recursive=True)
        refuse_existing(out, overwrite)  # again under the lock: a writer that lost a race stops here
        _group.remove(partial)  # left by a killed writer: nobody else writes it while we hold the lock
        try:
            yield partial
        except BaseException:
            _group.remove(partial)
            raise
        _, new = _group.location(partial)
        if fs.exists(root):
            fs.mv(root, old, recursive=True)
            try:
                fs.mv(new, root, recursive=True)
            except BaseException:
                fs.mv(old, root, recursive=True)
                _group.remove(partial)
                raise
            _group.remove(previous)
        else:
            fs.mv(new, root, recursive=True)


def _table_with_rows(models: pd.DataFrame, layouts: Mapping[str, Layout]) -> pd.DataFrame:
    """The models table with ``model_id``, ``layout`` and ``row`` (position within its layout) checked or added."""
    if not isinstance(models, pd.DataFrame):
        raise ZooError(f"models must be a pandas DataFrame, got {type(models).__name__}")
    if not layouts:
        raise ZooError("a zoo needs at least one layout")
    df = models.reset_index(drop=True).copy()
    n = len(df)
    if "model_id" in df and not np.array_equal(df["model_id"].to_numpy(), np.arange(n)):
        raise ZooError("models table column model_id must be 0..N-1 in row order")
    if "model_id" not in df:
        df.insert(0, "model_id", np.arange(n, dtype=np.int64))
    if "layout" not in df:
        if len(layouts) > 1:
            raise ZooError(f"a zoo with several layouts {sorted(layouts)} needs a 'layout' column in its models table")
        df["layout"] = next(iter(layouts))
    unknown = sorted(set(df["layout"]) - set(layouts))
    if unknown:
        raise ZooError(f"models table names layouts {unknown} that are not among {sorted(layouts)}")
    if "row" in df:
        for key, rows in df.groupby("layout")["row"]:
            if sorted(rows.astype(int)) != list(range(len(rows))):
                raise ZooError(f"models table column row must number the models of layout {key} 0..n-1")
    else:
        df["row"] = df.groupby("layout").cumcount().astype(np.int64)
    return df


def check_zoo_shape(
    layouts: Mapping[str, Layout], checkpoints: Sequence[int], metric_names: Sequence[str], block_size: int
) -> None:
    """Refuse, before anything is allocated or written, a zoo whose numbers come from a file or an argument and
    cannot be stored: layout keys that are not a path segment, checkpoint epochs outside 0..2**31-1 or not
    increasing, a metric named twice, a block size outside 1..2**31-1, or a block's shard (written whole: block
    models x checkpoints x parameters, float32) larger than the memory available now."""
    for key in layouts:
        check_node_name(key, "layout key")
    bad = [c for c in checkpoints if not 0 <= c <= MAX_INDEX]
    if bad:
        raise ZooError(f"checkpoint epoch {bad[0]} is outside 0..{MAX_INDEX}")
    if any(b <= a for a, b in zip(checkpoints, checkpoints[1:])):
        raise ZooError(f"checkpoint epochs must be increasing, got {list(checkpoints[:8])}")
    twice = sorted({m for m in metric_names if list(metric_names).count(m) > 1})
    if twice:
        raise ZooError(f"metric names name {twice} twice")
    if not 1 <= int(block_size) <= MAX_INDEX:
        raise ZooError(f"block_size must be in 1..{MAX_INDEX}, got {block_size}")
    size = max((layout.size for layout in layouts.values()), default=0)
    need, avail = int(block_size) * len(checkpoints) * size * 4, available_memory()
    if avail is not None and need > avail:
        raise ZooError(
            f"a block of {int(block_size)} models x {len(checkpoints)} checkpoints x {size} parameters (float32) is "
            f"{need / 1e9:.3g} GB, written whole; {avail / 1e9:.3g} GB of memory is available: use fewer "
            "checkpoints or a smaller block_size"
        )


def create(
    path: str,
    models: pd.DataFrame,
    layouts: Mapping[str, Layout],
    checkpoints: Sequence[int],
    metric_names: Sequence[str],
    attrs: Mapping | None = None,
    datasets: Sequence[Dataset] = (),
    overwrite: bool = False,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> ZooWriter:
    """Create an empty zoo at ``path`` for the models of ``models`` (any columns; row i is model i).

    ``attrs`` is provenance kept with the zoo (a build's resolved config, a sample's generator and seed);
    ``datasets`` are the data its models were trained or are evaluated on (``Zoo.dataset()`` reloads them).
    """
    path = str(path)
    checkpoints = [int(c) for c in checkpoints]
    metric_names = [str(m) for m in metric_names]
    if not checkpoints:
        raise ZooError("a zoo needs at least one checkpoint")
    check_zoo_shape(layouts, checkpoints, metric_names, int(block_size))
    clash = sorted(set(attrs or {}) & set(RESERVED))
    if clash:
        raise ZooError(f"attrs may not set the store's own keys {clash}")
    df = _table_with_rows(models, layouts)
    names = [d.key for d in datasets]
    if "dataset" not in df and names:
        if len(names) > 1:
            raise ZooError(f"a zoo over several datasets {names} needs a 'dataset' column in its models table")
        df["dataset"] = names[0]
    if "dataset" in df and names and not set(df["dataset"]) <= set(names):
        raise ZooError(f"models table names datasets {sorted(set(df['dataset']) - set(names))} not given in datasets=")
    existing = refuse_existing(path, overwrite)
    if existing is not None or _group.path_exists(path):
        _group.remove(path)
    meta = {
        **json_safe(dict(attrs or {})),
        "schema_version": _group.SCHEMA_VERSION,
        "initialized": False,
        "num_models": len(df),
        "block_size": int(block_size),
        "checkpoint_epochs": checkpoints,
        "metric_names": metric_names,
        "layouts": {k: {**v.to_json(), "models": int((df["layout"] == k).sum())} for k, v in layouts.items()},
        "datasets": {
            d.key: {
                "fingerprint": d.fingerprint,
                "seed": int(d.seed),
                "kind": d.kind,
                "num_outputs": int(d.num_outputs),
            }
            for d in datasets
        },
    }
    group = zarr.create_group(store=_group.store_for(path, read_only=False), attributes={"wszoo": meta}, overwrite=True)
    write_table(group.require_group("models"), df)
    c, k, b = len(checkpoints), len(metric_names), int(block_size)
    checked = dict(compressors=[Crc32cCodec()], serializer=BytesCodec(endian="little"), filters=None)  # checksums
    for key, layout in layouts.items():
        n = int((df["layout"] == key).sum())
        lg = group.require_group(f"layouts/{key}")
        lg.create_array("state", shape=(n, 2), dtype="int32", chunks=(b, 2), fill_value=0, **checked)
        lg.create_array(
            "metrics", shape=(n, c, k), dtype="float64", chunks=(b, c, max(k, 1)), fill_value=float("nan"), **checked
        )
        create_weights_array(lg, "weights", n, c, layout.size, b)
    meta["initialized"] = True
    group.attrs["wszoo"] = meta
    return ZooWriter(path)


def create_weights_array(group: zarr.Group, name: str, n: int, checkpoints: int, size: int, block: int) -> zarr.Array:
    """An [n, C, P] float32 array, one shard per block of models, one checksummed chunk per model and checkpoint."""
    return group.create_array(
        name,
        shape=(n, checkpoints, size),
        dtype="float32",
        chunks=(1, 1, size),
        shards=(block, checkpoints, size),
        compressors=[Crc32cCodec()],
        serializer=BytesCodec(endian="little"),
        filters=None,
        fill_value=float("nan"),
    )


def write_rows(
    array: zarr.Array, rows: np.ndarray, data: np.ndarray, block: int, checkpoint: int | None = None
) -> None:
    """Write ``data[j]`` to ``array[rows[j]]`` (or ``array[rows[j], checkpoint]``), one write per block touched.

    Rows a block holds that are not being written keep their values: the span between the first and last
    written row is read, updated and written back (zarr rewrites the block's shard whole either way), which
    is safe because one writer owns a block.
    """
    order = np.argsort(rows, kind="stable")
    if (order != np.arange(len(order))).any():  # rows in order (the usual case) need no copy of the data
        rows, data = rows[order], data[order]
    at = (slice(None),) if checkpoint is None else (int(checkpoint),)
    blocks = rows // block
    for b in np.unique(blocks):
        i, j = np.searchsorted(blocks, [b, b + 1])  # sorted rows: a block's rows are one run, data[i:j] a view
        lo, hi = int(rows[i]), int(rows[j - 1]) + 1
        if hi - lo == j - i and checkpoint is None:
            array[lo:hi] = data[i:j]
            continue
        span = np.asarray(array[(slice(lo, hi), *at)])
        span[rows[i:j] - lo] = data[i:j]
        array[(slice(lo, hi), *at)] = span


class ZooWriter:
    """Writes models into an existing zoo (from :func:`create`, or :func:`open_writer` to resume one)."""

    def __init__(self, path: str):
        self.path = str(path)
        self._group = _group.open_group(self.path, mode="r+")
        self._meta = dict(self._group.attrs["wszoo"])
        if not self._meta.get("initialized"):
            raise ZooError(f"{self.path!r} is a zoo whose creation was interrupted; create it again")
        table = _group.read_models_table(self._group, self.path, columns=("layout", "row"))
        self._layout_of = table["layout"].to_numpy()
        self._row_of = table["row"].to_numpy().astype(np.int64)
        self.block_size = int(self._meta["block_size"])
        self.checkpoints = list(self._meta["checkpoint_epochs"])
        self.metric_names = list(self._meta["metric_names"])
        self.layouts = {k: Layout.from_json(v) for k, v in self._meta["layouts"].items()}

    def __len__(self) -> int:
        return int(self._meta["num_models"])

    def rows(self, model_ids: Sequence[int]) -> tuple[str, np.ndarray]:
        """(layout key, rows within it) of models that share one layout."""
        ids = np.asarray([int(i) for i in model_ids], dtype=np.int64)
        if ids.size == 0:
            raise ZooError("no model ids given")
        if ids.min() < 0 or ids.max() >= len(self):
            raise ZooError(f"model ids out of range: this zoo has ids 0..{len(self) - 1}")
        if len(np.unique(ids)) != len(ids):
            raise ZooError("model ids given to one write must be distinct")
        keys = set(self._layout_of[ids].tolist())
        if len(keys) != 1:
            raise ZooError(f"one write takes models of one layout; these span {sorted(keys)}")
        return keys.pop(), self._row_of[ids]

    def write(
        self,
        model_ids: Sequence[int],
        weights: torch.Tensor | np.ndarray,
        metrics: torch.Tensor | np.ndarray | None = None,
        status: str | Sequence[str] = "done",
        last_checkpoint: Sequence[int] | None = None,
    ) -> None:
        """Write models' weights ``[n, C, P]``, metrics ``[n, C, K]`` and status, then commit them (state last).

        ``last_checkpoint`` (per model) is the last valid checkpoint index: C-1 for done models by default,
        the last all-finite checkpoint for diverged ones.
        """
        key, rows = self.rows(model_ids)
        n, c, p = len(rows), len(self.checkpoints), self.layouts[key].size
        w = _as_numpy(weights, np.float32)
        if w.shape != (n, c, p):
            raise ZooError(
                f"weights have shape {tuple(w.shape)}, expected [{n}, {c}, {p}] (models, checkpoints,"
                f" parameters of layout {key})"
            )
        k = len(self.metric_names)
        m = np.full((n, c, k), np.nan) if metrics is None else _as_numpy(metrics, np.float64)
        if m.shape != (n, c, k):
            raise ZooError(f"metrics have shape {tuple(m.shape)}, expected [{n}, {c}, {k}] ({self.metric_names})")
        statuses = [status] * n if isinstance(status, str) else list(status)
        if len(statuses) != n or any(s not in ("done", "diverged") for s in statuses):
            raise ZooError(f"status must be 'done' or 'diverged' (one, or one per model), got {status!r}")
        codes = np.asarray([STATUS_CODES[s] for s in statuses], dtype=np.int32)
        finite = np.isfinite(w).all(axis=2)  # [n, C]
        if last_checkpoint is None:
            last = np.where(codes == _group.DONE, c - 1, _last_true_prefix(finite))
        else:
            last = np.asarray([int(x) for x in last_checkpoint], dtype=np.int64)
            if last.shape != (n,) or (last < -1).any() or (last >= c).any():
                raise ZooError(f"last_checkpoint must give one index in -1..{c - 1} per model")
        upto = np.arange(c)[None, :] <= last[:, None]
        bad = np.nonzero((upto & ~finite).any(axis=1))[0]
        if len(bad):
            raise ZooError(
                f"weights of model {int(np.asarray(model_ids)[bad[0]])} are NaN/inf at a checkpoint it"
                " is committed for (mark it diverged with its last finite checkpoint)"
            )
        group = self._group
        # every chunk of a committed block exists, NaN ones included, so a missing file is always damage
        with zarr.config.set({"array.write_empty_chunks": True}):
            write_rows(group[f"layouts/{key}/weights"], rows, w, self.block_size)
            write_rows(group[f"layouts/{key}/metrics"], rows, m, self.block_size)
            write_rows(
                group[f"layouts/{key}/state"], rows, np.stack([codes, last.astype(np.int32)], axis=1), self.block_size
            )  # commit marker, last

    def write_canonical(self, model_ids: Sequence[int], weights: torch.Tensor, checkpoint: int | None = None) -> None:
        """Store re-based weights beside the raw ones: [n, C, P] for all checkpoints or [n, P] at one."""
        key, rows = self.rows(model_ids)
        raw = self._group[f"layouts/{key}/weights"]
        name = f"layouts/{key}/canonical"
        if name not in self._group:
            create_weights_array(self._group.require_group(f"layouts/{key}"), "canonical", *raw.shape, self.block_size)
        w = weights.detach().to(torch.float32).numpy()
        n = len(rows)
        expected = (n, raw.shape[2]) if checkpoint is not None else (n, raw.shape[1], raw.shape[2])
        if w.shape != expected:
            raise ZooError(f"canonical weights have shape {w.shape}, expected {expected}")
        write_rows(self._group[name], rows, w, self.block_size, checkpoint)

    def write_table(self, name: str, df: pd.DataFrame) -> None:
        """Store a small table (e.g. landscape metrics per model) inside the zoo, replacing any old one."""
        self.write_table_json(name, json.loads(df.to_json(orient="split", index=False)))

    def write_table_json(self, name: str, payload: Mapping) -> None:
        """Store a table already in pandas' ``orient="split"`` JSON form (columns, data), as read back by
        :meth:`zoo.store.reader.Zoo.table`."""
        check_node_name(name, "table name")
        self._group.require_group("tables").require_group(name).attrs["table"] = dict(payload)

    def mark_pending(self, layout_key: str, block: int) -> list[int]:
        """Delete one block's weights, metrics and canonical chunks and mark its models pending (the next
        build with the same config retrains them); returns their model ids. The state chunk goes last: it
        is the block's commit marker."""
        fs, root = _group.location(self.path)
        for array, ndim in (("weights", 3), ("metrics", 3), ("canonical", 3)):
            chunk = "/".join([root.rstrip("/"), "layouts", layout_key, array, "c", str(block), *("0" * (ndim - 1))])
            if fs.exists(chunk):
                fs.rm(chunk)
        state = self._group[f"layouts/{layout_key}/state"]
        lo = block * self.block_size
        hi = min(lo + self.block_size, state.shape[0])
        state[lo:hi] = np.zeros((hi - lo, 2), dtype=np.int32)  # pending
        rows = np.arange(lo, hi)
        return np.nonzero((self._layout_of == layout_key) & np.isin(self._row_of, rows))[0].tolist()

    def mark_rows_pending(self, layout_key: str, rows: Sequence[int]) -> list[int]:
        """Mark the models at ``rows`` of one layout pending, the rest of their block untouched: their weight (and
        canonical) chunks rewritten empty, a damaged one included (zarr rewrites a shard from the other chunks'
        stored bytes, never decoding them), metrics NaN, and their state rows last (the commit marker); returns
        their model ids. The next ``zoo build`` retrains exactly those models."""
        group = self._group[f"layouts/{layout_key}"]
        rows = sorted(int(r) for r in rows)
        for name in ("weights", "canonical", "metrics"):
            if name in group:
                array = group[name]
                for r in rows:
                    array[r] = np.full(array.shape[1:], np.nan, dtype=array.dtype)
        state = group["state"]
        for r in rows:
            state[r] = np.zeros(2, dtype=np.int32)  # pending
        return np.nonzero((self._layout_of == layout_key) & np.isin(self._row_of, rows))[0].tolist()

    def zoo(self) -> Zoo:
        """The zoo opened for reading."""
        return open_zoo(self.path)


def _last_true_prefix(finite: np.ndarray) -> np.ndarray:
    """Per row, the index of the last True of the leading run of Trues (-1 when the first is False)."""
    run = np.cumprod(finite, axis=1)
    return run.sum(axis=1).astype(np.int64) - 1


def _as_numpy(x: torch.Tensor | np.ndarray, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=dtype))


def open_writer(path: str) -> ZooWriter:
    """A writer for an existing zoo (to resume a build, or to fill models written later)."""
    return ZooWriter(str(path))
