"""Landscape metrics are reproducible: same zoo + same config gives identical numbers, whatever the
process's thread count or how models are grouped into populations (per-model random streams)."""

import numpy as np
import pandas as pd
import pytest
import torch

import zoo
from zoo.commands.main import main
from zoo.landscape.compute import compute_landscape

CFG = {"probes": 4, "power_iters": 5, "bezier_steps": 20, "batches": 1, "batch_size": 64, "bootstrap": 20}
METRICS = [
    "train_loss",
    "hessian_trace",
    "hessian_top_eigenvalue",
    "mode_connectivity",
    "mode_connectivity_linear",
    "cka",
]


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro") / "z.zarr"
    assert (
        main(
            [
                "build",
                "recipe=tiny",
                f"out={out}",
                "progress=false",
                "threads=1",
                "recipe.widths=[4,16]",
                "recipe.batch_sizes=[16,256]",
                "recipe.seeds=3",
                "recipe.epochs=2",
                "recipe.checkpoint_epochs=[0,2]",
            ]
        )
        == 0
    )
    return zoo.open(str(out))


def _run(z, **over):
    df = compute_landscape(z, {**CFG, **over}, write=False)
    return df, df.attrs["pairs"], df.attrs["cells"]


def test_same_zoo_same_config_identical_numbers(tiny_zoo):
    threads = torch.get_num_threads()
    try:
        a, pa, ca = _run(tiny_zoo)
        torch.set_num_threads(2)  # the config pins threads=1 while computing: the caller's setting is irrelevant
        b, pb, cb = _run(tiny_zoo)
    finally:
        torch.set_num_threads(threads)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    pd.testing.assert_frame_equal(pa, pb, check_exact=True)
    pd.testing.assert_frame_equal(ca, cb, check_exact=True)
    assert a[METRICS].notna().all().all() and pa["mode_connectivity_boot_std"].gt(0).all()


def test_numbers_do_not_depend_on_population_grouping(tiny_zoo):
    """chunk=1 evaluates every model (and pair) alone: same random draws, same numbers up to float rounding."""
    a, pa, _ = _run(tiny_zoo)
    b, pb, _ = _run(tiny_zoo, chunk=1)
    for c in METRICS:
        assert np.allclose(a[c], b[c], rtol=1e-4, atol=1e-6), c
    assert np.allclose(pa["mode_connectivity"], pb["mode_connectivity"], rtol=1e-4, atol=1e-5)


def test_a_different_seed_changes_the_estimates(tiny_zoo):
    """The invariance above is not vacuous: the landscape seed does move the stochastic estimates."""
    a, pa, _ = _run(tiny_zoo)
    b, pb, _ = _run(tiny_zoo, seed=1)
    assert not np.allclose(a["hessian_trace"], b["hessian_trace"])
    assert not np.allclose(pa["mode_connectivity"], pb["mode_connectivity"])
