"""``zoo build -m`` and ``zoo fit -m`` (zoo.app.sweep; ``zoo train -m``: tests/wsl/test_multirun.py): Hydra apps whose
sweeps Hydra's sweeper and launcher run, one output per job, every job checked before the first runs."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

import zoo
from tests.conftest import TINY, build_zoo, run_cli
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


def test_build_sweep_builds_one_zoo_per_job_and_resumes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "sweep"
    args = ["build", "-m", *TINY, "recipe.widths=[8]", "recipe.seeds=1", "recipe.epochs=3,4", f"out={out}"]
    assert zoo_main(args) == 0, capsys.readouterr().err
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert [line.split(":")[0] for line in lines] == ["[1/2] recipe.epochs=3", "[2/2] recipe.epochs=4"]
    # Hydra's basic sweeper and launcher ran it (their multirun.yaml beside ours); nothing else in the cwd
    hydra = OmegaConf.load(out / "multirun.yaml").hydra
    assert hydra.launcher._target_.endswith("BasicLauncher") and hydra.sweep.dir == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]
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


def test_a_job_that_fails_is_one_line_and_the_sweep_exits_2(tmp_path, capsys, monkeypatch):
    """A ZooError inside a job (here a GPU asked for on a machine without one) ends that job in one line and its
    record; the other jobs still run (as in any Hydra multirun) and the command ends with one error line."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "sweep"
    rc, stdout, err = run_cli(capsys, "build", "-m", *TINY, "device=cuda", "recipe.seed_offset=0,1", f"out={out}")
    assert rc == 2 and err.count("\n") == 1 and "2 of 2 jobs failed; job 0: device=cuda was asked for" in err
    assert [line.split(":")[0] for line in stdout.splitlines() if line.startswith("[")] == [
        "[1/2] recipe.seed_offset=0",
        "[2/2] recipe.seed_offset=1",
    ]
    runs = json.loads((out / "multirun.json").read_text())["runs"]
    assert [(r["job"], r["finished"], "no CUDA GPU" in r["error"]) for r in runs] == [
        (0, False, True),
        (1, False, True),
    ]


def test_hydra_flags_show_what_hydra_composes(tmp_path, capsys, caplog, monkeypatch):
    """--info is Hydra's own (its defaults list, logged to the terminal), without running or writing; Hydra's
    flags that exclude each other are one line."""
    monkeypatch.chdir(tmp_path)
    caplog.set_level("DEBUG", logger="hydra")
    rc, out, err = run_cli(capsys, "build", "--info", "defaults", "recipe=tiny")
    shown = out + caplog.text
    assert rc == 0 and "recipe/tiny" in shown and "hydra/launcher/basic" in shown, err
    rc, out, _ = run_cli(capsys, "build", "-m", "recipe=tiny", "--cfg", "job")
    assert rc == 2 and "give one of -m, --run, --cfg" in _
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_joblib_launcher_runs_the_jobs_in_parallel_processes(tmp_path, capsys):
    """``hydra/launcher=joblib`` (the launchers extra): two jobs in two worker processes, both recorded in one
    multirun.json (each job adds its record under a file lock)."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    out = tmp_path / "sweep"
    args = [*TINY, "recipe.widths=[8]", "recipe.seeds=1", "recipe.epochs=3", "recipe.seed_offset=0,1", f"out={out}"]
    rc, _, err = run_cli(capsys, "build", "-m", *args, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert rc == 0, err
    assert OmegaConf.load(out / "multirun.yaml").hydra.launcher._target_.endswith("JoblibLauncher")
    runs = json.loads((out / "multirun.json").read_text())["runs"]
    assert [(r["job"], r["done"], r["out"]) for r in runs] == [
        (0, 1, str(out / "0-tiny.zarr")),
        (1, 1, str(out / "1-tiny.zarr")),
    ]
    assert [zoo.open(r["out"]).config["recipe"]["seed_offset"] for r in runs] == [0, 1]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The ..declarative_base\\(\\).. function is now available:Warning")  # optuna 2.10
def test_optuna_sweeper_plugin_optimizes_fit_runs_on_their_validation_score(tmp_path, capsys, monkeypatch):
    """``hydra/sweeper=optuna`` (hydra-optuna-sweeper, the dev extra) drives ``zoo fit -m`` as in any Hydra app: it
    draws generator.lr from an interval, each job returns its run's best validation monitor (never a test figure),
    and Optuna's optimization_results.yaml names the best trial, beside the jobs' run folders in out=."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    one = build_zoo(str(tmp_path / "one.zarr"), "recipe.widths=[8]", "recipe.seeds=6")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "search"
    sweeper = ["hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=0"]
    args = ["fit", "-m", "generator=dwf", f"zoo={one.path}", *FAST_CLI, f"out={out}", *sweeper]
    rc, stdout, err = run_cli(capsys, *args, "hydra.sweeper.direction=maximize", "generator.lr=interval(0.0005,0.005)")
    assert rc == 0, err
    runs = json.loads((out / "multirun.json").read_text())["runs"]
    lrs = [float(next(o for o in r["overrides"] if o.startswith("generator.lr=")).split("=")[1]) for r in runs]
    assert len(runs) == 2 and all(r["finished"] and r["monitor"].startswith("val/") for r in runs)
    assert all(0.0005 <= lr <= 0.005 for lr in lrs) and lrs[0] != lrs[1]
    assert [line.split(":")[0] for line in stdout.splitlines() if line.startswith("[")] == [
        f"[job {i}] generator.lr={lr}" for i, lr in enumerate(lrs)
    ]
    best = OmegaConf.load(out / "optimization_results.yaml")
    assert best.name == "optuna" and best.best_value == max(r["best_score"] for r in runs)
    assert float(best.best_params["generator.lr"]) == lrs[[r["best_score"] for r in runs].index(best.best_value)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.zarr", "search"]  # nothing in the cwd
    # a job that fails is one line in the record and in the exit (exit 2), as with the basic sweeper
    rc, _, err = run_cli(capsys, *args, "generator.lr=-1", f"hydra.sweep.dir={tmp_path / 'bad'}")
    ours = [line for line in err.splitlines() if line.startswith("zoo fit")]  # Optuna logs its study's name too
    assert rc == 2 and len(ours) == 1 and "2 of 2 jobs failed; job 0: generator.lr=-1 is invalid" in ours[0], err


def test_an_optimizing_sweeper_on_zoo_build_is_one_line_before_anything_runs(tmp_path, capsys, monkeypatch):
    """zoo build jobs return no validation figure, so an optimizing sweeper plugin has nothing to optimize: one line
    naming what to do instead, nothing written (checked before Hydra or the plugin is started)."""
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(capsys, "build", "-m", *TINY, "recipe.epochs=interval(1,3)", "hydra/sweeper=optuna")
    assert rc == 2 and "zoo build jobs return no validation figure" in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []
