"""The registry: each method package registers itself (the import rules around it, LAYOUT.md rules 3 and 6, are
import-linter contracts run by tests/test_import_rules.py)."""

from __future__ import annotations

import pytest

import generators
from generators import registry
from zoo.errors import ZooError

METHODS = ("dwf", "d2nwg", "known", "simplex")


def test_every_method_registers_itself():
    assert registry.names() == sorted(METHODS)
    assert registry.get("dwf").cls is generators.DeepWeightFlow and registry.get("dwf").fit is None
    assert registry.get("known").cls is generators.Known and registry.get("known").fit is not None
    assert registry.get("simplex").fit is not None  # its own loop, like KNOWN's


def test_unknown_method_is_a_one_line_error():
    with pytest.raises(ZooError, match="unknown generator 'nope'"):
        registry.get("nope")
