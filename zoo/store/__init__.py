"""The zoo store: read a zoo (:mod:`zoo.store.reader`), write one (:mod:`zoo.store.writer`), and the tools
around them (lock, verify, upgrade, transfer). Import the names below from here."""

from zoo.store._group import (
    SCHEMA_VERSION,
    existing_meta,
    path_exists,
    remove,
)
from zoo.store.reader import Zoo, open, summarize
from zoo.store.writer import ZooWriter, create, open_writer, refuse_existing, staged

__all__ = [
    "Zoo",
    "open",
    "summarize",
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
