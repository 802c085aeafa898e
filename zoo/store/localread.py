"""A local store's small arrays read straight from their ``zarr.json`` files, without zarr-python.

``zoo info`` reads metadata, the models table, states and metrics: a few small arrays whose reading takes
milliseconds, while importing zarr (and pandas) costs ~0.8 s of CPU. This reader understands exactly the
encodings the store writes for those arrays (little-endian bytes, then crc32c or zstd; regular chunks along the
first axis) and raises :class:`Unsupported` for anything else, so the caller falls back to zarr-python. Checksums
are verified; a chunk that was never written reads as the fill value, like zarr (the caller decides if that is
an error). Tests check that both readers give the same values and the same summary.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import google_crc32c
import numpy as np

from zoo.errors import ZooError

SIMPLE_TYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64")


def checked(buf: bytes, what: str) -> bytes:
    """Payload of a chunk encoded as bytes + crc32c; a wrong checksum or size is a ZooError."""
    if len(buf) < 4 or google_crc32c.value(buf[:-4]) != int.from_bytes(buf[-4:], "little"):
        raise ZooError(f"{what} is corrupt (checksum mismatch)")
    return buf[:-4]


class Unsupported(Exception):
    """Something this reader does not handle (an encoding, a layout): read it through zarr-python instead."""


def node_meta(folder: str) -> dict:
    """The parsed ``zarr.json`` of a node (Unsupported when absent or unreadable: zarr then names the fault)."""
    try:
        with open(os.path.join(folder, "zarr.json"), "rb") as f:
            meta = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise Unsupported(str(e)) from None
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3:
        raise Unsupported(f"{folder} is not a zarr v3 node")
    return meta


def _fill(value: Any, dtype: np.dtype) -> Any:
    """A zarr v3 fill value as numpy takes it ('NaN', 'Infinity' and '-Infinity' are strings in JSON)."""
    if isinstance(value, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[value]
    return dtype.type(value)


class LocalArray:
    """One array of a local store, read whole (it is small: a table column, states, metrics)."""

    def __init__(self, folder: str, path: str, meta: dict):
        self.folder, self.path = folder, path
        self.attrs: dict = dict(meta.get("attributes") or {})
        self.shape = tuple(int(n) for n in meta["shape"])
        if meta.get("data_type") not in SIMPLE_TYPES or meta.get("storage_transformers"):
            raise Unsupported(f"array {path}: data type {meta.get('data_type')!r}")
        grid, keys = meta.get("chunk_grid", {}), meta.get("chunk_key_encoding", {})
        if grid.get("name") != "regular" or keys.get("name") != "default":
            raise Unsupported(f"array {path}: chunk grid or key encoding")
        if (keys.get("configuration") or {}).get("separator", "/") != "/":
            raise Unsupported(f"array {path}: chunk key separator")
        self.chunks = tuple(int(n) for n in grid["configuration"]["chunk_shape"])
        if self.shape and self.chunks[1:] != self.shape[1:]:
            raise Unsupported(f"array {path}: chunked along more than its first axis")
        codecs = [c.get("name") for c in meta.get("codecs", [])]
        if not codecs or codecs[0] != "bytes" or codecs[1:] not in ([], ["crc32c"], ["zstd"]):
            raise Unsupported(f"array {path}: codecs {codecs}")
        endian = (meta["codecs"][0].get("configuration") or {}).get("endian", "little")
        if endian != "little":
            raise Unsupported(f"array {path}: {endian}-endian")
        self.dtype = np.dtype(meta["data_type"]).newbyteorder("<")
        self.fill_value = _fill(meta.get("fill_value", 0), self.dtype)
        self._codec = codecs[1] if len(codecs) > 1 else None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def _payload(self, buf: bytes, path: str) -> bytes:
        """A chunk file's bytes after its codec (checksum verified, zstd decompressed)."""
        if self._codec == "crc32c":
            return checked(buf, f"chunk {path}")
        if self._codec == "zstd":
            from numcodecs.zstd import Zstd

            try:
                return bytes(Zstd().decode(buf))
            except Exception as e:
                raise ZooError(f"chunk {path} is corrupt ({e.__class__.__name__}: {e})") from None
        return buf

    def _chunk(self, k: int) -> np.ndarray | None:
        """Chunk ``k`` along the first axis, or None when it was never written."""
        path = os.path.join(self.folder, "c", str(k), *("0",) * (len(self.shape) - 1))
        try:
            with open(path, "rb") as f:
                buf = f.read()
        except FileNotFoundError:
            return None
        data = np.frombuffer(self._payload(buf, path), dtype=self.dtype)
        expected = int(np.prod(self.chunks, dtype=np.int64))
        if data.size != expected:
            raise ZooError(f"chunk {path} is corrupt: {data.size} values, expected {expected}")
        return data.reshape(self.chunks)

    def _rows(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows lo..hi, whether each chunk they span was written); unwritten chunks hold the fill value."""
        if not self.shape:
            raise Unsupported(f"array {self.path}: a scalar")
        out = np.full((hi - lo, *self.shape[1:]), self.fill_value, dtype=self.dtype)
        rows_per = self.chunks[0]
        first, last = lo // rows_per, -(-hi // rows_per)
        written = np.zeros(max(0, last - first), dtype=bool)
        for k in range(first, last):
            data = self._chunk(k)
            if data is None:
                continue
            a, b = max(lo, k * rows_per), min(hi, (k + 1) * rows_per)
            out[a - lo : b - lo] = data[a - k * rows_per : b - k * rows_per]
            written[k - first] = True
        return out, written

    def read_whole(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, whether each chunk along the first axis was written); unwritten chunks hold the fill value."""
        return self._rows(0, self.shape[0] if self.shape else 0)

    def __getitem__(self, selection: Any) -> np.ndarray:
        """``array[lo:hi]`` reads only the chunks it spans; any other selection reads the whole array."""
        if isinstance(selection, slice) and selection.step in (None, 1) and self.shape:
            lo, hi, _ = selection.indices(self.shape[0])
            return self._rows(lo, max(lo, hi))[0]
        return self.read_whole()[0][selection]


class LocalGroup:
    """A group of a local store: its attributes, and its members by relative path."""

    def __init__(self, folder: str, path: str = ""):
        meta = node_meta(folder)
        if meta.get("node_type") != "group":
            raise Unsupported(f"{folder} is not a group")
        self.folder, self.path = folder, path
        self.attrs: dict = dict(meta.get("attributes") or {})

    def __getitem__(self, name: str) -> LocalArray | LocalGroup:
        folder = os.path.join(self.folder, *name.split("/"))
        if not os.path.isfile(os.path.join(folder, "zarr.json")):
            raise KeyError(name)
        path = f"{self.path}/{name}".strip("/")
        meta = node_meta(folder)
        if meta.get("node_type") == "group":
            return LocalGroup(folder, path)
        return LocalArray(folder, path, meta)

    def __contains__(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.folder, *name.split("/"), "zarr.json"))

    def group_keys(self) -> list[str]:
        """The names of the member groups (sorted)."""
        names = sorted(e.name for e in os.scandir(self.folder) if e.is_dir() and e.name in self)
        return [n for n in names if node_meta(os.path.join(self.folder, n)).get("node_type") == "group"]


def open_local(path: str) -> LocalGroup:
    """The root group of a zoo on local disk (Unsupported for URLs or anything this reader cannot read)."""
    if "://" in path and not path.startswith("file://"):
        raise Unsupported("not a local path")
    return LocalGroup(path.removeprefix("file://"))
