"""Trajectory zoos (recipe kind: trajectory, zoo.trajectory): nested subsets, the checkpoint contract, stages that
train on their subset only and continue from the previous weights, exact sit-outs, resume, and bad configs."""

import numpy as np
import pytest
import torch
import zarr

import zoo
from tests.conftest import run_cli
from zoo import ZooError
from zoo.app.config import compose
from zoo.store._group import PENDING
from zoo.training.build import make_build_plan
from zoo.training.recipe import load_recipe_datasets
from zoo.training.trajectory import reversed_order, reversed_trajectories, stage_subsets, subset_seed

# 4 digits MLPs (2 batch sizes x 2 seeds): 2 full-data epochs, then 3 one-epoch stages
SMALL = [
    "recipe=know-trajectories",
    "progress=false",
    "recipe.widths=[8]",
    "recipe.sample_hparams=false",
    "recipe.learning_rates=[0.05]",
    "recipe.batch_sizes=[32,64]",
    "recipe.seeds=2",
    "recipe.epochs=2",
    "recipe.checkpoint_epochs=[0,2]",
    "recipe.stages=3",
]


def _build(out, *overrides: str) -> zoo.Zoo:
    return zoo.build(compose("build", [f"out={out}", *SMALL, *overrides]))


@pytest.fixture(scope="module")
def traj(tmp_path_factory) -> zoo.Zoo:
    return _build(tmp_path_factory.mktemp("traj") / "t.zarr")


def test_stage_subsets_are_nested_deterministic_and_sized_by_the_rates():
    a = stage_subsets(1000, 6, (0.3, 0.9), seed=11)
    assert [len(s) for s in a.subsets] == a.sizes
    previous = set(range(1000))
    for r, size, s in zip(a.rates, a.sizes, a.subsets):
        assert 0.3 <= r <= 0.9 and size == max(1, round(r * len(previous)))
        assert set(s.tolist()) <= previous and len(set(s.tolist())) == size  # inside the previous one, no repeats
        previous = set(s.tolist())
    b = stage_subsets(1000, 6, (0.3, 0.9), seed=11)
    assert all(torch.equal(x, y) for x, y in zip(a.subsets, b.subsets)) and a.rates == b.rates
    assert stage_subsets(1000, 6, (0.3, 0.9), seed=12).sizes != a.sizes
    assert stage_subsets(10, 5, (0.01, 0.01), seed=0).sizes == [1] * 5  # never empty


def test_sampled_hparams_are_per_model_in_range_and_deterministic():
    """recipe.sample_hparams: each model draws a log-uniform learning rate and one of the batch sizes; populations
    still share one batch size."""
    cfg = compose("build", ["out=/nonexistent.zarr", "recipe=know-trajectories", "recipe.seeds=300"])
    data = load_recipe_datasets(cfg["recipe"])
    plan = make_build_plan(cfg, data)
    lr = np.array([m.learning_rate for m in plan.models])
    bs = np.array([m.batch_size for m in plan.models])
    assert len(plan.models) == 300 and len(set(lr)) == 300 and set(bs) == {16, 32, 64}
    assert (lr >= 0.01).all() and (lr <= 0.1).all()
    third = np.quantile(np.log10(lr), [1 / 3, 2 / 3])  # log-uniform: terciles near -1.667 and -1.333
    assert np.allclose(third, [-5 / 3, -4 / 3], atol=0.08), third
    assert all(len({plan.models[i].batch_size for i in pop}) == 1 for pop in plan.populations)
    again = make_build_plan(cfg, data)
    assert [(m.learning_rate, m.batch_size) for m in again.models] == list(zip(lr.tolist(), bs.tolist()))


def test_checkpoints_are_in_training_order_and_the_reversed_trajectory_ends_at_full_data(traj):
    info = traj.attrs["trajectory"]
    assert traj.checkpoint_epochs == [0, 2, 3, 4, 5]
    assert (info["init_checkpoint"], info["full_checkpoint"], info["stage_checkpoints"]) == (0, 1, [2, 3, 4])
    assert reversed_order(traj) == [4, 3, 2, 1]
    m = traj.models
    assert (m.status == "done").all()
    ids = m.model_id.to_numpy()
    rev = reversed_trajectories(traj, m.layout[0], ids)
    full = traj.weights(ids, checkpoint=None)
    assert rev.shape == (len(ids), 4, full.shape[2])
    assert torch.equal(rev[:, -1], traj.weights(ids, checkpoint=1))  # last = full data
    assert torch.equal(rev[:, 0], traj.weights(ids, checkpoint=-1))  # first = smallest subset (last trained)
    assert torch.equal(rev, full[:, [4, 3, 2, 1]])
    assert torch.equal(reversed_trajectories(traj), rev)  # one layout: every done model by default
    # the models table records each model's subsets; they are the ones the seed gives
    n_train = len(traj.dataset().X_train)
    for _, row in m.iterrows():
        assert row.subset_seed == subset_seed(row.model_id, row.seed)
        plan = stage_subsets(n_train, 3, (0.3, 0.9), row.subset_seed)
        assert list(row.stage_sizes) == plan.sizes and np.allclose(row.stage_rates, plan.rates)
        assert np.allclose(row.stage_fractions, np.array(plan.sizes) / n_train)
        assert np.all(np.diff([n_train, *row.stage_sizes]) < 0)  # shrinking
    assert len(set(m.subset_seed)) == len(m)  # per-model subsets


def test_stages_continue_from_the_previous_weights_and_full_training_matches_the_grid(traj, tmp_path):
    w = traj.weights(traj.models.model_id.to_numpy(), checkpoint=None)  # [n, C, P]
    init, full, stage1 = w[:, 0], w[:, 1], w[:, 2]
    assert ((stage1 - full).norm(dim=1) < 0.5 * (stage1 - init).norm(dim=1)).all()  # no reload of the init
    assert ((w[:, 2:] - w[:, 1:-1]).abs().amax(dim=2) > 0).all()  # every stage trains
    grid = _build(
        tmp_path / "g.zarr",
        "recipe.kind=grid",
        "recipe.stages=null",
        "recipe.stage_epochs=null",
        "recipe.stage_rates=null",
    )
    assert grid.checkpoint_epochs == [0, 2] and "trajectory" not in grid.attrs and "stage_sizes" not in grid.models
    assert torch.equal(grid.weights(grid.models.model_id.to_numpy(), checkpoint=None), w[:, :2])


def test_a_stage_trains_on_its_subset_only(tmp_path):
    """Random labels: a stage of 150 epochs on a 10-example subset fits those 10 and stays at chance elsewhere."""
    rng = np.random.default_rng(0)
    path = tmp_path / "random.npz"
    np.savez(
        path,
        X_train=rng.normal(size=(200, 8)).astype(np.float32),
        y_train=rng.integers(0, 4, 200),
        X_test=rng.normal(size=(50, 8)).astype(np.float32),
        y_test=rng.integers(0, 4, 50),
    )
    z = _build(
        tmp_path / "r.zarr",
        f"recipe.dataset={path}",
        "recipe.widths=[64]",
        "recipe.seeds=1",
        "recipe.batch_sizes=[8]",
        "recipe.learning_rates=[0.1]",
        "recipe.epochs=0",
        "recipe.checkpoint_epochs=[0]",
        "recipe.stages=1",
        "recipe.stage_rates=0.05",
        "recipe.stage_epochs=150",
    )
    data, row = z.dataset(), z.models.iloc[0]
    subset = stage_subsets(len(data.X_train), 1, (0.05, 0.05), row.subset_seed).subsets[0]
    assert len(subset) == 10
    with torch.no_grad():
        pred = z.module(0).eval()(data.X_train).argmax(1)
    inside = torch.zeros(len(pred), dtype=torch.bool)
    inside[subset] = True
    correct = pred == data.y_train
    assert correct[inside].all()
    assert correct[~inside].float().mean() < 0.45  # chance is 0.25; training on all 200 would memorize them


def test_bn_cnn_models_that_sit_out_steps_are_untouched(tmp_path):
    """A BatchNorm CNN trained in a population (models with fewer stage steps sit out) equals it trained alone."""
    args = [
        "recipe.arch=cnn",
        "recipe.dataset=digits-image",
        "recipe.batchnorm=true",
        "recipe.widths=[4]",
        "recipe.depths=[1]",
        "recipe.batch_sizes=[32]",
        "recipe.seeds=3",
        "recipe.epochs=1",
        "recipe.checkpoint_epochs=[0,1]",
        "recipe.stages=2",
        "recipe.stage_rates=[0.1,0.9]",
    ]
    together = _build(tmp_path / "pop.zarr", *args)
    alone = _build(tmp_path / "one.zarr", *args, "population_size=1")
    sizes = np.array(list(together.models.stage_sizes))
    assert len(set(sizes[:, 0] // 32)) > 1  # the population's models do take different numbers of steps
    ids = together.models.model_id.to_numpy()
    a, b = together.weights(ids, checkpoint=None), alone.weights(ids, checkpoint=None)
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_resume_after_interruption_gives_the_same_bits(traj, tmp_path):
    out = tmp_path / "resumed.zarr"
    z = _build(out, "block_size=2")
    key = z.models.layout[0]
    group = zarr.open_group(str(out), mode="r+")
    rows = z.models.row.to_numpy()[z.models.model_id.to_numpy() >= 2]  # the last block: back to pending, wiped
    group[f"layouts/{key}/state"][rows.min() : rows.max() + 1] = np.array([[PENDING, -1]] * len(rows), dtype=np.int32)
    group[f"layouts/{key}/weights"][rows.min() : rows.max() + 1] = np.nan
    assert (zoo.open(out).models.status == "pending").sum() == 2
    resumed = _build(out, "block_size=2")
    ids = traj.models.model_id.to_numpy()
    assert torch.equal(resumed.weights(ids, checkpoint=None), traj.weights(ids, checkpoint=None))
    assert resumed.metrics.equals(traj.metrics)


@pytest.mark.parametrize(
    "override,needle",
    [
        ("recipe.stages=0", "recipe.stages=0 is invalid"),
        ("recipe.stages=1.5", "recipe.stages=1.5 is invalid"),
        ("recipe.stage_epochs=0", "recipe.stage_epochs=0 is invalid"),
        ("recipe.stage_rates=[0,0.5]", "0 < low <= high <= 1"),
        ("recipe.stage_rates=[0.5,1.5]", "0 < low <= high <= 1"),
        ("recipe.stage_rates=[0.9,0.3]", "0 < low <= high <= 1"),
        ("recipe.stage_rates=1.2", "0 < low <= high <= 1"),
        ("recipe.stage_rates=abc", "0 < low <= high <= 1"),
        ("recipe.kind=spiral", "recipe.kind='spiral' is invalid"),
        ("recipe.checkpoint_epochs=[0,1]", "must end them at recipe.epochs=2"),
    ],
)
def test_bad_trajectory_configs_are_one_line_errors(tmp_path, override, needle):
    with pytest.raises(ZooError, match=None) as e:
        _build(tmp_path / "bad.zarr", override)
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "bad.zarr").exists()


def test_stage_keys_on_a_grid_recipe_and_reading_a_grid_zoo_are_one_line_errors(tiny_zoo, tmp_path):
    with pytest.raises(ZooError, match="recipe.stages is for recipe.kind=trajectory"):
        zoo.build(compose("build", [f"out={tmp_path / 'g.zarr'}", "recipe=tiny", "progress=false", "+recipe.stages=3"]))
    with pytest.raises(ZooError, match="has no trajectories: build it from a recipe with kind: trajectory"):
        reversed_trajectories(tiny_zoo)


def test_reading_an_incomplete_trajectory_is_a_one_line_error(tmp_path):
    z = _build(tmp_path / "div.zarr", "recipe.learning_rates=[0.05,1e12]", "recipe.seeds=1", "recipe.batch_sizes=[32]")
    assert list(z.models.status) == ["done", "diverged"]
    assert reversed_trajectories(z).shape[0] == 1  # the default reads the complete ones only
    with pytest.raises(ZooError, match="model 1 is diverged: it has no complete trajectory"):
        reversed_trajectories(z, None, [0, 1])
    with pytest.raises(ZooError, match="layout 'nope' is not in zoo"):
        reversed_trajectories(z, "nope", [0])
    with pytest.raises(ZooError, match="model ids must lie in 0..1"):
        reversed_trajectories(z, None, [5])


def test_cli_reports_a_bad_stage_count_in_one_line(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "build", f"out={tmp_path / 'c.zarr'}", *SMALL, "recipe.stages=0")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "recipe.stages=0" in err, err
