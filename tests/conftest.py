"""Shared fixtures: small real zoos built once per test session."""
from __future__ import annotations

import pytest

import zoo
from zoo.config import compose

TINY = ["recipe=tiny", "progress=false"]


def build_zoo(out: str, *overrides: str) -> zoo.Zoo:
    """Build a zoo through the same config path as the CLI."""
    return zoo.build(compose("build", [f"out={out}", *TINY, *overrides]))


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> zoo.Zoo:
    """4 digits MLPs (2 widths x 2 seeds), 3 epochs, checkpoints at epochs 0, 1, 3."""
    return build_zoo(str(tmp_path_factory.mktemp("zoos") / "tiny.zarr"))
