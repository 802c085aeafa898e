"""Shared fixtures: small real zoos built once per test session."""

from __future__ import annotations

import math
import os

import pytest
import torch

import zoo
from zoo.app.config import compose

TINY = ["recipe=tiny", "progress=false"]
FLOAT32_EPS = torch.finfo(torch.float32).eps

# The suite's models are tiny: one thread is as fast on a quiet machine and many times faster when other
# processes share the cores (OpenMP threads spin). Subprocesses (the CLI tests) inherit the variable.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def float32_sum_atol(scale: float, n: int, ulps: float = 4.0) -> float:
    """Absolute tolerance between two float32 results that sum the same n terms of magnitude ``scale`` in a
    different order (different batch shapes take different kernels and summation orders).

    Why sqrt(n): the rounding error of a length-n float32 sum grows like sqrt(n) ulps of the terms' magnitude
    (Higham & Mary 2019, the probabilistic bound rounding follows in practice); the worst-case n ulps would be
    so loose (4e-3 for BatchNorm over 200 images of 8x8) that it passed a real 1e-4 error. ``ulps`` covers the
    few roundings around the sum (the layers before it, the averaging after it). Bit-equality stays the check
    for identical computations (rebuilds, resumes, Dask vs local, the same call twice).
    """
    return ulps * FLOAT32_EPS * math.sqrt(n) * scale


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``zoo ARGS`` in this process (exit code, stdout, stderr): the CLI's own entry point, error
    handling included, without paying a fresh interpreter's imports per call (tests/zoo/training/test_build.py
    keeps real subprocesses for the end-to-end and signal tests)."""
    from zoo.commands.main import main

    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def build_zoo(out: str, *overrides: str) -> zoo.Zoo:
    """Build a zoo through the same config path as the CLI."""
    return zoo.build(compose("build", [f"out={out}", *TINY, *overrides]))


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> zoo.Zoo:
    """4 digits MLPs (2 widths x 2 seeds), 3 epochs, checkpoints at epochs 0, 1, 3."""
    return build_zoo(str(tmp_path_factory.mktemp("zoos") / "tiny.zarr"))
