"""LCSC: the evolutionary search over checkpoint coefficients, its zoo runs, the written zoo and `zoo lcsc`."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import zoo
from generators.lcsc.search import (
    Search,
    SearchConfig,
    combine,
    ema_coefficients,
    project,
    run_searches,
    validation_view,
)
from generators.lcsc.zoo import lcsc_zoo, write_lcsc_zoo
from tests.conftest import build_zoo
from zoo.commands.main import main as zoo_main
from zoo.errors import ZooError

FAST = SearchConfig(population=16, max_evals=120)


@pytest.fixture(scope="module")
def ckpt_zoo(tmp_path_factory) -> zoo.Zoo:
    """3 digits MLPs (width 16) trained 8 epochs at a high learning rate, 9 checkpoints: noisy last iterates."""
    out = tmp_path_factory.mktemp("lcsc") / "ckpts.zarr"
    return build_zoo(
        str(out),
        "recipe.widths=[16]",
        "recipe.seeds=3",
        "recipe.epochs=8",
        "recipe.learning_rates=[0.1]",
        "recipe.batch_sizes=[32]",
        "recipe.checkpoint_epochs=[0,1,2,3,4,5,6,7,8]",
    )


def test_project_sums_to_one_within_bounds_and_keeps_feasible_rows():
    rng = np.random.default_rng(0)
    v = rng.normal(0, 2, (200, 7))
    for lo, hi in ((0.0, 1.0), (-0.5, 1.5)):
        a = project(v, lo, hi)
        assert np.allclose(a.sum(1), 1.0, atol=1e-12)
        assert (a >= lo - 1e-12).all() and (a <= hi + 1e-12).all()
        # a projection: projecting again changes nothing, and no feasible point is closer (spot-check)
        assert np.allclose(project(a, lo, hi), a, atol=1e-12)
        other = project(v + rng.normal(0, 0.3, v.shape), lo, hi)
        assert (np.linalg.norm(v - a, axis=1) <= np.linalg.norm(v - other, axis=1) + 1e-9).all()
    seed = ema_coefficients(7, 0.8)
    assert np.array_equal(project(seed[None], 0.0, 1.0)[0], seed)  # seeds stay exactly themselves


def _bowl_search(alpha_star: np.ndarray, seed: int, config: SearchConfig) -> Search:
    """Search on ||sum alpha_i theta_i - theta*||^2 with theta* = sum alpha*_i theta_i (5 points in R^8)."""
    thetas = np.random.default_rng(1).normal(size=(len(alpha_star), 8))
    target = alpha_star @ thetas
    s = Search(len(alpha_star), config, seed=seed)
    run_searches([s], lambda idx, a: ((a @ thetas - target) ** 2).sum(1))
    return s


def test_search_finds_the_optimum_of_a_quadratic_bowl_inside_the_span():
    alpha_star = np.array([0.1, 0.3, 0.05, 0.35, 0.2])  # not a seed; inside the bounds [0, 1]
    config = SearchConfig(population=32, max_evals=3000, max_generations=300, patience=30)
    s = _bowl_search(alpha_star, 0, config)
    assert np.abs(s.best[1] - alpha_star).max() < 0.02
    seeds_best = min(s.fitness(a) for a in s.seeds)
    assert s.best[0] < 0.01 * seeds_best
    assert s.evaluations <= config.max_evals
    # wider bounds, an optimum with a negative coefficient (extrapolation)
    wide = dataclasses.replace(config, lower=-1.0, upper=2.0)
    alpha_neg = np.array([-0.3, 0.2, 0.1, 0.4, 0.6])
    assert np.abs(_bowl_search(alpha_neg, 0, wide).best[1] - alpha_neg).max() < 0.03


def test_search_is_seeded_and_capped():
    alpha_star = np.array([0.1, 0.3, 0.05, 0.35, 0.2])
    config = SearchConfig(population=16, max_evals=100)
    a, b, c = (_bowl_search(alpha_star, seed, config) for seed in (3, 3, 4))
    assert np.array_equal(a.best[1], b.best[1]) and a.best[0] == b.best[0]
    assert not np.array_equal(a.best[1], c.best[1])
    assert a.evaluations <= 100 and len(a.cache) == a.evaluations  # cached: no vector evaluated twice


def test_search_on_a_real_zoo_beats_or_equals_every_seed_on_validation(ckpt_zoo):
    r = lcsc_zoo(ckpt_zoo, "all", FAST, seed=0)
    t = r.table
    assert list(t["model_id"]) == [0, 1, 2]
    for method in ("last", "ema", "uniform"):
        assert (t["lcsc_val_loss"] <= t[f"{method}_val_loss"] * (1 + 1e-6)).all(), method
    coef = np.array(t["coefficients"].tolist())
    assert coef.shape == (3, 9)
    assert np.allclose(coef.sum(1), 1.0, atol=1e-9) and (coef >= -1e-12).all() and (coef <= 1 + 1e-12).all()
    assert (t["evaluations"] <= FAST.max_evals).all()
    assert r.settings["val_fraction"] == 0.2 and r.settings["val_samples"] == round(0.2 * 1437)
    # the "last" baseline is the stored last checkpoint: its test accuracy is the stored one
    assert np.allclose(t["last_test_acc"], ckpt_zoo.models["test_acc"])
    # same seed, same result; bounds are respected when widened
    again = lcsc_zoo(ckpt_zoo, "all", FAST, seed=0).table
    assert again["coefficients"].tolist() == t["coefficients"].tolist()
    wide = lcsc_zoo(ckpt_zoo, [1], dataclasses.replace(FAST, lower=-0.5, upper=1.5)).table
    c = np.array(wide["coefficients"][0])
    assert abs(c.sum() - 1) < 1e-9 and c.min() >= -0.5 - 1e-12 and c.max() <= 1.5 + 1e-12


def test_the_search_never_reads_the_test_split(ckpt_zoo):
    data = ckpt_zoo.dataset()
    poisoned = dataclasses.replace(
        data, X_test=torch.full_like(data.X_test, float("nan")), y_test=torch.zeros_like(data.y_test)
    )
    clean = lcsc_zoo(ckpt_zoo, [0, 2], FAST, data=data).table
    dirty = lcsc_zoo(ckpt_zoo, [0, 2], FAST, data=poisoned).table
    assert dirty["coefficients"].tolist() == clean["coefficients"].tolist()
    assert dirty["lcsc_val_loss"].tolist() == clean["lcsc_val_loss"].tolist()
    assert dirty["lcsc_test_acc"].isna().all() and clean["lcsc_test_acc"].notna().all()
    # the validation view holds training rows only, and none of the test split
    val = validation_view(data, 0.2, 0)
    rows = {tuple(x.tolist()) for x in data.X_train}
    assert all(tuple(x.tolist()) in rows for x in val.X_test) and len(val.X_test) == round(0.2 * len(data.X_train))


def test_cli_writes_the_merged_zoo_and_table(ckpt_zoo, tmp_path, capsys):
    out = str(tmp_path / "merged.zarr")
    rc = zoo_main(["lcsc", ckpt_zoo.path, "--models", "0,2", "--out", out, "--max-evals", "120", "--population", "16"])
    assert rc == 0 and "zoo lcsc: 2 models" in capsys.readouterr().out
    z = zoo.open(out)
    t = z.table("lcsc")
    assert list(t["model_id"]) == [0, 2] and list(z.models["source_model_id"]) == [0, 2]
    coef = np.array(t["coefficients"].tolist())
    written = z.weights([0, 1])
    expected = torch.stack([combine(ckpt_zoo.trajectory(i), coef[j][None])[0] for j, i in enumerate((0, 2))])
    assert torch.equal(written, expected)  # no BatchNorm: the written vector is the combination, bit for bit
    trajs = ckpt_zoo.weights([0, 2], checkpoint=None).double()  # [2, C, P]
    exact = torch.stack([torch.from_numpy(coef[j]) @ trajs[j] for j in range(2)])  # sum_i alpha_i theta_i
    assert torch.allclose(written.double(), exact, atol=1e-6, rtol=0)
    assert np.allclose(z.models["test_acc"], t["lcsc_test_acc"])
    assert z.attrs["lcsc"]["val_fraction"] == 0.2 and z.checkpoint_epochs == [8]
    assert list(z.models["width"]) == [16, 16] and list(z.models["seed"]) == [0, 2]  # hyperparameters carried over
    # the merged zoo is a zoo: a module rebuilt from it predicts what the evaluator measured
    m = z.module(1)
    data = z.dataset()
    acc = (m(data.X_test).argmax(1) == data.y_test).double().mean().item()
    assert abs(acc - t["lcsc_test_acc"][1]) < 1e-9
    # refusing to overwrite, and --overwrite
    assert zoo_main(["lcsc", ckpt_zoo.path, "--models", "1", "--out", out]) == 2
    assert "already exists" in capsys.readouterr().err


def test_batchnorm_weights_are_the_combination_with_statistics_recomputed(tmp_path):
    src = build_zoo(
        str(tmp_path / "cnn.zarr"),
        "recipe.arch=cnn",
        "recipe.dataset=digits-image",
        "recipe.widths=[4]",
        "recipe.seeds=1",
        "recipe.epochs=2",
        "recipe.checkpoint_epochs=[0,1,2]",
    )
    layout = next(iter(src.layouts.values()))
    assert any(e.name.endswith("running_mean") for e in layout.entries)
    r = lcsc_zoo(src, "all", SearchConfig(population=8, max_evals=30))
    out = write_lcsc_zoo(src, r, str(tmp_path / "merged.zarr"))
    w = out.weights([0])
    comb = combine(src.trajectory(0), np.array(r.table["coefficients"][0])[None])
    mask = layout.parameter_mask()
    assert torch.allclose(w[:, mask], comb[:, mask], atol=1e-6)
    assert torch.allclose(w, zoo.recalibrate_bn(layout, comb, src.dataset()), atol=1e-5)


def _with_diverged(src: zoo.Zoo, path: str) -> zoo.Zoo:
    """A copy of ``src``'s first two models, the second marked diverged after checkpoint 1."""
    models = src.models[["width", "learning_rate", "seed"]].iloc[:2].reset_index(drop=True)
    w = zoo.create(path, models, src.layouts, src.checkpoint_epochs, src.metric_names, datasets=[src.dataset()])
    traj = src.weights([0, 1], checkpoint=None)
    w.write([0], traj[:1])
    bad = traj[1:].clone()
    bad[:, 2:] = float("nan")
    w.write([1], bad, status="diverged", last_checkpoint=[1])
    return w.zoo()


def test_bad_inputs_are_one_line_errors(ckpt_zoo, tmp_path, capsys):
    z = _with_diverged(ckpt_zoo, str(tmp_path / "div.zarr"))
    with pytest.raises(ZooError, match="model 1 is diverged"):
        lcsc_zoo(z, [1], FAST)
    assert lcsc_zoo(z, "all", FAST).table["model_id"].tolist() == [0]  # 'all' means the done models
    for kwargs, match in (
        ({"models": "0,x"}, "bad model ids"),
        ({"models": [7]}, "out of range"),
        ({"val_fraction": 1.0}, "validation fraction"),
        ({"metric": "r2"}, "metric must be"),
        ({"config": dataclasses.replace(FAST, lower=0.2)}, "bounds"),
        ({"config": dataclasses.replace(FAST, max_evals=3)}, "max_evals"),
        ({"upto": 0}, "at least 2 checkpoints"),
        ({"upto": 20}, "out of range"),
    ):
        with pytest.raises(ZooError, match=match):
            lcsc_zoo(ckpt_zoo, **{"models": "all", "config": FAST, **kwargs})
    # a zoo with one checkpoint per model (an LCSC output) has nothing to combine
    one = str(tmp_path / "one.zarr")
    assert zoo_main(["lcsc", ckpt_zoo.path, "--models", "0", "--out", one, "--max-evals", "40"]) == 0
    capsys.readouterr()
    assert zoo_main(["lcsc", one, "--out", str(tmp_path / "two.zarr")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "at least 2 checkpoints" in err
    assert zoo_main(["lcsc", ckpt_zoo.path, "--out", str(tmp_path / "x.zarr"), "--models", "0", "--lower", "0.5"]) == 2
    assert zoo_main(["lcsc", ckpt_zoo.path]) == 2 and "--out" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- generators
GEN_FIT = {
    "hidden": 32,
    "time_dim": 16,
    "val_samples": 4,
    "steps_per_epoch": 15,
    "trainer.max_epochs": 2,
    "trainer.enable_progress_bar": False,
    "snapshot_every_n_steps": 5,
}
GEN_SEARCH = SearchConfig(population=8, max_evals=24)


@pytest.fixture(scope="module")
def gen_run(tmp_path_factory):
    """A small DeepWeightFlow run with 6 snapshots (every 5 of its 30 steps) on 10 digits MLPs."""
    import generators

    d = tmp_path_factory.mktemp("lcsc-gen")
    src = build_zoo(str(d / "src.zarr"), "recipe.widths=[8]", "recipe.seeds=5", "recipe.learning_rates=[0.05,0.1]")
    generators.fit("dwf", src.path, out=str(d / "run"), **GEN_FIT)
    return d / "run"


def test_generator_lcsc_combines_snapshots_and_saves_a_loadable_run(gen_run, tmp_path):
    import generators
    from generators.lcsc.snapshots import lcsc_generator

    r = lcsc_generator(gen_run, GEN_SEARCH, samples=4)
    assert r.steps == generators.snapshots(gen_run) and len(r.steps) == 6
    a = np.array(r.coefficients)
    assert abs(a.sum() - 1) < 1e-9 and a.min() >= -1e-12 and a.max() <= 1 + 1e-12
    for m in ("last", "ema", "uniform"):
        assert r.results["lcsc"]["val_acc"] >= r.results[m]["val_acc"], m
    assert set(r.results) == {"shipped", "last", "ema", "uniform", "lcsc"}
    # the saved run's weights are sum alpha_i W_i over the snapshots, and it samples like any run
    out = r.save(tmp_path / "merged")
    g = generators.load(out)
    snaps = [generators.load(gen_run, snapshot=s).state_dict() for s in r.steps]
    for k, v in g.state_dict().items():
        if v.is_floating_point():
            expected = sum(float(ai) * s[k].double() for ai, s in zip(a, snaps)).float()
            assert torch.allclose(v, expected, atol=1e-6), k
    assert len(g.sample(3, seed=1)) == 3
    again = lcsc_generator(gen_run, GEN_SEARCH, samples=4)
    assert again.coefficients == r.coefficients  # seeded


def test_generator_lcsc_never_reads_the_test_split(gen_run, monkeypatch):
    from generators.base import Generator
    from generators.lcsc.snapshots import lcsc_generator

    clean = lcsc_generator(gen_run, GEN_SEARCH, samples=4)
    real = Generator.dataset

    def poisoned(self):
        d = real(self)
        return dataclasses.replace(d, X_test=torch.full_like(d.X_test, float("nan")))

    monkeypatch.setattr(Generator, "dataset", poisoned)
    dirty = lcsc_generator(gen_run, GEN_SEARCH, samples=4)
    assert dirty.coefficients == clean.coefficients
    assert dirty.results["lcsc"]["val_acc"] == clean.results["lcsc"]["val_acc"]
    assert dirty.results["lcsc"]["test_acc"] == 0.0 and clean.results["lcsc"]["test_acc"] > 0.0


def test_generator_cli_and_errors(gen_run, tmp_path, capsys):
    out = tmp_path / "merged"
    assert (
        zoo_main(["lcsc", str(gen_run), "--generator", "--out", str(out), "--samples", "4", "--max-evals", "16"]) == 0
    )
    assert "6 snapshots" in capsys.readouterr().out and (out / "lcsc.json").is_file()
    assert zoo_main(["sample", str(out), "-n", "3", "--out", str(tmp_path / "s.zarr")]) == 0
    assert len(zoo.open(str(tmp_path / "s.zarr")).models) == 3
    for argv, match in (
        ([], "already exists"),
        (["--overwrite", "--upto", "5"], "at least 2 generator snapshots"),
        (["--overwrite", "--models", "0"], "--models selects zoo models"),
        (["--overwrite", "--samples", "0"], "samples must be a positive integer"),
    ):
        capsys.readouterr()
        assert zoo_main(["lcsc", str(gen_run), "--generator", "--out", str(out), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert match in err and "\n" not in err
    assert zoo_main(["lcsc", str(tmp_path / "none"), "--generator", "--out", str(tmp_path / "o")]) == 2
    assert "no generator run" in capsys.readouterr().err


def _files(root) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to show a refused command wrote nothing)."""
    from pathlib import Path

    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _lcsc_refused(argv: list[str], match: str, capsys) -> None:
    capsys.readouterr()
    assert zoo_main(["lcsc", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err and "Traceback" not in err, err


def test_generator_out_that_is_a_file_the_run_itself_or_a_users_folder_is_refused(gen_run, tmp_path, capsys):
    """--out a file, --out the run it reads, and --overwrite onto a folder holding files LCSC does not write: one
    line each, before any search, and nothing changes (issue 27: a traceback, and --overwrite clobbered)."""
    fast = ["--generator", "--samples", "2", "--max-evals", "16", "--population", "4"]
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n")
    _lcsc_refused([str(gen_run), *fast, "--out", str(a_file)], "is a file, not a run folder", capsys)
    assert a_file.read_text() == "mine\n"
    before = _files(gen_run)
    _lcsc_refused([str(gen_run), *fast, "--out", str(gen_run), "--overwrite"], "is the run LCSC reads", capsys)
    assert _files(gen_run) == before
    users = tmp_path / "users"
    (users / "sub").mkdir(parents=True)
    (users / "config.json").write_text("{}")
    (users / "sub" / "data.csv").write_text("1,2\n")
    kept = _files(users)
    _lcsc_refused([str(gen_run), *fast, "--out", str(users), "--overwrite"], "not an LCSC run folder", capsys)
    assert _files(users) == kept
    # an LCSC run folder is replaced with --overwrite, and the new one holds only what LCSC writes
    out = tmp_path / "merged"
    for _ in range(2):
        assert zoo_main(["lcsc", str(gen_run), *fast, "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "lcsc.json", "model.safetensors"]
    assert not (tmp_path / "merged.lock").exists()


def test_generator_on_an_incomplete_run_or_a_corrupt_snapshot_is_one_line(gen_run, tmp_path, capsys):
    """A killed fit (INCOMPLETE) and a truncated snapshot are one-line errors that write nothing."""
    import shutil

    fast = ["--generator", "--samples", "2", "--max-evals", "16", "--population", "4"]
    run = tmp_path / "run"
    shutil.copytree(gen_run, run)
    (run / "INCOMPLETE").write_text("killed\n")
    _lcsc_refused([str(run), *fast, "--out", str(tmp_path / "o")], "this run did not finish", capsys)
    (run / "INCOMPLETE").unlink()
    snap = sorted((run / "snapshots").iterdir())[2]
    snap.write_bytes(snap.read_bytes()[:100])
    _lcsc_refused([str(run), *fast, "--out", str(tmp_path / "o")], f"{snap.name}", capsys)
    assert not (tmp_path / "o").exists()


def test_generator_save_holds_the_lock_and_marks_incomplete(gen_run, tmp_path, monkeypatch, capsys):
    """Another writer's lock on --out refuses the save (one line); a save that fails midway leaves INCOMPLETE,
    so `zoo sample` refuses the half-written folder."""
    import generators.registry as registry
    from zoo.store.lock import writing

    fast = ["--generator", "--samples", "2", "--max-evals", "16", "--population", "4"]
    out = tmp_path / "merged"
    with writing(str(out), "zoo lcsc"):
        _lcsc_refused([str(gen_run), *fast, "--out", str(out)], "is being written by zoo lcsc", capsys)
    assert not out.exists() or not any(out.iterdir())

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(registry, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        zoo_main(["lcsc", str(gen_run), *fast, "--out", str(out)])
    monkeypatch.undo()
    assert (out / "INCOMPLETE").is_file()
    _lcsc_refused([str(out), *fast, "--out", str(tmp_path / "o2")], "did not finish", capsys)


def test_device_cpu_is_the_default_bits_and_cuda_is_refused(ckpt_zoo, gen_run, tmp_path, capsys):
    """``--device cpu`` gives the default's merged zoo and generator search bit for bit; where torch sees no GPU,
    ``--device cuda`` is one line, exit 2, nothing written (zoo and --generator alike)."""
    outs = []
    for name, extra in (("plain", []), ("cpu", ["--device", "cpu"])):
        out = str(tmp_path / f"{name}.zarr")
        argv = ["lcsc", ckpt_zoo.path, "--models", "1", "--out", out, "--max-evals", "48", "--population", "8"]
        assert zoo_main([*argv, *extra]) == 0, capsys.readouterr().err
        outs.append(zoo.open(out))
    assert torch.equal(outs[0].weights([0]), outs[1].weights([0]))
    assert outs[0].table("lcsc").equals(outs[1].table("lcsc"))
    runs = []
    for name, extra in (("plain", []), ("cpu", ["--device", "cpu"])):
        out = tmp_path / f"gen-{name}"
        argv = ["lcsc", str(gen_run), "--generator", "--out", str(out), "--samples", "2", "--max-evals", "16"]
        assert zoo_main([*argv, *extra]) == 0, capsys.readouterr().err
        record = json.loads((out / "lcsc.json").read_text())
        runs.append((record["results"], record["coefficients"]))
    assert runs[0] == runs[1]
    if torch.cuda.is_available():
        return
    for src, extra in ((ckpt_zoo.path, []), (str(gen_run), ["--generator"])):
        out = tmp_path / "gpu"
        capsys.readouterr()
        assert zoo_main(["lcsc", src, *extra, "--out", str(out), "--device", "cuda"]) == 2
        err = capsys.readouterr().err.strip()
        assert "no CUDA GPU" in err and "\n" not in err, err
        assert not out.exists()
