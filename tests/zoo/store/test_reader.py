"""The store: tables, exact weights, modules that reproduce their stored accuracy, clear errors."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

import zoo
from tests.conftest import build_zoo
from zoo import ZooError
from zoo.store import open_meta, summarize
from zoo.store.localread import LocalArray, Unsupported, open_local


def test_models_table_has_every_hyperparameter(tiny_zoo):
    df = tiny_zoo.models
    for col in (
        "model_id",
        "status",
        "arch",
        "width",
        "depth",
        "learning_rate",
        "batch_size",
        "weight_decay",
        "optimizer",
        "seed",
        "dataset",
        "layout",
        "test_acc",
    ):
        assert col in df.columns, col
    assert list(df.model_id) == [0, 1, 2, 3] and set(df.status) == {"done"}
    assert sorted(df.width.unique()) == [8, 16] and sorted(df.seed.unique()) == [0, 1]
    assert len(tiny_zoo.layouts) == 2


def test_metrics_long_table(tiny_zoo):
    m = tiny_zoo.metrics
    assert list(m.columns[:3]) == ["model_id", "checkpoint", "epoch"]
    assert len(m) == 4 * 3 and list(m.epoch[:3]) == [0, 1, 3]
    assert m.test_acc.between(0, 1).all()
    # training helps: every model ends better than its initialization
    first, last = m[m.checkpoint == 0].set_index("model_id"), m[m.checkpoint == 2].set_index("model_id")
    assert (last.train_loss < first.train_loss).all()


def test_module_reproduces_stored_test_accuracy_exactly(tiny_zoo):
    task = tiny_zoo.dataset()
    df = tiny_zoo.models
    for i in df.model_id:
        for c in range(len(tiny_zoo.checkpoint_epochs)):
            with torch.no_grad():
                acc = (tiny_zoo.module(i, c)(task.X_test).argmax(1) == task.y_test).double().mean().item()
            stored = tiny_zoo.metrics.query(f"model_id == {i} and checkpoint == {c}").test_acc.item()
            assert acc == stored, (i, c)


def test_weights_state_dict_and_trajectory_agree(tiny_zoo):
    ids = [i for i in tiny_zoo.models.model_id if tiny_zoo.layout(i).key() == tiny_zoo.layout(0).key()]
    w = tiny_zoo.weights(ids)
    assert w.shape == (len(ids), tiny_zoo.layout(0).size) and w.dtype == torch.float32
    sd = tiny_zoo.state_dict(ids[-1])
    assert torch.equal(tiny_zoo.layout(0).flatten(sd), w[-1])
    traj = tiny_zoo.weights(ids, checkpoint=None)
    assert traj.shape == (len(ids), 3, w.shape[1]) and torch.equal(traj[:, -1], w)
    assert torch.equal(tiny_zoo.weights(ids, checkpoint=0), traj[:, 0])
    assert not torch.equal(traj[:, 0], traj[:, -1])


def test_attributes_say_how_to_rebuild(tiny_zoo):
    a = tiny_zoo.attrs
    assert a["schema_version"] == 2 and a["config"]["recipe"]["name"] == "tiny"
    assert set(a["versions"]) >= {"torch", "zarr", "wszoo"}
    assert a["datasets"]["digits"] == {
        "fingerprint": zoo.load_dataset("digits").fingerprint,
        "seed": 0,
        "kind": "classification",
        "num_outputs": 10,
    }


def test_tables_roundtrip(tiny_zoo, tmp_path):
    path = str(tmp_path / "copy.zarr")
    shutil.copytree(tiny_zoo.path, path)
    z = zoo.open(path)
    assert z.tables == []
    df = z.models[["model_id", "width"]].assign(score=[0.5, 1.5, np.nan, 2.0])
    zoo.open_writer(path).write_table("landscape", df)
    zoo.open_writer(path).write_table("alignment", df[["model_id"]])
    assert zoo.open(path).tables == ["alignment", "landscape"]  # every table, sorted, each readable by name
    back = zoo.open(path).landscape
    assert list(back.columns) == ["model_id", "width", "score"] and back.score.iloc[1] == 1.5
    assert np.isnan(back.score.iloc[2]) and zoo.open(path).table("nothing") is None


def test_canonical_weights_roundtrip(tiny_zoo, tmp_path):
    path = str(tmp_path / "canon.zarr")
    shutil.copytree(tiny_zoo.path, path)
    z = zoo.open(path)
    with pytest.raises(ZooError, match="zoo align"):
        z.weights([0], canonical=True)
    traj = z.weights([0, 1], checkpoint=None) if z.layout(0).key() == z.layout(1).key() else z.weights([0], None)
    ids = [0, 1][: len(traj)]
    writer = zoo.open_writer(path)
    writer.write_canonical(ids, traj * 2)
    assert torch.equal(zoo.open(path).weights(ids, canonical=True), traj[:, -1] * 2)
    assert torch.equal(z.weights(ids, canonical=True), traj[:, -1] * 2)  # a reader opened before sees them too
    with pytest.raises(ZooError, match="shape"):
        writer.write_canonical(ids, traj[:, 0, :3])


READERS = {"zarr": zoo.open, "light": open_meta}  # zoo info's reader reads local files without zarr-python


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("case", ["missing", "not-a-zoo", "foreign-group", "newer-schema", "corrupt"])
def test_opening_bad_paths_is_a_clear_error(tiny_zoo, tmp_path, case, reader):
    path = tmp_path / "z"
    if case == "not-a-zoo":
        path.mkdir()
        (path / "notes.txt").write_text("hello")
    elif case == "foreign-group":
        import zarr

        zarr.open_group(str(path), mode="w").attrs["something"] = 1
    elif case in ("newer-schema", "corrupt"):
        shutil.copytree(tiny_zoo.path, path)
        meta_file = path / "zarr.json"
        if case == "corrupt":
            meta_file.write_text("{ this is not json")
        else:
            meta = json.loads(meta_file.read_text())
            meta["attributes"]["wszoo"]["schema_version"] = 99
            meta_file.write_text(json.dumps(meta))
    messages = {
        "missing": "does not exist",
        "not-a-zoo": "not a zoo",
        "foreign-group": "not a wszoo zoo",
        "newer-schema": "schema version 99",
        "corrupt": "not a readable zoo",
    }
    with pytest.raises(ZooError, match=messages[case]):
        READERS[reader](str(path))


def test_bad_model_ids_and_checkpoints(tiny_zoo):
    with pytest.raises(ZooError, match="out of range"):
        tiny_zoo.state_dict(4)
    with pytest.raises(ZooError, match="out of range"):
        tiny_zoo.weights([-1])
    with pytest.raises(ZooError, match="checkpoint 7 is out of range"):
        tiny_zoo.weights([0], checkpoint=7)
    with pytest.raises(ZooError, match="several layouts"):
        tiny_zoo.weights([0, 1, 2, 3])


def test_fsspec_memory_url_roundtrip():
    z = build_zoo("memory://zoos/tiny.zarr", "recipe.widths=[8]", "recipe.seeds=1")
    assert isinstance(z, zoo.Zoo) and summarize(z)["done"] == 1
    again = zoo.open("memory://zoos/tiny.zarr")
    assert torch.equal(again.weights([0]), z.weights([0]))


def test_file_url(tiny_zoo):
    z = zoo.open("file://" + os.path.abspath(tiny_zoo.path))
    assert torch.equal(z.weights([0]), tiny_zoo.weights([0]))


def test_fast_local_read_equals_zarr_read(tiny_zoo, tmp_path):
    """The direct shard-file path returns exactly what zarr returns; a flipped byte is caught by its checksum."""
    from zoo.store.fastread import read_checkpoint_rows, shard_geometry

    array = tiny_zoo._group[f"layouts/{tiny_zoo.layout(0).key()}/weights"]
    assert shard_geometry(array) is not None
    rows = np.arange(array.shape[0])
    for c in range(array.shape[1]):
        assert np.array_equal(read_checkpoint_rows(array, rows, c), np.asarray(array.oindex[rows, c, :]))
    path = str(tmp_path / "copy.zarr")
    shutil.copytree(tiny_zoo.path, path)
    key = tiny_zoo.layout(1).key()
    shard = os.path.join(path, "layouts", key, "weights", "c", "0", "0", "0")
    data = bytearray(open(shard, "rb").read())
    data[100] ^= 0xFF  # inside the first model's first checkpoint
    open(shard, "wb").write(bytes(data))
    with pytest.raises(ZooError, match="checksum"):
        zoo.open(path).weights([0], checkpoint=0)
    open(shard, "wb").write(bytes(data[:50]))
    with pytest.raises(ZooError, match="corrupt"):
        zoo.open(path).weights([1])


def test_weights_of_a_pending_model_is_a_clear_error(tmp_path):
    """A store whose build has not trained anything yet: tables readable, weights refused by name."""
    from zoo.app.config import compose
    from zoo.training.build import prepare

    path, plan, _, pending = prepare(compose("build", [f"out={tmp_path / 'p.zarr'}", "recipe=tiny"]))
    assert pending == list(range(len(plan.populations)))
    z = zoo.open(path)
    assert (z.models.status == "pending").all() and z.models.test_acc.isna().all()
    with pytest.raises(ZooError, match="model 2 is pending"):
        z.state_dict(2)
    with pytest.raises(ZooError, match="pending"):
        z.weights([0], checkpoint=None)
    assert summarize(z)["pending"] == 4


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name", ["metrics", "state"])
def test_a_corrupt_chunk_is_a_clear_error(tiny_zoo, tmp_path, name, reader):
    path = tmp_path / "c.zarr"
    shutil.copytree(tiny_zoo.path, path)
    array = f"layouts/{tiny_zoo.layout(0).key()}/{name}"
    chunk = next(p for p in (path / array / "c").rglob("*") if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[:3])
    key = tiny_zoo.layout(0).key()
    match = f"layout {key}, block 0 .* is corrupt" if name == "metrics" else f"array '{array}' .* is corrupt"
    with pytest.raises(ZooError, match=match):
        _ = READERS[reader](str(path)).models


def test_light_reader_reads_what_zarr_reads(tiny_zoo, tmp_path):
    """Every small array (table columns, states, metrics) reads the same through zoo.store.localread as through
    zarr-python, and so do the models table, metrics and summary; sharded weights are left to zarr."""
    import zarr

    path = tmp_path / "z.zarr"
    shutil.copytree(tiny_zoo.path, path)
    light, full = open_local(str(path)), zarr.open_group(str(path), mode="r")
    names = [f"models/{c}" for c in full["models"].attrs["columns"]]
    names += [f"layouts/{k}/{a}" for k in tiny_zoo.layout_keys for a in ("state", "metrics")]
    for name in names:
        array = light[name]
        assert isinstance(array, LocalArray) and array.attrs == dict(full[name].attrs)
        got, want = array[...], np.asarray(full[name][...])
        assert got.dtype == want.dtype and np.array_equal(got, want, equal_nan=True), name
        assert np.array_equal(array[1:2], want[1:2], equal_nan=True)
    with pytest.raises(Unsupported):
        light[f"layouts/{tiny_zoo.layout_keys[0]}/weights"]
    meta, z = open_meta(str(path)), zoo.open(str(path))
    assert isinstance(meta._group["models"]["layout"], LocalArray)
    assert meta.models.equals(z.models) and meta.metrics.equals(z.metrics)
    assert summarize(meta) == summarize(z) | {"path": str(path)} and summarize(meta)["done"] == 4
    # a metrics chunk missing though its models are committed is named, as by the zarr reader
    key = tiny_zoo.layout_keys[0]
    for chunk in (path / "layouts" / key / "metrics" / "c").rglob("*"):
        if chunk.is_file():
            chunk.unlink()
    with pytest.raises(ZooError, match=f"layout {key}, block 0 .* is missing though its models are committed"):
        summarize(open_meta(str(path)))
