"""Fast path for the hottest read, a batch of models at one checkpoint, on local uncompressed stores.

zarr-python's async pipeline costs ~0.7 ms per chunk here, which dominated ``Zoo.weights`` (measured by
bench/store.py: ~1k models/s through zarr vs ~20k reading the same chunk files directly). The weights
arrays are written with one raw little-endian float32 chunk per (model, checkpoint) and zarr's default
``c/<row>/<checkpoint>/0`` keys, so when the array is on local disk with exactly that encoding we read
those files with numpy. Anything else (fsspec URLs, other codecs) goes through zarr.
"""
from __future__ import annotations

import os

import numpy as np
import zarr

from .errors import ZooError


def _local_root(array: zarr.Array) -> str | None:
    """Folder of a local, raw-float32, (1, 1, P)-chunked array with '/'-separated default keys; else None."""
    store = array.store
    if not isinstance(store, zarr.storage.LocalStore):
        return None
    meta = array.metadata
    try:
        codecs = meta.codecs
        raw = len(codecs) == 1 and type(codecs[0]).__name__ == "BytesCodec" and \
            str(getattr(codecs[0], "endian", "little")).endswith("little")
        default_keys = type(meta.chunk_key_encoding).__name__ == "DefaultChunkKeyEncoding" and \
            meta.chunk_key_encoding.separator == "/"
        chunks = tuple(meta.chunk_grid.chunk_shape)
    except AttributeError:
        return None
    if not (raw and default_keys and chunks == (1, 1, array.shape[2]) and str(array.dtype) == "float32"):
        return None
    return os.path.join(str(store.root), array.path)


def read_checkpoint_rows(array: zarr.Array, rows: np.ndarray, checkpoint: int) -> np.ndarray:
    """[len(rows), P] float32: rows of a [n, C, P] weights array at one checkpoint (NaN where unwritten)."""
    root = _local_root(array)
    if root is None:
        try:
            return np.asarray(array.oindex[rows, int(checkpoint), :])
        except Exception as e:  # truncated or garbled chunk behind an fsspec URL
            raise ZooError(f"weights array {array.path!r} is corrupt or unreadable ({e.__class__.__name__}: {e})") from None
    p = array.shape[2]
    out = np.empty((len(rows), p), dtype=np.float32)
    for j, r in enumerate(rows):
        path = os.path.join(root, "c", str(int(r)), str(int(checkpoint)), "0")
        try:
            chunk = np.fromfile(path, dtype="<f4")
        except FileNotFoundError:
            out[j] = np.nan  # never written: zarr's fill value
            continue
        if chunk.size != p:
            raise ZooError(f"weights chunk {path} is corrupt: {chunk.size * 4} bytes, expected {p * 4}")
        out[j] = chunk
    return out
