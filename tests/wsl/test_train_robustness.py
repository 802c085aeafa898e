"""zoo train on awkward zoos: a training batch of one model, a test split of one model, an interrupted run."""

from __future__ import annotations

import json

import pytest

from tests.conftest import build_zoo
from zoo.commands.main import main as zoo_main


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """10 digits MLPs of one layout."""
    return build_zoo(
        str(tmp_path_factory.mktemp("r") / "r.zarr"),
        "recipe.widths=[8]",
        "recipe.seeds=10",
        "recipe.epochs=2",
        "recipe.checkpoint_epochs=[0,2]",
    )


def test_statnn_trains_with_a_batch_of_one_and_reports_undefined_tau_as_null(small, tmp_path):
    out = tmp_path / "run"
    # 10 models -> 8 train (batches of 7 and 1), 1 val, 1 test: tau on one model is undefined
    assert (
        zoo_main(
            [
                "train",
                "encoder=statnn",
                "task=test_accuracy",
                f"zoo={small.path}",
                f"out={out}",
                "data.split=[0.8,0.1,0.1]",
                "data.batch_size=7",
                "trainer.max_epochs=2",
                "threads=1",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"]["test"]["models"] == 1 and summary["splits"]["train"]["models"] == 8
    assert summary["test"]["kendall_tau"] is None and summary["test"]["mse"] is not None
    assert not (out / "INCOMPLETE").exists()


def test_an_interrupted_run_is_marked_incomplete_and_leaves_no_old_summary(small, tmp_path, monkeypatch):
    from zoo.commands.main import Interrupted

    out = tmp_path / "run"
    args = [
        "train",
        "encoder=mlp",
        "task=test_accuracy",
        f"zoo={small.path}",
        f"out={out}",
        "trainer.max_epochs=1",
        "threads=1",
    ]
    assert zoo_main(args) == 0 and (out / "summary.json").exists()

    def interrupt(*_a, **_k):
        raise Interrupted(15)

    fit = __import__("lightning").Trainer.fit
    monkeypatch.setattr("lightning.Trainer.fit", interrupt)
    assert zoo_main([*args, "--overwrite"]) == 143  # a finished run is replaced only on request
    assert (out / "INCOMPLETE").exists() and not (out / "summary.json").exists()
    monkeypatch.setattr("lightning.Trainer.fit", fit)
    assert zoo_main(args) == 0  # the interrupted run's folder is taken again without overwrite
    assert (out / "summary.json").exists() and not (out / "INCOMPLETE").exists()
