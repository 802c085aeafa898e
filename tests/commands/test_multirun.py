"""``zoo build -m`` and ``zoo fit -m`` (zoo.app.sweep; ``zoo train -m``: tests/wsl/test_multirun.py): Hydra's sweep
grammar through its public parser, one output per job, every job checked before the first runs."""

from __future__ import annotations

import json

import pytest

import zoo
from tests.conftest import TINY, build_zoo
from tests.generators.test_generators import FAST_CLI
from zoo.app.sweep import expand
from zoo.commands.main import main as zoo_main
from zoo.errors import ZooError


def test_expand_follows_the_basic_sweepers_order():
    """Cartesian product in argument order, range() and choice() expanded, a repeated key keeps its first place
    and its last value; plain overrides ride along in every job."""
    jobs, swept = expand(["a=1,2", "b=x", "c=range(2)", "a=3,4", "+d=choice(p,q)"])
    assert swept == ["a", "c", "a", "+d"]
    assert jobs[0] == ["a=3", "b=x", "c=0", "+d=p"] and len(jobs) == 2 * 1 * 2 * 2
    assert [j[0] for j in jobs] == ["a=3"] * 4 + ["a=4"] * 4 and [j[3] for j in jobs[:2]] == ["+d=p", "+d=q"]
    assert expand(["x=1"]) == ([["x=1"]], [])
    with pytest.raises(ZooError, match="interval sweep"):
        expand(["lr=interval(0.1,1.0)"])
    with pytest.raises(ZooError, match="bad sweep override"):
        expand(["seed=range("])


def test_build_sweep_builds_one_zoo_per_job_and_resumes(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["build", "-m", *TINY, "recipe.widths=[8]", "recipe.seeds=1", "recipe.epochs=3,4", f"out={out}"]
    assert zoo_main(args) == 0, capsys.readouterr().err
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert [line.split(":")[0] for line in lines] == ["[1/2] recipe.epochs=3", "[2/2] recipe.epochs=4"]
    record = json.loads((out / "multirun.json").read_text())
    assert record["swept"] == ["recipe.epochs"] and [r["out"] for r in record["runs"]] == [
        str(out / "0-tiny.zarr"),
        str(out / "1-tiny.zarr"),
    ]
    for r, epochs in zip(record["runs"], (3, 4)):
        z = zoo.open(r["out"])
        assert z.config["recipe"]["epochs"] == epochs and r["done"] == len(z) == 1
        assert r["score_mean"] == pytest.approx(float(z.models["test_acc"].mean()))
    # the same sweep again finds its zoos finished (nothing rebuilt); another config into them is refused first
    assert zoo_main(args) == 0
    capsys.readouterr()
    before = (out / "multirun.json").read_text()
    assert zoo_main([*args[:-2], "recipe.epochs=4,5", f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "0-tiny.zarr" in err and "different config" in err and "\n" not in err
    assert (out / "multirun.json").read_text() == before
    assert zoo.open(str(out / "1-tiny.zarr")).config["recipe"]["epochs"] == 4


def test_fit_sweep_fits_one_run_per_job_and_checks_all_first(tmp_path, capsys):
    one = build_zoo(str(tmp_path / "one.zarr"), "recipe.widths=[8]", "recipe.seeds=6")  # one layout, 6 models
    out = tmp_path / "fits"
    bad = ["fit", "-m", "generator=dwf", f"zoo={one.path}", "seed=0,1", "generator.lr=0.001,-1", f"out={out}"]
    assert zoo_main(bad) == 2
    err = capsys.readouterr().err.strip()
    assert "generator.lr=-1" in err and "\n" not in err and not out.exists()
    args = ["fit", "-m", "generator=dwf", f"zoo={one.path}", "seed=0,1", *FAST_CLI, f"out={out}"]
    assert zoo_main(args) == 0, capsys.readouterr().err
    record = json.loads((out / "multirun.json").read_text())
    assert [r["out"] for r in record["runs"]] == [str(out / "0-dwf-one"), str(out / "1-dwf-one")]
    for r, seed in zip(record["runs"], (0, 1)):
        summary = json.loads((out / r["out"].split("/")[-1] / "summary.json").read_text())
        assert summary["config"]["seed"] == seed and r["best_score"] == summary["best_score"]
    assert zoo_main(args) == 2  # finished fits are refused before any job runs, without overwrite=true
    assert "holds a finished fit" in capsys.readouterr().err
