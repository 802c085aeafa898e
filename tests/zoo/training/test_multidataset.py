"""Zoos over many related datasets: task families, the recipe's dataset axis, resume, Dask units, clear errors."""

import importlib

import numpy as np
import pytest
import torch

import zoo
from tests.conftest import build_zoo, run_cli
from zoo import ZooError, load_dataset
from zoo.app.config import compose
from zoo.datasets import expand_dataset_names, make_classification_params
from zoo.training.build import make_build_plan, prepare
from zoo.training.recipe import load_recipe_datasets

A, B = "digits-classes-01234", "digits-classes-56789"
MULTI = ["recipe.dataset=null", f"+recipe.datasets=[{A},{B}]", "recipe.widths=[8]", "threads=1"]


def _same_bits(a: zoo.Zoo, b: zoo.Zoo, ids_a, ids_b) -> bool:
    return all(torch.equal(a.trajectory(int(i)), b.trajectory(int(j))) for i, j in zip(ids_a, ids_b))


@pytest.fixture(scope="module")
def multi_zoo(tmp_path_factory) -> zoo.Zoo:
    """4 digits-subset MLPs: 2 tasks x 2 seeds, one block (write unit) per task."""
    return build_zoo(str(tmp_path_factory.mktemp("multi") / "multi.zarr"), *MULTI, "block_size=2")


def test_digit_subset_labels_follow_the_order_in_the_name():
    from sklearn.datasets import load_digits

    full = load_digits()
    label_of = {}
    for x, y in zip((full.data / 16.0).astype(np.float32), full.target):
        label_of.setdefault(x.tobytes(), set()).add(int(y))
    for name, classes in (("digits-classes-13579", [1, 3, 5, 7, 9]), ("digits-classes-31", [3, 1])):
        d = load_dataset(name)
        assert d.num_outputs == len(classes) and d.input_shape == (64,) and d.name == d.location == name
        X, y = torch.cat([d.X_train, d.X_test]).numpy(), torch.cat([d.y_train, d.y_test]).numpy()
        assert len(X) == int(np.isin(full.target, classes).sum())  # every sample of those classes, no other
        assert all(classes[int(t)] in label_of[x.tobytes()] for x, t in zip(X, y))
        # stratified split: each class's share of the test split matches its share of the data within a sample
        share = np.bincount(d.y_test.numpy(), minlength=len(classes)) / len(d.y_test)
        assert np.allclose(share, np.bincount(y) / len(y), atol=1.5 / len(d.y_test))


def test_families_are_deterministic_and_distinct():
    for name in ("digits-classes-02468", "make-classification-5"):
        a, b = load_dataset(name, seed=0), load_dataset(name, seed=0)
        assert a.fingerprint == b.fingerprint and torch.equal(a.X_train, b.X_train)
        assert load_dataset(name, seed=1).fingerprint != a.fingerprint  # the split follows the seed
    assert load_dataset("digits-classes-13").fingerprint != load_dataset("digits-classes-31").fingerprint
    m5, m6 = load_dataset("make-classification-5"), load_dataset("make-classification-6")
    assert m5.input_shape == m6.input_shape == (20,) and m5.num_outputs == m6.num_outputs == 4
    assert make_classification_params(5) != make_classification_params(6)
    assert not torch.equal(m5.X_train, m6.X_train)
    # standardized with the training split's statistics only
    assert torch.allclose(m5.X_train.mean(0), torch.zeros(20), atol=1e-5)
    assert torch.allclose(m5.X_train.std(0, unbiased=False), torch.ones(20), atol=1e-4)
    assert not torch.allclose(m5.X_test.mean(0), torch.zeros(20), atol=1e-3)


def test_patterns_expand_in_a_fixed_order_without_held_out_tasks():
    five = expand_dataset_names(["digits-classes-choose5"])
    assert len(five) == 252 and five[0] == "digits-classes-01234" and five[-1] == "digits-classes-56789"
    assert five == sorted(five)
    held = ["digits-classes-02468", "digits-classes-13579"]
    kept = expand_dataset_names(["digits-classes-choose5"], held_out=held)
    assert len(kept) == 250 and not set(held) & set(kept)
    assert expand_dataset_names(["make-classification-3..5", "digits"]) == [
        "make-classification-3",
        "make-classification-4",
        "make-classification-5",
        "digits",
    ]


@pytest.mark.parametrize(
    "name,needle",
    [
        ("digits-classes-0113", "repeats a digit"),
        ("digits-classes-7", "at least 2"),
        ("digits-classes-01a", "digit classes"),
        ("digits-classes-", "digit classes"),
        ("make-classification-x", "task seed"),
        ("make-classification-007", "leading zeros"),
        ("digits-classes-choose5", "pattern"),
        ("mnist-classes-01", "unknown dataset"),
    ],
)
def test_malformed_family_names_are_one_line_errors(name, needle):
    with pytest.raises(ZooError, match=needle) as e:
        load_dataset(name)
    assert "\n" not in str(e.value)


def test_unknown_name_error_lists_the_families():
    with pytest.raises(ZooError, match="digits-classes-<.*make-classification-<"):
        load_dataset("nope")


def test_each_model_trains_on_its_own_dataset(multi_zoo):
    z = multi_zoo
    m = z.models
    assert list(m.dataset) == [A, A, B, B] and list(m.seed) == [0, 1, 0, 1]  # dataset is the outermost grid axis
    assert sorted(z.datasets) == [A, B] and (m.status == "done").all()
    data = {n: z.dataset(n) for n in (A, B)}
    assert all(data[n].fingerprint == load_dataset(n).fingerprint for n in data)
    layout = z.layouts[m.layout[0]]
    for i, own in enumerate(m.dataset):
        other = B if own == A else A
        w = z.weights([i])
        acc_own = float(zoo.evaluate(layout, w, data[own], split="test")["acc"][0])
        acc_other = float(zoo.evaluate(layout, w, data[other], split="test")["acc"][0])
        assert acc_own == m.test_acc[i] and acc_other < 0.35 < 0.5 < acc_own, (i, acc_own, acc_other)  # chance: 0.2
    with pytest.raises(ZooError, match="name one"):
        z.dataset()
    with pytest.raises(ZooError, match="not trained on 'digits-classes-02468'"):
        z.dataset("digits-classes-02468")


def test_populations_never_mix_datasets_and_match_a_single_dataset_build(multi_zoo, tmp_path):
    cfg = compose("build", ["recipe=tiny", *MULTI, "population_size=256"])
    plan = make_build_plan(cfg, load_recipe_datasets(cfg["recipe"]))
    assert all(len({plan.models[i].dataset for i in pop}) == 1 for pop in plan.populations)
    # a task's models are bit-identical to the same models built in a zoo of that task alone
    single = build_zoo(str(tmp_path / "b.zarr"), f"recipe.dataset={B}", "recipe.widths=[8]", "threads=1")
    assert list(single.models.dataset) == [B, B]
    assert _same_bits(multi_zoo, single, [2, 3], [0, 1])


def test_resume_after_interruption_gives_the_same_bits(multi_zoo, tmp_path, monkeypatch):
    zbuild = importlib.import_module("zoo.training.build")  # zoo.build the attribute is the function

    real, calls = zbuild.train_and_write, []

    def dies_after_one_unit(*args, **kwargs):
        if calls:
            raise RuntimeError("killed")
        calls.append(1)
        return real(*args, **kwargs)

    out = str(tmp_path / "resumed.zarr")
    monkeypatch.setattr(zbuild, "train_and_write", dies_after_one_unit)
    with pytest.raises(RuntimeError, match="killed"):
        build_zoo(out, *MULTI, "block_size=2")
    assert list(zoo.open(out).models.status) == ["done", "done", "pending", "pending"]
    monkeypatch.setattr(zbuild, "train_and_write", real)
    resumed = build_zoo(out, *MULTI, "block_size=2")
    assert (resumed.models.status == "done").all()
    assert _same_bits(resumed, multi_zoo, range(4), range(4)) and resumed.metrics.equals(multi_zoo.metrics)


def test_dask_worker_units_equal_the_local_build(multi_zoo, tmp_path):
    """What a Dask worker runs (everything re-derived from the config, datasets included) writes the same bits."""
    from zoo.training.build import train_unit

    cfg = compose("build", [f"out={tmp_path / 'dask.zarr'}", "recipe=tiny", "progress=false", *MULTI, "block_size=2"])
    path, plan, datasets, pending = prepare(cfg)
    assert sorted(datasets) == [A, B] and pending == [0, 1]
    for unit in reversed(pending):  # workers finish in any order
        train_unit(path, cfg, unit)
    assert _same_bits(zoo.open(path), multi_zoo, range(4), range(4))


def test_resume_checks_every_dataset_fingerprint(multi_zoo, tmp_path):
    import shutil

    import zarr

    out = str(tmp_path / "copy.zarr")
    shutil.copytree(multi_zoo.path, out)
    g = zarr.open_group(out, mode="r+")
    meta = dict(g.attrs["wszoo"])
    meta["datasets"] = {**meta["datasets"], B: {**meta["datasets"][B], "fingerprint": "0" * 64}}
    g.attrs["wszoo"] = meta
    with pytest.raises(ZooError, match=f"data of '{B}' changed"):
        build_zoo(out, *MULTI, "block_size=2")


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["recipe.dataset=digits", f"+recipe.datasets=[{A}]"], "both given"),
        (["recipe.dataset=null"], "missing"),
        (["recipe.dataset=null", f"+recipe.datasets=[{A},digits-classes-012]"], "'digits-classes-012' has input shape"),
        (
            ["recipe.dataset=null", "+recipe.datasets=[digits-classes-0123,make-classification-1]"],
            "'make-classification-1' has input shape \\(20,\\)",
        ),
        (["recipe.dataset=null", f"+recipe.datasets=[{A},digits-classes-0113]"], "repeats a digit"),
        (["recipe.dataset=null", "+recipe.datasets=[digits-classes-choose11]"], "choose 2..10"),
        (["recipe.dataset=null", f"+recipe.datasets=[{A},digits-classes-choose5]"], "appears twice"),
        (["recipe.dataset=null", f"+recipe.datasets=[{A}]", f"+recipe.held_out=[{A}]"], "held_out"),
        (
            [
                "recipe.dataset=null",
                "+recipe.datasets=[digits-classes-choose2]",
                f"+recipe.held_out=[{A},digits-classes-9x]",
            ],
            "digits-classes-9x",
        ),
        (["recipe.dataset=null", "+recipe.datasets=[]"], "recipe.datasets=\\[\\] is invalid"),
        (
            ["recipe.dataset=null", f"+recipe.datasets=[{A}]", "+recipe.held_out=abc"],
            "recipe.held_out='abc' is invalid",
        ),
        (["recipe.dataset=null", f"+recipe.datasets=[{A}]", "+recipe.held_out=[1,2]"], "recipe.held_out=\\[1, 2\\]"),
        (["recipe.dataset=null", f"+recipe.datasets=[{A},{B}]", "recipe.landscape.enabled=true"], "one dataset"),
    ],
)
def test_bad_dataset_recipes_are_one_line_errors_before_anything_is_written(tmp_path, overrides, needle):
    out = tmp_path / "never.zarr"
    with pytest.raises(ZooError, match=needle) as e:
        build_zoo(str(out), *overrides)
    assert "\n" not in str(e.value) and not out.exists()


def test_held_out_tasks_are_kept_in_the_config_and_out_of_the_zoo(tmp_path):
    held = ["digits-classes-01", "digits-classes-23"]
    z = build_zoo(
        str(tmp_path / "h.zarr"),
        "recipe.dataset=null",
        "+recipe.datasets=[digits-classes-choose2]",
        f"+recipe.held_out=[{','.join(held)}]",
        "recipe.widths=[4]",
        "recipe.seeds=1",
        "recipe.epochs=0",
        "recipe.checkpoint_epochs=[0]",
        "threads=1",
    )
    assert z.attrs["config"]["recipe"]["held_out"] == held
    assert len(z.models) == 43 and not set(held) & set(z.models.dataset) and len(z.datasets) == 43


def test_cli_both_keys_is_one_line(tmp_path, capsys):
    out = tmp_path / "never.zarr"
    rc, _, err = run_cli(capsys, "build", f"out={out}", "recipe=tiny", f"+recipe.datasets=[{A}]")
    assert rc == 2 and "both given" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_zoo_info_names_a_few_datasets_and_counts_the_rest():
    """zoo info stays one readable line for a zoo over hundreds of tasks; --json keeps every name."""
    from zoo.commands.info import SHOWN_DATASETS, dataset_text

    names = [f"digits-classes-{i:05d}" for i in range(232)]
    text = dataset_text(names)
    assert text.startswith("232 datasets: ") and names[SHOWN_DATASETS - 1] in text and names[SHOWN_DATASETS] not in text
    assert dataset_text(names[:2]) == f"datasets {names[0]}, {names[1]}"
