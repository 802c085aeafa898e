"""The zoo store: read a zoo (:mod:`zoo.store.reader`), write one (:mod:`zoo.store.writer`), and the tools
around them (lock, verify, upgrade, transfer). Import the names below from here.

The names are imported on first use (``zoo.lazy``): ``zoo.store.lock`` (stdlib only) loads no zarr or pandas, and
``open_meta``/``summarize`` (:mod:`zoo.store.meta`: a zoo without its weights) load no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo.lazy import lazy_exports

if TYPE_CHECKING:
    from zoo.store._group import SCHEMA_VERSION, existing_meta, path_exists, remove
    from zoo.store.meta import ZooMeta, open_meta, summarize
    from zoo.store.reader import Zoo, open
    from zoo.store.writer import ZooWriter, create, open_writer, refuse_existing, staged

_LAZY = {
    "SCHEMA_VERSION": "zoo.store._group",
    "existing_meta": "zoo.store._group",
    "path_exists": "zoo.store._group",
    "remove": "zoo.store._group",
    "Zoo": "zoo.store.reader",
    "open": "zoo.store.reader",
    "ZooMeta": "zoo.store.meta",
    "open_meta": "zoo.store.meta",
    "summarize": "zoo.store.meta",
    "ZooWriter": "zoo.store.writer",
    "create": "zoo.store.writer",
    "open_writer": "zoo.store.writer",
    "refuse_existing": "zoo.store.writer",
    "staged": "zoo.store.writer",
}
__getattr__, __dir__ = lazy_exports(
    __name__, _LAZY, ("columns", "fastread", "lock", "meta", "reader", "writer", "verify", "upgrade", "transfer")
)

__all__ = [
    "Zoo",
    "open",
    "summarize",
    "ZooMeta",
    "open_meta",
    "ZooWriter",
    "create",
    "open_writer",
    "refuse_existing",
    "staged",
    "existing_meta",
    "path_exists",
    "remove",
    "SCHEMA_VERSION",
]
