"""Direct reads of the store's local arrays, bypassing zarr-python's per-chunk pipeline on hot paths.

zarr-python costs ~0.7 ms per chunk here, which would make a random batch of models (one inner chunk per
model and checkpoint, spread over many shards) run at ~1k models/s. The store writes every array with
one fixed encoding (little-endian bytes + crc32c, default '/'-separated keys; weights sharded with the
index at the end), so on local disk we read those files with ``os.pread`` and numpy, verifying every
checksum. Anything else (fsspec URLs, other encodings) returns None and the caller goes through zarr.
Tests check that both paths read the same values.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from zoo.errors import ZooError
from zoo.store.localread import LocalArray, Unsupported, checked, node_meta

if TYPE_CHECKING:
    import zarr

_EMPTY = np.uint64(2**64 - 1)


def _is_bytes_crc(codecs) -> bool:
    names = [type(c).__name__ for c in codecs]
    return names == ["BytesCodec", "Crc32cCodec"] and str(getattr(codecs[0], "endian", "little")).endswith("little")


def _default_keys(meta) -> bool:
    enc = meta.chunk_key_encoding
    return type(enc).__name__ == "DefaultChunkKeyEncoding" and enc.separator == "/"


def _local_folder(array: zarr.Array) -> str | None:
    import zarr

    store = array.store
    if not isinstance(store, zarr.storage.LocalStore):
        return None
    return os.path.join(str(store.root), array.path)


def shard_geometry(array: zarr.Array) -> tuple[str, int, int] | None:
    """(folder, models per shard, checkpoints) of a local weights array this module can read, else None."""
    folder = _local_folder(array)
    meta = array.metadata
    codecs = getattr(meta, "codecs", ())
    if folder is None or len(codecs) != 1 or type(codecs[0]).__name__ != "ShardingCodec" or not _default_keys(meta):
        return None
    shard, inner = codecs[0], tuple(codecs[0].chunk_shape)
    outer = tuple(meta.chunk_grid.chunk_shape)
    n, c, p = array.shape
    if (
        inner != (1, 1, p)
        or outer[1:] != (c, p)
        or str(array.dtype) != "float32"
        or str(shard.index_location.value if hasattr(shard.index_location, "value") else shard.index_location) != "end"
        or not _is_bytes_crc(shard.codecs)
        or not _is_bytes_crc(shard.index_codecs)
    ):
        return None
    return folder, int(outer[0]), int(c)


_INDEX_CACHE: dict[str, tuple[tuple[int, int, int], np.ndarray]] = {}
_INDEX_CACHE_MAX = 8192  # shards; ~12 KB each for 256 models x 3 checkpoints


def _shard_index(fd: int, path: str, st: os.stat_result, index_bytes: int, per_shard: int, c: int) -> np.ndarray:
    """The verified ``[models, C, 2]`` (offset, nbytes) index of a shard, cached while the file is unchanged
    (same inode, size and mtime: shards are replaced whole by atomic renames, never edited in place)."""
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    hit = _INDEX_CACHE.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    index = np.frombuffer(
        checked(os.pread(fd, index_bytes, st.st_size - index_bytes), f"index of shard {path}"), dtype="<u8"
    ).reshape(per_shard, c, 2)
    if len(_INDEX_CACHE) >= _INDEX_CACHE_MAX:
        _INDEX_CACHE.clear()
    _INDEX_CACHE[path] = (stamp, index)
    return index


def read_checkpoint_rows(array: zarr.Array, rows: np.ndarray, checkpoint: int) -> np.ndarray:
    """[len(rows), P] float32: rows of a [n, C, P] weights array at one checkpoint (NaN where unwritten)."""
    geometry = shard_geometry(array)
    if geometry is None:
        try:
            return np.asarray(array.oindex[np.asarray(rows), int(checkpoint), :])
        except Exception as e:  # truncated or garbled chunk behind an fsspec URL
            raise ZooError(
                f"weights array {array.path!r} is corrupt or unreadable ({e.__class__.__name__}: {e})"
            ) from None
    folder, per_shard, c = geometry
    p = array.shape[2]
    out = np.empty((len(rows), p), dtype=np.float32)
    rows = np.asarray(rows, dtype=np.int64)
    index_bytes = per_shard * c * 16 + 4
    for shard in np.unique(rows // per_shard):
        path = os.path.join(folder, "c", str(int(shard)), "0", "0")
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # never written: NaN (zarr's fill value); the caller decides if that is an error
            out[rows // per_shard == shard] = np.nan
            continue
        try:
            st = os.fstat(fd)
            size = st.st_size
            if size < index_bytes:
                raise ZooError(f"weights shard {path} is corrupt: {size} bytes, shorter than its index")
            index = _shard_index(fd, path, st, index_bytes, per_shard, c)
            for j in np.nonzero(rows // per_shard == shard)[0]:
                offset, nbytes = index[rows[j] % per_shard, checkpoint]
                if offset == _EMPTY:
                    out[j] = np.nan
                    continue
                if nbytes != p * 4 + 4 or offset + nbytes > size - index_bytes:
                    raise ZooError(f"weights shard {path} is corrupt (bad index entry for row {int(rows[j])})")
                buf = checked(
                    os.pread(fd, int(nbytes), int(offset)),
                    f"weights of row {int(rows[j])}, checkpoint {checkpoint} in {path}",
                )
                out[j] = np.frombuffer(buf, dtype="<f4")
        finally:
            os.close(fd)
    return out


def read_whole(array: zarr.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """The whole of a small local array chunked along its first axis only (state, metrics) and whether each of
    its chunks was written (unwritten ones read as the fill value; the caller decides if that is an error),
    else None."""
    if isinstance(array, LocalArray):  # a store opened without zarr-python (zoo info): it reads itself
        return array.read_whole()
    folder = _local_folder(array)
    meta = array.metadata
    codecs = getattr(meta, "codecs", ())
    if folder is None or not _is_bytes_crc(codecs) or not _default_keys(meta):
        return None
    try:  # the same files read as zoo info's reader reads them (zoo.store.localread)
        return LocalArray(folder, array.path, node_meta(folder)).read_whole()
    except Unsupported:  # chunked along more than the first axis, ...: zarr reads it
        return None
