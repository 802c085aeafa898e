"""The zoo store: read a zoo (:mod:`zoo.store.reader`), write one (:mod:`zoo.store.writer`), and the tools
around them (lock, verify, upgrade, transfer). Import the names below from here."""
from zoo.store.reader import CLASSIFICATION_METRICS, REGRESSION_METRICS, SCHEMA_VERSION, Zoo, open, summarize
from zoo.store.writer import ZooWriter, create, open_writer

__all__ = ["Zoo", "open", "summarize", "ZooWriter", "create", "open_writer", "SCHEMA_VERSION",
           "CLASSIFICATION_METRICS", "REGRESSION_METRICS"]
