"""Where a zoo lives and what its root group says: the one place that opens a store, for reader and writer alike.

Local paths use zarr's LocalStore (the fast read path in :mod:`zoo.store.fastread` relies on it); any other
fsspec URL uses FsspecStore. The root group's ``wszoo`` attributes carry the schema version; a model's
state row (status, last checkpoint) uses the status codes below.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError
from zoo.store.columns import read_table
from zoo.store.localread import Unsupported, open_local

if TYPE_CHECKING:  # zarr and pandas cost ~0.8 s to import: `zoo info` reads a local zoo without them
    import pandas as pd
    import zarr

SCHEMA_VERSION = 2
STATUS = ("pending", "done", "diverged")
PENDING, DONE, DIVERGED = 0, 1, 2


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def location(path: str) -> tuple[Any, str]:
    """(fsspec filesystem, root) for a local path, a file:// URL or any fsspec URL."""
    import fsspec

    return fsspec.core.url_to_fs(str(path))


def store_for(path: str, read_only: bool) -> Any:
    """A zarr store: LocalStore on local disk (the fast read path relies on it), FsspecStore elsewhere."""
    import zarr

    path = str(path)
    if _is_url(path):
        return zarr.storage.FsspecStore.from_url(path, read_only=read_only)
    return zarr.storage.LocalStore(path.removeprefix("file://"), read_only=read_only)


def _exists(path: str) -> bool:
    """Whether a zarr group is present at path (local or fsspec)."""
    if not _is_url(path):  # without fsspec's ~0.15 s import (zoo info)
        return os.path.isfile(os.path.join(path.removeprefix("file://"), "zarr.json"))
    fs, root = location(path)
    return fs.exists(root.rstrip("/") + "/zarr.json")


def path_exists(path: str) -> bool:
    if not _is_url(path):
        return os.path.exists(path.removeprefix("file://"))
    fs, root = location(path)
    return fs.exists(root)


def remove(path: str) -> None:
    """Delete whatever is at ``path`` (a store being replaced)."""
    fs, root = location(path)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def existing_meta(path: str) -> dict | None:
    """The wszoo attributes of what is at ``path`` (None if nothing is there); refuse foreign content."""
    fs, root = location(path)
    if not fs.exists(root):
        return None
    if not _exists(path):
        if fs.isdir(root) and not fs.ls(root):
            return None
        raise ZooError(f"{path!r} exists and is not a zoo; choose another path or remove it")
    import zarr

    try:
        group = zarr.open_group(store=store_for(path, read_only=True), mode="r")
        meta = group.attrs.get("wszoo")
    except Exception as e:
        raise ZooError(f"{path!r} holds a corrupt Zarr group ({e.__class__.__name__}: {e}); remove it") from None
    if not isinstance(meta, Mapping):
        raise ZooError(f"{path!r} is a Zarr group but not a zoo; choose another path or remove it")
    return dict(meta)


def open_group(path: str, mode: str = "r", light: bool = False) -> Any:
    """Open the zoo's root group; ZooError when nothing or something else is there. ``light`` (read only): a
    local store is read straight from its files (:mod:`zoo.store.localread`, no zarr import) where it can be."""
    if not path_exists(path):
        raise ZooError(f"no zoo at {path!r}: the path does not exist")
    if not _exists(path):
        raise ZooError(f"{path!r} is not a zoo: it has no zarr.json (is it the right folder?)")
    group: Any = None
    if light and mode == "r":
        try:
            group = open_local(str(path))
        except Unsupported:  # zarr-python below reads it, or names what is wrong
            group = None
    if group is None:
        import zarr

        try:
            group = zarr.open_group(store=store_for(path, read_only=(mode == "r")), mode="r" if mode == "r" else "r+")
        except Exception as e:  # corrupt metadata, a zarr v2 array, ...
            raise ZooError(f"{path!r} is not a readable zoo ({e.__class__.__name__}: {e})") from None
    meta = group.attrs.get("wszoo")
    if not isinstance(meta, Mapping):
        raise ZooError(f"{path!r} is a Zarr group but not a wszoo zoo (no 'wszoo' attributes)")
    version = meta.get("schema_version")
    if version == 1:
        raise ZooError(f"{path!r} was written by an older wszoo (schema 1): convert it with `zoo upgrade {path}`")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ZooError(
            f"{path!r} has zoo schema version {version}; this wszoo reads up to {SCHEMA_VERSION}: upgrade wszoo"
        )
    return group


def read_models_table(group: zarr.Group, where: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The models table (or some of its columns) of an open zoo group."""
    try:
        models = group["models"]
    except KeyError:
        raise ZooError(f"zoo {where!r} has no models table") from None
    return read_table(models, where, columns)
