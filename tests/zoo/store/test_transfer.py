"""Import and export: export -> import is bit for bit, the flat format rebuilds the same functions, bad
folders are one-line errors, and nothing is ever unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

import zoo
from zoo import ZooError
from zoo.arch import arch_spec, build_model
from zoo.commands.main import main
from zoo.layout import layout_of
from zoo.store import create
from zoo.store.lock import writing
from zoo.store.transfer import export_zoo, import_zoo

CNN = arch_spec("cnn", (1, 8, 8), 10, 4, 1)  # BatchNorm: float buffers and an int64 num_batches_tracked
MLP = arch_spec("mlp", (64,), 10, 8, 1)


def _layout(spec: dict):
    return layout_of(build_model(spec), spec)


@pytest.fixture(scope="module")
def mixed_zoo(tmp_path_factory) -> zoo.Zoo:
    """Two layouts; done, diverged and pending models; a diverged model with finite weights after its last valid
    checkpoint; columns of every type (NaN floats, None, bools, lists); provenance attributes; a landscape table."""
    layouts = {L.key(): L for L in (_layout(CNN), _layout(MLP))}
    cnn, mlp = list(layouts)
    models = pd.DataFrame(
        {
            "layout": [cnn] * 4 + [mlp] * 3,
            "learning_rate": [0.1, 0.2, float("nan"), 1e-3, 2.5, 1 / 3, float("inf")],
            "seed": [0, 1, 2, 3, 4, 5, 6],
            "generator": ["flow", None, "flow", "knn", "x", "y", "z"],
            "aligned": [True, False, True, True, False, False, True],
            "condition": [[1, 2], [3], [], [0.5], [1], [2], [3]],
        }
    )
    w = create(
        str(tmp_path_factory.mktemp("zoos") / "mixed.zarr"),
        models,
        layouts,
        [0, 2, 5],
        ["train_loss", "test_acc"],
        attrs={"generator": {"name": "flow", "seed": 7}, "note": "test"},
        block_size=2,
    )  # several blocks per layout; the import keeps the block size
    g = torch.Generator().manual_seed(0)
    for key, ids in ((cnn, [0, 1, 2]), (mlp, [4, 5, 6])):  # model 3 stays pending
        L = layouts[key]
        weights = torch.randn(len(ids), 3, L.size, generator=g)
        for e in L.entries:
            if e.dtype == "int64":
                weights[:, :, e.offset : e.stop] = torch.randint(0, 1000, (len(ids), 3, e.numel), generator=g).float()
        metrics = torch.rand(len(ids), 3, 2, generator=g, dtype=torch.float64)
        if key == cnn:
            weights[1, 2] = float("nan")  # diverged at its last checkpoint: NaN there
            weights[2, 1, 5] = float("inf")  # diverged at checkpoint 1, finite again at 2 (kept as an invalid vector)
            metrics[1, 2] = float("nan")
            w.write(ids, weights, metrics, status=["done", "diverged", "diverged"], last_checkpoint=[2, 1, 0])
        else:
            w.write(ids, weights, metrics)
    w.write_table("landscape", pd.DataFrame({"model_id": [0, 1], "phase": ["I", "IV-B"], "hessian": [1.5, 0.25]}))
    return w.zoo()


def assert_same_zoo(a: zoo.Zoo, b: zoo.Zoo, tables: tuple[str, ...] = ()) -> None:
    """Same models table, metrics, layouts, provenance and weights, bit for bit (NaN payloads included)."""
    pd.testing.assert_frame_equal(a.models, b.models, check_exact=True)
    pd.testing.assert_frame_equal(a.metrics, b.metrics, check_exact=True)
    assert a.layouts == b.layouts and a.checkpoint_epochs == b.checkpoint_epochs
    assert a.metric_names == b.metric_names  # attrs: block size and provenance included; an import adds its source
    assert {k: v for k, v in a.attrs.items() if k != "imported_from"} == {
        k: v for k, v in b.attrs.items() if k != "imported_from"
    }
    df = a.models
    for key in a.layouts:
        ids = df.model_id[(df.layout == key) & (df.status != "pending")].tolist()
        wa, wb = a.weights(ids, checkpoint=None), b.weights(ids, checkpoint=None)
        assert torch.equal(wa.view(torch.int32), wb.view(torch.int32)), key
    for name in tables:
        pd.testing.assert_frame_equal(a.table(name), b.table(name), check_exact=True)


def test_export_then_import_is_bit_identical(mixed_zoo, tmp_path):
    export_zoo(mixed_zoo, tmp_path / "exp")
    back = import_zoo(tmp_path / "exp", str(tmp_path / "back.zarr"))
    assert list(back.models.status) == ["done", "diverged", "diverged", "pending", "done", "done", "done"]
    assert list(back.models.last_checkpoint)[:3] == [2, 1, 0]
    assert_same_zoo(mixed_zoo, back, tables=("landscape",))
    # an export of the import is the same export
    export_zoo(back, tmp_path / "exp2")
    first, again = (json.loads((tmp_path / e / "zoo.json").read_text()) for e in ("exp", "exp2"))
    # the re-export is the export, plus the record that its zoo was imported from it (zoo verify's advice)
    assert again["attrs"].pop("imported_from") == {"format": "export", "path": str((tmp_path / "exp").resolve())}
    assert first == again


def test_export_files_are_state_dicts_at_every_valid_checkpoint(mixed_zoo, tmp_path):
    out = export_zoo(mixed_zoo, tmp_path / "exp")
    doc = json.loads((out / "zoo.json").read_text())
    assert doc["architectures"] == {k: dict(v.arch) for k, v in mixed_zoo.layouts.items()}
    assert doc["checkpoint_epochs"] == [0, 2, 5] and doc["metric_names"] == ["train_loss", "test_acc"]
    assert "3" not in doc["files"] and sorted(doc["files"]) == ["0", "1", "2", "4", "5", "6"]  # pending: no file
    assert doc["attrs"]["generator"] == {"name": "flow", "seed": 7}
    with safe_open(str(out / doc["files"]["1"]), framework="pt") as f:
        keys = set(f.keys())
        assert f.metadata()["status"] == "diverged" and f.metadata()["last_checkpoint"] == "1"
        for c in (0, 1):
            state = {k.split("/", 1)[1]: f.get_tensor(k) for k in keys if k.startswith(f"{c}/")}
            assert state["features.1.num_batches_tracked"].dtype == torch.int64
            module = build_model(CNN)
            module.load_state_dict(state)  # strict: exactly the module's state dict
            for name, t in mixed_zoo.state_dict(1, checkpoint=c).items():
                assert torch.equal(t, state[name]), name
        assert not any(k.startswith("2/") for k in keys) and "invalid/2" not in keys  # all-NaN: left out
        stored = mixed_zoo.metrics.query("model_id == 1")[["train_loss", "test_acc"]].to_numpy()
        assert torch.equal(f.get_tensor("metrics").view(torch.int64), torch.from_numpy(stored).view(torch.int64))
    with safe_open(str(out / doc["files"]["2"]), framework="pt") as f:
        assert "invalid/1" in f.keys() and "invalid/2" in f.keys() and not any(k.startswith("1/") for k in f.keys())


def test_built_zoo_roundtrip_through_the_cli(tiny_zoo, tmp_path, capsys):
    assert main(["export", tiny_zoo.path, str(tmp_path / "exp")]) == 0
    assert main(["import", str(tmp_path / "exp"), "--out", str(tmp_path / "back.zarr")]) == 0
    back = zoo.open(tmp_path / "back.zarr")
    assert_same_zoo(tiny_zoo, back)
    assert back.dataset().fingerprint == tiny_zoo.dataset().fingerprint  # the dataset is reattached
    x = tiny_zoo.dataset().X_test[:50]
    assert torch.equal(back.module(3)(x), tiny_zoo.module(3)(x))
    # importing again over it needs --overwrite; exporting into a non-empty folder is refused
    assert main(["import", str(tmp_path / "exp"), "--out", str(tmp_path / "back.zarr")]) == 2
    assert main(["export", tiny_zoo.path, str(tmp_path / "exp")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith(("zoo import: error:", "zoo export: error:")) for line in err)
    assert main(["import", str(tmp_path / "exp"), "--out", str(tmp_path / "back.zarr"), "--overwrite"]) == 0
    # data that is not the data the zoo was built on is refused, or left out when asked
    doc = json.loads((tmp_path / "exp" / "zoo.json").read_text())
    doc["datasets"]["digits"]["fingerprint"] = "0" * 64
    (tmp_path / "exp" / "zoo.json").write_text(json.dumps(doc))
    with pytest.raises(ZooError, match="fingerprint mismatch.*--no-datasets"):
        import_zoo(tmp_path / "exp", str(tmp_path / "other.zarr"))
    bare = import_zoo(tmp_path / "exp", str(tmp_path / "other.zarr"), datasets=False)
    assert bare.datasets == [] and bare.attrs["datasets_left_out"]["digits"]["fingerprint"] == "0" * 64
    assert torch.equal(bare.weights([0, 1], checkpoint=None), tiny_zoo.weights([0, 1], checkpoint=None))


# ---------------------------------------------------------------------------------------------- flat format
def _train(spec: dict, data, seed: int, steps: int = 30, lr: float = 0.1) -> torch.nn.Module:
    """A real small model: full-batch SGD on the training split."""
    torch.manual_seed(seed)
    model = build_model(spec)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(data.X_train), data.y_train).backward()
        opt.step()
    return model.eval()


def write_flat(
    folder: Path, spec: dict, models: list[torch.nn.Module], table: pd.DataFrame | None, arch_json: bool = True
) -> Path:
    """Write models in the flat format: weights.npy [N, P], layout.csv, metrics.csv, arch.json."""
    folder.mkdir(parents=True)
    layout = _layout(spec)
    np.save(folder / "weights.npy", torch.stack([layout.flatten(m.state_dict()) for m in models]).numpy())
    pd.DataFrame(
        {
            "varname": [e.name for e in layout.entries],
            "start_idx": [e.offset for e in layout.entries],
            "end_idx": [e.stop for e in layout.entries],
            "shape": [str(e.shape) for e in layout.entries],
        }
    ).to_csv(folder / "layout.csv", index=False)
    if table is not None:
        table.to_csv(folder / "metrics.csv")  # with pandas' unnamed index column, as the Small CNN Zoo's
    if arch_json:
        (folder / "arch.json").write_text(json.dumps(spec))
    return folder


@pytest.fixture(scope="module")
def trained_cnns():
    """Three BatchNorm CNNs trained on digits images, with their test accuracy."""
    data = zoo.load_dataset("digits-image")
    spec = arch_spec("cnn", (1, 8, 8), 10, 6, 1)
    models, accs, losses = [], [], []
    for seed, lr in ((0, 0.5), (1, 0.5), (2, 0.3)):
        m = _train(spec, data, seed, steps=60, lr=lr)
        models.append(m)
        with torch.no_grad():
            accs.append(float((m(data.X_test).argmax(1) == data.y_test).double().mean()))
            losses.append(float(torch.nn.functional.cross_entropy(m(data.X_train), data.y_train)))
    assert min(accs) > 0.25  # trained: well above chance (0.1)
    table = pd.DataFrame(
        {
            "seed": [0, 1, 2],
            "learning_rate": [0.5, 0.5, 0.3],
            "optimizer": ["sgd"] * 3,
            "test_accuracy": accs,
            "train_loss": losses,
        }
    )
    return spec, data, models, table


def test_flat_import_rebuilds_the_trained_functions(trained_cnns, tmp_path):
    spec, data, models, table = trained_cnns
    src = write_flat(tmp_path / "flat", spec, models, table)
    z = import_zoo(src, str(tmp_path / "flat.zarr"), epoch=60, dataset="digits-image")
    assert z.checkpoint_epochs == [60] and z.metric_names == ["test_acc", "train_loss"]
    assert z.dataset().fingerprint == data.fingerprint  # recorded, so evaluation works on the import
    acc = zoo.evaluate(z.layout(0), z.weights([0, 1, 2]), z.dataset())["acc"]
    # the batched forward of three models vs each nn.Module alone: other kernels and summation orders, so a
    # logit tie within float32 rounding may flip one prediction; the accuracies agree to one test image
    np.testing.assert_allclose(acc.numpy(), table.test_accuracy.to_numpy(), rtol=0, atol=1.0 / len(data.X_test))
    df = z.models
    assert list(df.status) == ["done"] * 3 and list(df.source_row) == [0, 1, 2]
    assert list(df.learning_rate) == [0.5, 0.5, 0.3] and list(df.optimizer) == ["sgd"] * 3
    assert np.array_equal(df.test_acc.to_numpy(), table.test_accuracy.to_numpy())  # stored and read back: bits
    x = data.X_test[:100]
    with torch.no_grad():
        for i, m in enumerate(models):
            assert torch.equal(z.module(i)(x), m(x)), i
            state = z.state_dict(i)
            assert state["features.1.num_batches_tracked"].item() == 60
    assert z.attrs["imported_from"]["format"] == "flat"


def test_flat_import_through_the_cli_with_arch_arguments(tmp_path, capsys):
    data = zoo.load_dataset("digits")
    models = [_train(MLP, data, seed, steps=20) for seed in (0, 1)]
    weights_nan = write_flat(tmp_path / "flat", MLP, models, None, arch_json=False)
    w = np.load(weights_nan / "weights.npy")
    w[1, 3] = np.nan  # a diverged model
    np.save(weights_nan / "weights.npy", w)
    args = [
        "import",
        str(weights_nan),
        "--out",
        str(tmp_path / "z.zarr"),
        "--arch",
        "name=mlp",
        "input_shape=64",
        "num_outputs=10",
        "width=8",
        "depth=1",
    ]
    assert main(args) == 0
    assert main(["verify", str(tmp_path / "z.zarr")]) == 0  # no metrics.csv: no metrics chunks, and no damage
    z = zoo.open(tmp_path / "z.zarr")
    assert list(z.models.status) == ["done", "diverged"] and list(z.models.last_checkpoint) == [0, -1]
    assert torch.equal(z.module(0)(data.X_test), models[0](data.X_test))
    (tmp_path / "spec.json").write_text(json.dumps(MLP))
    assert (
        main(
            ["import", str(weights_nan), "--out", str(tmp_path / "z2.zarr"), "--arch-file", str(tmp_path / "spec.json")]
        )
        == 0
    )
    assert (
        main(
            [
                "import",
                str(weights_nan),
                "--out",
                str(tmp_path / "z3.zarr"),
                "--arch",
                "name=mlp",
                "input_shape=64",
                "num_outputs=10",
                "width=9",
                "depth=1",
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "import",
                str(weights_nan),
                "--out",
                str(tmp_path / "z3.zarr"),
                "--arch-file",
                str(tmp_path / "spec.json"),
                "--dataset",
                "digits-image",
            ]
        )
        == 2
    )  # [1, 8, 8] inputs, not [64]
    assert (
        main(
            ["import", str(weights_nan), "--out", str(tmp_path / "z.zarr"), "--arch-file", str(tmp_path / "spec.json")]
        )
        == 2
    )  # already there: --overwrite needed
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "layers.0.weight" in err[0] and "[9, 64]" in err[0], err
    assert "[1, 8, 8]" in err[1] and "--overwrite" in err[2], err


# ---------------------------------------------------------------------------------------------- bad inputs
class Boom:
    """Unpickling this would create a file: proof that loading never runs pickled code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _flat_case(tmp_path: Path, case: str) -> tuple[Path, dict | None]:
    """A flat folder broken in one way; returns it and the arch to pass (None: its arch.json)."""
    data = zoo.load_dataset("digits")
    src = write_flat(
        tmp_path / "flat",
        MLP,
        [_train(MLP, data, 0, steps=2)] * 2,
        pd.DataFrame({"seed": [0, 1], "test_acc": [0.5, 0.6]}),
    )
    layout_csv = pd.read_csv(src / "layout.csv")
    if case == "missing weights":
        (src / "weights.npy").unlink()
    elif case == "missing layout":
        (src / "layout.csv").unlink()
    elif case == "missing arch":
        (src / "arch.json").unlink()
    elif case == "wrong width":
        np.save(src / "weights.npy", np.zeros((2, 100), np.float32))
    elif case == "3-d weights":
        np.save(src / "weights.npy", np.zeros((2, 1, 610), np.float32))
    elif case == "integer weights":
        np.save(src / "weights.npy", np.zeros((2, 610), np.int64))
    elif case == "pickled":
        np.save(src / "weights.npy", np.array([Boom(str(tmp_path / "pwned"))], dtype=object), allow_pickle=True)
    elif case == "not npy":
        (src / "weights.npy").write_bytes(b"\x80\x04K\x01.")  # a pickle, not a .npy
    elif case == "layout shape":
        layout_csv.loc[0, "shape"] = "(64, 8)"  # transposed (a TF-style layout)
        layout_csv.to_csv(src / "layout.csv", index=False)
    elif case == "layout name":
        layout_csv.loc[2, "varname"] = "fc2.weight"
        layout_csv.to_csv(src / "layout.csv", index=False)
    elif case == "layout offset":
        layout_csv.loc[1, "start_idx"] = 511
        layout_csv.to_csv(src / "layout.csv", index=False)
    elif case == "layout rows":
        layout_csv.iloc[:-1].to_csv(src / "layout.csv", index=False)
    elif case == "layout columns":
        layout_csv.rename(columns={"shape": "dims"}).to_csv(src / "layout.csv", index=False)
    elif case == "metrics rows":
        pd.DataFrame({"seed": [0, 1, 2]}).to_csv(src / "metrics.csv", index=False)
    elif case == "metrics reserved":
        pd.DataFrame({"layout": ["a", "b"]}).to_csv(src / "metrics.csv", index=False)
    elif case == "metric not numeric":
        pd.DataFrame({"test_acc": ["high", "low"]}).to_csv(src / "metrics.csv", index=False)
    elif case == "bad status":
        pd.DataFrame({"status": ["done", "lost"]}).to_csv(src / "metrics.csv", index=False)
    elif case == "arch unknown":
        (src / "arch.json").write_text(json.dumps({**MLP, "name": "lstm"}))
    elif case == "arch not json":
        (src / "arch.json").write_text("{name: mlp")
    return src, None


FLAT_CASES = {
    "missing weights": "neither zoo.json",
    "missing layout": "layout.csv",
    "missing arch": "arch.json",
    "wrong width": "100 parameters",
    "3-d weights": "float [N, P]",
    "integer weights": "float [N, P]",
    "pickled": "unpickling",
    "not npy": ".npy",
    "layout shape": "[64, 8]",
    "layout name": "'fc2.weight'",
    "layout offset": "offset 511",
    "layout rows": "lists 3 tensors",
    "layout columns": "needs columns",
    "metrics rows": "3 rows",
    "metrics reserved": "['layout']",
    "metric not numeric": "not numeric",
    "bad status": "'lost'",
    "arch unknown": "unknown architecture",
    "arch not json": "not readable JSON",
}


@pytest.mark.parametrize("case", list(FLAT_CASES))
def test_bad_flat_folders_are_one_line_errors(tmp_path, case):
    src, arch = _flat_case(tmp_path, case)
    with pytest.raises(ZooError) as e:
        import_zoo(src, str(tmp_path / "out.zarr"), arch=arch)
    msg = str(e.value)
    assert "\n" not in msg and FLAT_CASES[case] in msg, msg
    assert not (tmp_path / "pwned").exists()  # nothing was unpickled


def _break_export(src: Path, case: str) -> None:
    doc = json.loads((src / "zoo.json").read_text())
    files = doc["files"]
    if case == "missing file":
        (src / files["0"]).unlink()
    elif case == "file outside":
        doc["files"]["0"] = "../elsewhere.safetensors"
    elif case == "not json":
        (src / "zoo.json").write_text("{")
        return
    elif case == "other format":
        doc["format"] = "something-else"
    elif case == "newer version":
        doc["format_version"] = 99
    elif case == "corrupt tensor file":
        (src / files["0"]).write_bytes(b"garbage")
    elif case == "swapped files":
        doc["files"]["0"], doc["files"]["1"] = files["1"], files["0"]
    elif case == "wrong tensor shape":
        from safetensors.torch import load_file, save_file

        path = src / files["4"]
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        tensors = load_file(str(path))
        tensors["0/layers.0.weight"] = tensors["0/layers.0.weight"][:, :10].contiguous()
        save_file(tensors, str(path), metadata=meta)
    elif case == "missing tensor":
        from safetensors.torch import load_file, save_file

        path = src / files["4"]
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        tensors = load_file(str(path))
        del tensors["2/layers.2.bias"]
        save_file(tensors, str(path), metadata=meta)
    elif case == "bad table":
        doc["models"]["columns"][1]["values"] = doc["models"]["columns"][1]["values"][:-1]
    elif case == "huge block size":
        doc["block_size"] = 10**30
    elif case == "3 million checkpoints":
        doc["checkpoint_epochs"] = list(range(3_000_000))
    elif case == "huge epoch":
        doc["checkpoint_epochs"][-1] = 10**30
    elif case == "epochs out of order":
        doc["checkpoint_epochs"] = [5, 2, 0]
    elif case == "huge last checkpoint":
        col = next(c for c in doc["models"]["columns"] if c["name"] == "last_checkpoint")
        col["values"][0] = 10**12
    elif case == "deeply nested json":
        (src / "zoo.json").write_text("[" * 200_000 + "]" * 200_000)
        return
    elif case == "column named ..":
        next(c for c in doc["models"]["columns"] if c["name"] == "seed")["name"] = "../../seed"
    elif case == "column named zarr.json":
        next(c for c in doc["models"]["columns"] if c["name"] == "seed")["name"] = "zarr.json"
    elif case == "table named ..":
        doc["tables"]["../../evil"] = doc["tables"].pop("landscape")
    elif case == "layout key with ..":
        key = next(iter(doc["layouts"]))
        doc["layouts"]["../" + key] = doc["layouts"].pop(key)
    elif case == "duplicate metric names":
        doc["metric_names"] = ["test_acc", "test_acc"]
    (src / "zoo.json").write_text(json.dumps(doc))


EXPORT_CASES = {
    "missing file": "is missing",
    "file outside": "outside the export folder",
    "not json": "not readable JSON",
    "other format": "not a wszoo export",
    "newer version": "format version 99",
    "corrupt tensor file": "not a readable safetensors",
    "swapped files": "does not hold model 0",
    "wrong tensor shape": "layers.0.weight",
    "missing tensor": "2/layers.2.bias",
    "bad table": "malformed",
    # limits (issue 27): checked from the file's numbers against the machine, before any array is allocated
    "huge block size": "block_size",
    "3 million checkpoints": "checkpoints",
    "huge epoch": "epoch",
    "epochs out of order": "increasing",
    "huge last checkpoint": "last_checkpoint",
    "deeply nested json": "nested",
    "column named ..": "'../../seed'",
    "column named zarr.json": "'zarr.json'",
    "table named ..": "'../../evil'",
    "layout key with ..": "layout key",
    "duplicate metric names": "twice",
}


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_bad_export_folders_are_one_line_errors(mixed_zoo, tmp_path, case):
    src = export_zoo(mixed_zoo, tmp_path / "exp")
    _break_export(src, case)
    with pytest.raises(ZooError) as e:
        import_zoo(src, str(tmp_path / "out.zarr"))
    msg = str(e.value)
    assert "\n" not in msg and EXPORT_CASES[case] in msg, msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # a failed import leaves nothing, not even a lock


def test_cli_usage_errors_exit_2(tmp_path, capsys):
    assert main(["import", str(tmp_path / "nowhere"), "--out", str(tmp_path / "z.zarr")]) == 2
    assert main(["import", str(tmp_path)]) == 2  # --out is required
    assert main(["export", str(tmp_path / "nowhere.zarr"), str(tmp_path / "exp")]) == 2
    assert main(["import", str(tmp_path), "--out", "z.zarr", "--arch", "name=mlp", "width"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith(("zoo import: error:", "zoo export: error:")) for line in err), err


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to show that a refused or failed import changed nothing)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _leftovers(out: Path) -> list[str]:
    """Anything an import leaves beside ``out`` (its staging folder, a replaced zoo, the lock)."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name) and p.name != out.name)


def test_import_refuses_while_another_writer_holds_the_lock(mixed_zoo, tmp_path, capsys):
    """A second writer to one --out is a one-line error (exit 2) that touches nothing, with or without a zoo there."""
    src = export_zoo(mixed_zoo, tmp_path / "exp")
    out = tmp_path / "out.zarr"
    with writing(str(out), "zoo build"):
        assert main(["import", str(src), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "being written by zoo build" in err and "\n" not in err, err
        assert not out.exists()
    import_zoo(src, str(out))
    before = _tree(out)
    with writing(str(out), "zoo sample"), pytest.raises(ZooError, match="being written by zoo sample"):
        import_zoo(src, str(out), overwrite=True)
    assert _tree(out) == before and _leftovers(out) == []


def test_a_failed_import_leaves_nothing_and_a_failed_replacement_keeps_the_old_zoo(mixed_zoo, tmp_path, capsys):
    """A corrupt model file found mid-import: no zoo (nor staging folder) at --out, so a retry needs no --overwrite;
    over an existing zoo with --overwrite the old zoo is left byte for byte and still reads."""
    good = export_zoo(mixed_zoo, tmp_path / "good")
    bad = export_zoo(mixed_zoo, tmp_path / "bad")
    doc = json.loads((bad / "zoo.json").read_text())
    (bad / doc["files"][str(max(int(i) for i in doc["files"]))]).write_bytes(b"garbage")  # the last one read
    out = tmp_path / "out.zarr"
    assert main(["import", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a readable safetensors" in err and "\n" not in err, err
    assert not out.exists() and _leftovers(out) == []
    assert main(["info", str(out)]) == 2
    capsys.readouterr()
    assert main(["import", str(good), "--out", str(out)]) == 0  # the retry needs no --overwrite
    before = _tree(out)
    with pytest.raises(ZooError, match="not a readable safetensors"):
        import_zoo(bad, str(out), overwrite=True)
    assert _tree(out) == before and _leftovers(out) == []
    assert_same_zoo(zoo.open(str(out)), mixed_zoo)
    import_zoo(good, str(out), overwrite=True)  # a successful replacement still works and cleans up
    assert_same_zoo(zoo.open(str(out)), mixed_zoo) and _leftovers(out) == []


def test_a_truncated_flat_import_leaves_the_old_zoo(tmp_path):
    """A truncated weights.npy is a one-line error; the zoo it would have replaced is untouched."""
    torch.manual_seed(0)
    src = write_flat(tmp_path / "flat", MLP, [build_model(MLP) for _ in range(3)], None)
    out = tmp_path / "out.zarr"
    first = import_zoo(src, str(out))
    assert len(first) == 3
    before = _tree(out)
    data = (src / "weights.npy").read_bytes()
    (src / "weights.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ZooError) as e:
        import_zoo(src, str(out), overwrite=True)
    assert "weights.npy" in str(e.value) and "\n" not in str(e.value)
    assert _tree(out) == before and _leftovers(out) == []
    assert len(zoo.open(str(out)).models) == 3
