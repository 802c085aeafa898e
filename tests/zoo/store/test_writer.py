"""The writer API: any producer of weights makes a zoo that every command reads."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

import zoo
from tests.conftest import build_zoo
from zoo import ZooError
from zoo.commands.main import main as zoo_main


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A real trained zoo of 12 digits MLPs of one layout to copy weights from."""
    return build_zoo(
        str(tmp_path_factory.mktemp("src") / "src.zarr"),
        "recipe.widths=[8]",
        "recipe.seeds=12",
        "recipe.epochs=4",
        "recipe.checkpoint_epochs=[0,2,4]",
    )


def _copy(source: zoo.Zoo, path: str, block_size: int = 5, **extra_columns) -> zoo.ZooWriter:
    """A writer-made zoo holding source's models, with provenance columns of every kind."""
    n = len(source)
    models = pd.DataFrame(
        {
            "generator": ["copy"] * n,
            "seed": np.arange(n) * 7,
            "condition": [None, [1, 2]] * (n // 2),
            "score": np.linspace(0, 1, n),
            "flag": np.arange(n) % 2 == 0,
            **extra_columns,
        }
    )
    return zoo.create(
        path,
        models,
        source.layouts,
        source.checkpoint_epochs,
        source.metric_names,
        attrs={"producer": "test", "note": float("nan")},
        datasets=[source.dataset()],
        block_size=block_size,
    )


def test_roundtrip_any_table_bit_exact_weights_and_metrics(source, tmp_path):
    w = _copy(source, str(tmp_path / "copy.zarr"))
    ids = list(range(len(source)))
    trajectories = source.weights(ids, checkpoint=None)
    metrics = source._metric_values()
    # several calls, partial blocks, out of order: one writer may fill a block piece by piece
    for part in ([7, 3, 0], [1, 2, 4, 5, 6], list(range(8, 12))):
        w.write(part, trajectories[part], metrics[part])
    z = w.zoo()
    assert torch.equal(z.weights(ids, checkpoint=None), trajectories)
    np.testing.assert_array_equal(z._metric_values(), metrics)
    df = z.models
    assert list(df.condition[:2]) == [None, [1, 2]] and list(df.generator.unique()) == ["copy"]
    assert df.seed.tolist() == [7 * i for i in ids] and df.flag.dtype == bool
    assert (df.status == "done").all() and (df.test_acc == source.models.test_acc).all()
    assert z.attrs["producer"] == "test" and z.attrs["note"] is None  # NaN stored as valid JSON
    assert z.dataset().fingerprint == source.dataset().fingerprint
    for i in (0, 11):
        x = z.dataset().X_test[:32]
        assert torch.equal(z.module(i)(x), source.module(i)(x))


def test_unwritten_models_stay_pending_and_diverged_models_keep_their_last_checkpoint(source, tmp_path):
    w = _copy(source, str(tmp_path / "partial.zarr"))
    traj = source.weights([0, 1], checkpoint=None).clone()
    traj[1, 2] = float("nan")
    w.write([0, 1], traj, status=["done", "diverged"])
    z = w.zoo()
    df = z.models
    assert df.status[:3].tolist() == ["done", "diverged", "pending"] and df.last_checkpoint[1] == 1
    assert torch.equal(z.weights([1])[0], traj[1, 1])  # -1 is a diverged model's last finite checkpoint
    with pytest.raises(ZooError, match="pending"):
        z.weights([2])


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(weights=torch.zeros(1, 3, 5)), "expected \\[1, 3,"),
        (dict(weights="nan"), "NaN/inf"),
        (dict(metrics=torch.zeros(1, 3, 1)), "metrics have shape"),
        (dict(status="finished"), "status must be"),
    ],
)
def test_bad_writes_are_one_line_errors(source, tmp_path, kwargs, needle):
    w = _copy(source, str(tmp_path / "bad.zarr"))
    good = source.weights([0], checkpoint=None)
    if isinstance(kwargs.get("weights"), str):
        kwargs["weights"] = torch.full_like(good, float("nan"))
    with pytest.raises(ZooError, match=needle):
        w.write([0], **{"weights": good, **kwargs})
    assert (w.zoo().models.status == "pending").all()  # nothing committed


def test_create_refuses_bad_tables_and_existing_zoos(source, tmp_path):
    path = str(tmp_path / "x.zarr")
    _copy(source, path)
    with pytest.raises(ZooError, match="already holds a zoo"):
        _copy(source, path)
    z = zoo.create(path, pd.DataFrame({"k": [1, 2]}), source.layouts, [0], ["test_acc"], overwrite=True).zoo()
    assert len(z) == 2 and list(z.models.k) == [1, 2]
    two = {"a": source.layouts[next(iter(source.layouts))], "b": source.layouts[next(iter(source.layouts))]}
    with pytest.raises(ZooError, match="needs a 'layout' column"):
        zoo.create(str(tmp_path / "y.zarr"), pd.DataFrame({"k": [1]}), two, [0], ["test_acc"])
    with pytest.raises(ZooError, match="store's own keys"):
        zoo.create(str(tmp_path / "y.zarr"), pd.DataFrame({"k": [1]}), source.layouts, [0], [], attrs={"layouts": 1})


def test_a_writer_made_zoo_passes_info_align_and_train(source, tmp_path, capsys):
    path = str(tmp_path / "made.zarr")
    w = _copy(source, path)
    ids = list(range(len(source)))
    w.write(ids, source.weights(ids, checkpoint=None), source._metric_values())
    assert zoo_main(["info", path]) == 0 and "12 done" in capsys.readouterr().out
    assert zoo_main(["align", path]) == 0
    z = zoo.open(path)
    x = z.dataset().X_test[:64]
    for i in (0, 5):  # canonical weights compute the same function
        torch.testing.assert_close(z.module(i, canonical=True)(x), z.module(i)(x), atol=1e-5, rtol=1e-5)
    assert zoo_main(["landscape", path, "probes=2", "bezier_steps=5", "max_pairs=2"]) == 0  # it has seeds
    assert zoo.open(path).landscape is not None
    out = str(tmp_path / "run")
    assert (
        zoo_main(
            [
                "train",
                "encoder=statnn",
                "task=test_accuracy",
                f"zoo={path}",
                f"out={out}",
                "trainer.max_epochs=2",
                "data.batch_size=4",
                "threads=1",
            ]
        )
        == 0
    )


def test_interrupted_creation_is_replaced_not_wedged(source, tmp_path):
    """A store whose creation never finished (initialized false) is not a zoo to read, and create replaces it."""
    import zarr

    path = str(tmp_path / "half.zarr")
    zarr.create_group(path, attributes={"wszoo": {"schema_version": 2, "initialized": False}})
    with pytest.raises(ZooError, match="interrupted"):
        zoo.open(path)
    _copy(source, path)
    assert len(zoo.open(path)) == len(source)


def _write_schema1(z: zoo.Zoo, path: str) -> None:
    """The pre-writer layout (schema 1), made from a current zoo: JSON table attribute, one chunk per model."""
    import zarr

    table = z.models[list(z._table.columns)]
    state = z._state()
    metrics = z._metric_values()
    group = zarr.open_group(path, mode="w")
    meta = {
        "schema_version": 1,
        "initialized": True,
        "config": z.config,
        "config_hash": z.attrs["config_hash"],
        "versions": z.attrs["versions"],
        "datasets": {k: v["fingerprint"] for k, v in z.attrs["datasets"].items()},
        "checkpoint_epochs": z.checkpoint_epochs,
        "metric_names": z.metric_names,
        "num_models": len(z),
        "layouts": {k: v.to_json() for k, v in z.layouts.items()},
        "models": table.to_dict(orient="list"),
    }
    group.create_array("models/state", data=state, chunks=(1, 2))
    group.create_array("metrics/values", data=metrics, chunks=(1, *metrics.shape[1:]))
    keys, rows = z._where
    for key, layout in z.layouts.items():
        ids = np.nonzero(keys == key)[0][np.argsort(rows[keys == key])]
        group.create_array(
            f"layouts/{key}/weights", data=z.weights(ids.tolist(), checkpoint=None).numpy(), chunks=(1, 1, layout.size)
        )
    group.attrs["wszoo"] = meta


def test_a_schema1_zoo_says_how_to_upgrade_and_upgrades_bit_for_bit(tiny_zoo, tmp_path, capsys):
    path = str(tmp_path / "old.zarr")
    _write_schema1(tiny_zoo, path)
    with pytest.raises(ZooError, match="zoo upgrade"):
        zoo.open(path)
    assert zoo_main(["upgrade", path]) == 0 and "schema 2" in capsys.readouterr().out
    z = zoo.open(path)
    ids = list(range(len(z)))
    assert (z.models.drop(columns=[]).status == "done").all()
    for key in z.layouts:
        sel = [i for i in ids if z.layout(i).key() == key]
        assert torch.equal(z.weights(sel, checkpoint=None), tiny_zoo.weights(sel, checkpoint=None))
    np.testing.assert_array_equal(z._metric_values(), tiny_zoo._metric_values())
    assert z.models.width.tolist() == tiny_zoo.models.width.tolist()
    assert os.path.exists(path + ".schema1")
