"""The simplex generator: fits in seconds on a tiny zoo, samples have the layout's shapes, one seed gives the same
bits (also after save/load), and every sample is a convex combination of the fitted vertices, never a vertex."""

from __future__ import annotations

import pytest
import torch

import generators
import zoo
from generators.simplex.model import combine, draw_combinations
from generators.training_models import load_training_models
from tests.conftest import build_zoo, run_cli
from tests.generators.devices import check_device_paths

FAST = {"vertices": None, "steps": 6, "val_every": 3, "batch_models": 4, "batch_size": 32, "val_samples": 4, "k": 2}


@pytest.fixture(scope="module")
def seeds_zoo(tmp_path_factory) -> zoo.Zoo:
    """8 digits MLPs of one layout (width 8), one learning rate, 8 independent seeds."""
    return build_zoo(
        str(tmp_path_factory.mktemp("simplex") / "seeds.zarr"),
        "recipe.widths=[8]",
        "recipe.seeds=8",
        "recipe.learning_rates=[0.1]",
    )


@pytest.fixture(scope="module")
def run(seeds_zoo, tmp_path_factory) -> generators.Generator:
    return generators.fit("simplex", seeds_zoo.path, out=str(tmp_path_factory.mktemp("simplex") / "run"), **FAST)


def test_samples_have_the_layout_and_same_seed_same_bits(run):
    """State dicts in the zoo's layout; one seed gives identical bits, also from the reloaded run folder."""
    a = run.sample(5, seed=3)
    shapes = {k: tuple(v.shape) for k, v in run.layout.unflatten_batch(torch.zeros(1, run.layout.size)).items()}
    assert len(a) == 5 and all({k: (1, *v.shape) for k, v in s.items()} == shapes for s in a)
    loaded = generators.load(run.run_dir)
    b = loaded.sample(5, seed=3)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    c = run.sample(5, seed=4)
    assert not all(torch.equal(x[k], y[k]) for x, y in zip(a, c) for k in x)


def test_samples_lie_in_the_vertices_hull_and_copy_none(run):
    """Each sample is sum_i lambda_i v_i with lambda on the simplex over k distinct vertices (recomputed from the
    same draws), and no sample equals any vertex."""
    n, k = 32, int(run.config["k"])
    flat, _ = run.sample_flat(n, seed=7)
    gen = torch.Generator().manual_seed(7)
    pick, lam = draw_combinations(run.vertices.shape[0], n, k, float(run.config["alpha"]), gen)
    assert (lam >= 0).all() and torch.allclose(lam.sum(1), torch.ones(n, dtype=lam.dtype))
    assert all(len(set(row.tolist())) == k for row in pick)
    params = flat[:, run.param_mask]
    assert torch.equal(params, combine(run.vertices, pick, lam))
    dist = torch.cdist(params.double(), run.vertices.double()).min(1).values
    assert (dist > 1e-3).all()


def test_fit_moves_the_vertices_and_reads_training_data_only(run, seeds_zoo):
    """The vertices start at the aligned training models and the steps move them; the test split is not read
    (the fit's validation is a part of the training split: its best score is an accuracy in [0, 1])."""
    import json

    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["steps"] == FAST["steps"] and 0 <= summary["best_score"] <= 1
    assert [s for s, _ in summary["validation"]] == [0, 3, 6]
    assert run.vertices.shape == (len(run.origin["train_ids"]), int(run.param_mask.sum()))
    start = load_training_models(seeds_zoo.path, run.config, 0).train[:, run.param_mask]
    assert summary["best_step"] == 0 or not torch.equal(run.vertices, start)
    assert (run.vertices - start).norm(dim=1).max() < start.norm(dim=1).min()  # steps, not a new network


def test_cli_fit_and_sample(seeds_zoo, tmp_path, capsys):
    """`zoo fit generator=simplex` and `zoo sample` write a run folder and a zoo of samples."""
    out = tmp_path / "cli"
    rc, stdout, err = run_cli(
        capsys,
        "fit",
        "generator=simplex",
        f"zoo={seeds_zoo.path}",
        f"out={out}",
        "generator.steps=2",
        "generator.vertices=null",
        "generator.val_every=1",
        "generator.batch_models=2",
        "generator.val_samples=2",
    )
    assert rc == 0, err
    assert "zoo fit: simplex" in stdout
    rc, stdout, err = run_cli(capsys, "sample", str(out), "-n", "3", "--out", str(tmp_path / "s.zarr"))
    assert rc == 0, err
    assert len(zoo.open(str(tmp_path / "s.zarr")).models) == 3


def test_k_larger_than_the_training_models_is_one_line(seeds_zoo, tmp_path, capsys):
    rc, _, err = run_cli(
        capsys,
        "fit",
        "generator=simplex",
        f"zoo={seeds_zoo.path}",
        f"out={tmp_path / 'r'}",
        "generator.k=50",
        "generator.vertices=null",
    )
    assert rc != 0 and len(err.strip().splitlines()) == 1 and "generator.k=50" in err
    assert not (tmp_path / "r").exists()


def test_repair_sets_each_hidden_unit_to_its_parents_mix(run):
    """With repair, each hidden unit's pre-activation mean and std on REPAIR's training inputs are the lambda-weighted
    mix of its parents' (the first layer, where the inputs are the same for sample and parents)."""
    n, k = 6, int(run.config["k"])
    gen = torch.Generator().manual_seed(5)
    pick, lam = draw_combinations(run.vertices.shape[0], n, k, float(run.config["alpha"]), gen)
    fixed = run.repair(combine(run.vertices, pick, lam), pick, lam)
    x = run._repair_inputs()
    states = run.layout.unflatten_batch(torch.cat([fixed, run.vertices]))
    z = torch.baddbmm(
        states["layers.0.bias"].unsqueeze(1),
        x.expand(n + len(run.vertices), *x.shape),
        states["layers.0.weight"].transpose(1, 2),
    )
    mu, sd = z.mean(1), z.std(1)
    want_mu = torch.einsum("nk,nku->nu", lam.float(), mu[n:][pick])
    want_sd = torch.einsum("nk,nku->nu", lam.float(), sd[n:][pick])
    assert torch.allclose(mu[:n], want_mu, atol=1e-4) and torch.allclose(sd[:n], want_sd, atol=1e-4, rtol=1e-4)
    run.config["repair"] = True
    try:
        a, b = run.sample_flat(4, seed=2)[0], run.sample_flat(4, seed=2)[0]
    finally:
        run.config["repair"] = False
    assert torch.equal(a, b) and torch.isfinite(a).all()


@pytest.mark.parametrize("extra", [{}, {"noise": 0.1}, {"repair": True}])
def test_device_cpu_is_the_default_bits_and_generate_stays_on_the_device(run, extra):
    """``device="cpu"`` gives the default's bits, and the combinations, noise and REPAIR make every tensor on the
    generator's device (checked on the meta device: no GPU here)."""
    g = generators.load(run.run_dir)
    g.config.update(extra)
    check_device_paths(g, 4)
