"""Shared fixtures: small real zoos built once per test session."""

from __future__ import annotations

import os

import pytest
import torch

import zoo
from zoo.app.config import compose

TINY = ["recipe=tiny", "progress=false"]

# The suite's models are tiny: one thread is as fast on a quiet machine and many times faster when other
# processes share the cores (OpenMP threads spin). Subprocesses (the CLI tests) inherit the variable.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def build_zoo(out: str, *overrides: str) -> zoo.Zoo:
    """Build a zoo through the same config path as the CLI."""
    return zoo.build(compose("build", [f"out={out}", *TINY, *overrides]))


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> zoo.Zoo:
    """4 digits MLPs (2 widths x 2 seeds), 3 epochs, checkpoints at epochs 0, 1, 3."""
    return build_zoo(str(tmp_path_factory.mktemp("zoos") / "tiny.zarr"))
