"""Where a zoo records its data: an absolute path found from any working directory, moved data found with a
data root (argument, --data-root, WSZOO_DATA_ROOT), other data refused; models vs data output checks."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import zoo
from tests.conftest import run_cli
from tests.zoo.datasets.test_files import idx_folder
from zoo import ZooError
from zoo.arch import arch_spec, build_model
from zoo.datasets import DATA_ROOT_ENV, locate
from zoo.layout import layout_of


def small_zoo(path, data, outputs=None, n=3):
    """A zoo of n random MLPs that records ``data`` (their outputs: the data's classes unless ``outputs``)."""
    spec = arch_spec("mlp", data.input_shape, data.num_outputs if outputs is None else outputs, 4, 1)
    torch.manual_seed(0)
    layout = layout_of(build_model(spec), spec)
    w = zoo.create(
        str(path), pd.DataFrame({"seed": np.arange(n)}), {layout.key(): layout}, [0], ["train_loss"], datasets=[data]
    )
    w.write(list(range(n)), torch.stack([layout.flatten(build_model(spec).state_dict()) for _ in range(n)])[:, None])
    return zoo.open(str(path))


@pytest.fixture
def moved(tmp_path, monkeypatch):
    """A zoo built on a relative IDX path, then the data moved to another folder under its own name."""
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    idx_folder(tmp_path / "digits-idx")
    data = zoo.load_dataset("digits-idx")
    z = small_zoo(tmp_path / "z.zarr", data)
    assert z.datasets == [str(tmp_path / "digits-idx")]  # recorded absolute, not as typed
    (tmp_path / "elsewhere").mkdir()
    shutil.move(str(tmp_path / "digits-idx"), str(tmp_path / "elsewhere" / "digits-idx"))
    return z, data, tmp_path / "elsewhere"


def test_recorded_path_works_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    idx_folder(tmp_path / "d")
    z = small_zoo(tmp_path / "z.zarr", zoo.load_dataset("d"))
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    assert zoo.open(str(tmp_path / "z.zarr")).dataset().fingerprint == z.dataset().fingerprint


def test_moved_data_is_found_with_a_data_root_and_only_then(moved, monkeypatch):
    z, data, root = moved
    with pytest.raises(ZooError, match=r"not there \(looked at .*digits-idx'\).*data_root=DIR.*WSZOO_DATA_ROOT"):
        z.dataset()
    got = z.dataset(data_root=str(root))
    assert got.fingerprint == data.fingerprint and torch.equal(got.X_train, data.X_train)
    assert got.key == z.datasets[0]  # the zoo's record of it stays its key, wherever it was found
    monkeypatch.setenv(DATA_ROOT_ENV, str(root))
    assert z.dataset().fingerprint == data.fingerprint
    assert locate(z.datasets[0]) == str(root / "digits-idx")


def test_other_data_under_the_recorded_name_is_refused(moved):
    z, _, root = moved
    shutil.rmtree(root / "digits-idx")
    idx_folder(root / "digits-idx", seed=1)  # same name and shapes, other pixels
    with pytest.raises(ZooError, match="differs from the data this zoo was built on"):
        z.dataset(data_root=str(root))


def test_models_whose_outputs_do_not_match_the_data_are_refused(tmp_path):
    data = zoo.load_dataset("digits")
    z = small_zoo(tmp_path / "z.zarr", data, outputs=4)
    weights = z.weights([0, 1])
    with pytest.raises(ZooError, match="models have 4 outputs but dataset 'digits' has 10 classes"):
        zoo.evaluate(z.layout(0), weights, data)


def test_build_from_an_idx_folder_then_diagnose_from_elsewhere_after_a_move(tmp_path, monkeypatch, capsys):
    """zoo build on a relative IDX folder; zoo diagnose from another directory; the data moved: a one-line
    error saying how to point at it, then --data-root. Through the CLI's entry point in this process (the
    directory changed as a user would); test_build.py runs the real executable."""
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    work, other = tmp_path / "work", tmp_path / "other"
    other.mkdir()
    idx_folder(work / "idx")
    monkeypatch.chdir(work)
    build = ["build", "out=z.zarr", "recipe=tiny", "recipe.dataset=idx", "recipe.batch_sizes=[16]"]
    rc, _, err = run_cli(capsys, *build, "recipe.widths=[8]", "recipe.seeds=3", "progress=false")
    assert rc == 0, err
    diagnose = ["diagnose", "--train", str(work / "z.zarr"), "--baselines", "average", "--k", "2"]
    diagnose += ["--n-baseline", "2", "--no-plots", "--refine", "0", "--json"]
    monkeypatch.chdir(other)
    rc, out, err = run_cli(capsys, *diagnose, "--out", "d1")
    assert rc == 0, err
    assert '"train"' in out and (other / "d1" / "diagnose.json").exists()
    shutil.move(str(work / "idx"), str(other / "idx"))
    rc, _, err = run_cli(capsys, *diagnose, "--out", "d2")
    assert rc != 0 and len(err.strip().splitlines()) == 1 and "--data-root DIR" in err
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(capsys, *diagnose, "--out", "d3", "--data-root", str(other))
    assert rc == 0, err
