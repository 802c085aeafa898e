"""Generators: run folders round-trip, samples are zoos, errors are one line, and fitting never reads the test
split (the flow itself: tests/generators/dwf/test_flow.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import generators
import zoo
from generators import base
from generators.lit import EMA
from tests.conftest import build_zoo, run_cli
from tests.generators.devices import check_device_paths
from zoo.commands.main import main as cli_main
from zoo.errors import ZooError
from zoo.store.lock import writing

# A fast fit: a small velocity net, few steps, no progress bar.
FAST = {
    "hidden": 32,
    "time_dim": 16,
    "val_samples": 4,
    "steps_per_epoch": 15,
    "trainer.max_epochs": 2,
    "trainer.enable_progress_bar": False,
    "snapshot_every_n_steps": 10,
}
FAST_CLI = [
    "generator.hidden=32",
    "generator.time_dim=16",
    "generator.val_samples=4",
    "steps_per_epoch=15",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
]


@pytest.fixture(scope="module")
def mlp_zoo(tmp_path_factory) -> zoo.Zoo:
    """10 digits MLPs of one layout (width 8), two learning rates x 5 seeds."""
    return build_zoo(
        str(tmp_path_factory.mktemp("gen") / "one.zarr"),
        "recipe.widths=[8]",
        "recipe.seeds=5",
        "recipe.learning_rates=[0.05,0.1]",
    )


@pytest.fixture(scope="module")
def run(mlp_zoo, tmp_path_factory) -> generators.Generator:
    """A DeepWeightFlow fitted on ``mlp_zoo``, conditioned on the learning rate."""
    out = tmp_path_factory.mktemp("gen") / "run"
    return generators.fit("dwf", mlp_zoo.path, out=str(out), condition="learning_rate", **FAST)


def test_save_load_gives_identical_samples(run, tmp_path):
    """A run folder (config.json + safetensors) rebuilds a generator that samples the same nets for one seed."""
    assert (run.run_dir / "config.json").is_file() and (run.run_dir / "model.safetensors").is_file()
    loaded = generators.load(run.run_dir)
    a = run.sample(6, seed=3, condition=0.05)
    b = loaded.sample(6, seed=3, condition=0.05)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    other = loaded.sample(6, seed=4, condition=0.05)
    assert not torch.equal(a[0]["layers.0.weight"], other[0]["layers.0.weight"])
    copy = loaded.save(tmp_path / "copy")
    again = generators.load(copy).sample(6, seed=3, condition=0.05)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, again) for k in x)


def test_save_pretrained_from_pretrained_round_trip(run, tmp_path):
    """save_pretrained writes the hub layout; Cls.from_pretrained reads it back (local folders only) and the
    generator samples the same bits; a run of another method or a hub id is a one-line error."""
    hub = generators.load(run.run_dir).save_pretrained(tmp_path / "hub")  # a copy: the fixture keeps its run_dir
    assert sorted(p.name for p in hub.iterdir()) == ["config.json", "model.safetensors"]
    again = generators.DeepWeightFlow.from_pretrained(hub)
    assert isinstance(again, generators.DeepWeightFlow) and not again.training
    a, b = run.sample_flat(5, seed=7, condition=0.05)[0], again.sample_flat(5, seed=7, condition=0.05)[0]
    assert torch.equal(a, b)
    assert isinstance(generators.Generator.from_pretrained(hub), generators.DeepWeightFlow)
    with pytest.raises(ZooError, match="not a Known"):
        generators.Known.from_pretrained(hub)
    with pytest.raises(ZooError, match="local run folder.*nothing is downloaded"):
        generators.DeepWeightFlow.from_pretrained("someone/dwf-mnist")


def test_sampling_a_saved_generator_imports_no_lightning(run):
    """Lightning is for fitting only: a fresh process loads a run and samples it without importing it (nor pandas
    or zarr, which only fitting and writing zoos need, nor torchdiffeq and scipy: the DWF sampler steps itself)."""
    code = (
        "import sys, generators\n"
        f"states = generators.load({str(run.run_dir)!r}).sample(3, condition=0.05)\n"
        "assert len(states) == 3\n"
        "heavy = {'lightning', 'pytorch_lightning', 'pandas', 'zarr', 'torchdiffeq', 'scipy'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_sample_zoo_scores_only_the_splits_asked_for(run, tmp_path, capsys):
    """metrics=("test",): the same weights and test metrics as the default, train metrics left NaN; none scores
    nothing; an unknown split is one line before anything is sampled or written."""
    full = run.sample_zoo(3, tmp_path / "full.zarr", seed=2).models
    test = run.sample_zoo(3, tmp_path / "test.zarr", seed=2, metrics=("test",))
    assert torch.equal(test.weights([0, 1, 2]), zoo.open(str(tmp_path / "full.zarr")).weights([0, 1, 2]))
    assert np.array_equal(test.models["test_acc"], full["test_acc"]) and test.models["train_acc"].isna().all()
    assert run.sample_zoo(2, tmp_path / "none.zarr", metrics="none").models["test_acc"].isna().all()
    with pytest.raises(ZooError, match="unknown split 'val'"):
        run.sample_zoo(2, tmp_path / "bad.zarr", metrics="test,val")
    assert not (tmp_path / "bad.zarr").exists()
    args = ("sample", str(run.run_dir), "-n", "2", "--out", str(tmp_path / "b.zarr"), "--metrics", "x")
    rc, _, err = run_cli(capsys, *args)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "unknown split 'x'" in err


def test_samples_are_state_dicts_of_the_zoo_layout(run, mlp_zoo):
    layout = next(iter(mlp_zoo.layouts.values()))
    states = run.sample(3, seed=0, condition=0.1)
    assert len(states) == 3
    for s in states:
        assert list(s) == layout.names
        module = layout.build()
        module.load_state_dict(s)  # strict: every tensor present with its shape


def test_sample_zoo_metrics_match_rebuilt_modules(run, tmp_path):
    """The metrics sample_zoo stores equal the accuracy of the modules rebuilt from the written zoo."""
    z = run.sample_zoo(8, tmp_path / "samples.zarr", seed=1)
    df = z.models
    assert len(df) == 8 and (df["status"] == "done").all()
    assert set(df["learning_rate"]) <= {0.05, 0.1} and (df["generator"] == "dwf").all()
    assert z.attrs["generator"]["run"] == str(run.run_dir)
    data = z.dataset()
    for i in range(8):
        module = z.module(i)
        with torch.no_grad():
            acc = (module(data.X_test).argmax(1) == data.y_test).double().mean().item()
            train_acc = (module(data.X_train).argmax(1) == data.y_train).double().mean().item()
        assert acc == pytest.approx(df.loc[i, "test_acc"], abs=1e-9)
        assert train_acc == pytest.approx(df.loc[i, "train_acc"], abs=1e-9)
    flat, _ = run.sample_flat(8, seed=1)
    assert torch.equal(z.weights(list(range(8))), flat)


def test_condition_draws_and_values(run):
    _, values = run.sample_flat(40, seed=0)
    assert set(values) == {0.05, 0.1}  # drawn in the training proportions when no condition is given
    _, values = run.sample_flat(5, seed=0, condition="0.1")  # CLI text matches the numeric value
    assert values == [0.1] * 5
    with pytest.raises(ZooError, match="unknown condition value"):
        run.sample(2, condition=0.07)


@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_bad_sample_count(run, n):
    with pytest.raises(ZooError, match="positive integer"):
        run.sample(n)


def test_missing_run_folder(tmp_path):
    with pytest.raises(ZooError, match="no generator run"):
        generators.load(tmp_path / "nothing")


def test_zoo_with_several_layouts_is_refused(tiny_zoo, tmp_path):
    with pytest.raises(ZooError, match="several layouts") as e:
        generators.fit("dwf", tiny_zoo.path, out=str(tmp_path / "r"), **FAST)
    assert "\n" not in str(e.value)


def test_conditioning_needs_several_values(mlp_zoo, tmp_path):
    with pytest.raises(ZooError, match="every selected model has the value"):
        generators.fit("dwf", mlp_zoo.path, out=str(tmp_path / "r"), condition="width", **FAST)


def test_unknown_setting(mlp_zoo):
    with pytest.raises(ZooError, match="unknown setting"):
        generators.fit("dwf", mlp_zoo.path, hiddenn=3)


def test_fit_never_reads_the_test_split(mlp_zoo, tmp_path, monkeypatch):
    """Fitting (validation samples, BN, alignment) reads only training data: X_test/y_test are poisoned."""
    real_load = zoo.load_dataset
    real_dataset = zoo.Zoo.dataset

    def poison(d):
        return type(d)(
            **{**d.__dict__, "X_test": torch.full_like(d.X_test, float("nan")), "y_test": torch.full_like(d.y_test, -1)}
        )

    monkeypatch.setattr(zoo, "load_dataset", lambda *a, **k: poison(real_load(*a, **k)))
    monkeypatch.setattr(zoo.Zoo, "dataset", lambda self, *a, **k: poison(real_dataset(self, *a, **k)))
    calls = []
    real_eval = zoo.evaluate
    monkeypatch.setattr(zoo, "evaluate", lambda *a, **k: calls.append(k.get("split")) or real_eval(*a, **k))
    g = generators.fit("dwf", mlp_zoo.path, out=str(tmp_path / "r"), **FAST)  # default: val/good_novel
    assert calls and set(calls) == {"train"}
    import pandas as pd

    log = pd.read_csv(g.run_dir / "metrics.csv")
    assert log["val/sample_train_acc"].dropna().between(0, 1).all()  # finite: no NaN test input reached it


def test_snapshots_are_loadable(run):
    steps = generators.snapshots(run.run_dir)
    assert steps and steps == sorted(steps)
    g = generators.load(run.run_dir, snapshot=steps[0])
    assert len(g.sample(2, condition=0.05)) == 2


def test_cli_fit_and_sample(mlp_zoo, tmp_path, capsys):
    out = tmp_path / "cli-run"
    assert cli_main(["fit", "generator=dwf", f"zoo={mlp_zoo.path}", f"out={out}", *FAST_CLI]) == 0
    assert "zoo fit: dwf" in capsys.readouterr().out
    samples = tmp_path / "s.zarr"
    assert cli_main(["sample", str(out), "-n", "5", "--seed", "2", "--out", str(samples)]) == 0
    z = zoo.open(samples)
    assert len(z) == 5 and z.attrs["generator"]["seed"] == 2
    again = generators.load(out).sample_flat(5, seed=2)[0]
    assert torch.equal(z.weights(list(range(5))), again)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "/no/such/run", "-n", "3", "--out", "x.zarr"], "no generator run"),
        (["fit", "generator=nope", "zoo=x"], "unknown generator"),
        (["fit", "generator=dwf"], "zoo=PATH is required"),
        (["fit", "generator=dwf", "zoo=x", "trainer.max_epoch=3"], "unknown Trainer argument"),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_cli_sample_bad_inputs(run, tmp_path, capsys):
    for extra, message in ((["-n", "0"], "positive integer"), (["--condition", "0.07"], "unknown condition value")):
        assert cli_main(["sample", str(run.run_dir), "--out", str(tmp_path / "x.zarr"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err


def _files(root) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to show a refused command wrote nothing)."""
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(argv: list[str], message: str, capsys) -> None:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err, err


@pytest.fixture
def no_sampling(monkeypatch):
    """Make any sampling fail the test: the refusals below must come before compute."""

    def fail(*args, **kwargs):
        raise AssertionError("sampled before refusing")

    monkeypatch.setattr(generators.Generator, "sample_flat", fail)


def test_cli_sample_refuses_an_existing_zoo_before_sampling(run, tmp_path, no_sampling, capsys):
    out = tmp_path / "old.zarr"
    zoo.create(
        str(out), pd.DataFrame({"x": [1]}), {"l": next(iter(zoo.open(run.origin["zoo"]).layouts.values()))}, [0], []
    )
    before = _files(out)
    _refused(["sample", str(run.run_dir), "-n", "3", "--out", str(out)], "already holds a zoo", capsys)
    assert _files(out) == before


def test_cli_sample_refuses_to_write_over_its_inputs(run, tmp_path, no_sampling, monkeypatch, capsys):
    """--out on the training zoo, a folder above it or a place in it, or on the run folder: refused even with
    --overwrite, however the path is spelled, and both stay byte for byte."""
    train, run_dir = Path(run.origin["zoo"]), Path(run.run_dir)
    before = (_files(train), _files(run_dir))
    monkeypatch.chdir(train.parent)
    for out, what in (
        (str(train), "the generator's training zoo"),
        (f"./{train.name}/", "the generator's training zoo"),
        (f"file://{train}", "the generator's training zoo"),
        (str(train.parent), "the generator's training zoo"),
        (str(train / "inside.zarr"), "the generator's training zoo"),
        (str(run_dir), "its run folder"),
        (str(run_dir.parent), "its run folder"),
    ):
        _refused(["sample", str(run_dir), "-n", "3", "--out", out, "--overwrite"], f"would replace {what}", capsys)
    assert (_files(train), _files(run_dir)) == before


def test_cli_sample_count_is_bounded_by_memory(run, tmp_path, no_sampling, capsys):
    """A count whose weights cannot fit in memory, a non-integer or a non-positive one: one line at once."""
    out = tmp_path / "s.zarr"
    start = time.perf_counter()
    _refused(["sample", str(run.run_dir), "-n", str(10**12), "--out", str(out)], "GiB available", capsys)
    assert time.perf_counter() - start < 1.0
    for bad in ("1.5", "abc"):
        _refused(["sample", str(run.run_dir), "-n", bad, "--out", str(out)], "usage", capsys)
    _refused(["sample", str(run.run_dir), "-n", "-3", "--out", str(out)], "positive integer", capsys)
    assert not out.exists()


def test_sample_count_bound_is_the_available_memory(run, tmp_path, no_sampling, monkeypatch):
    """The largest count refused is the first whose SAMPLE_COPIES float32 copies exceed the available bytes."""
    per_sample = run.layout.size * 4 * base.SAMPLE_COPIES
    monkeypatch.setattr(base, "available_memory", lambda: 1000 * per_sample)
    run.check_sample_zoo(1000, tmp_path / "s.zarr")
    with pytest.raises(ZooError, match="sample at most 1000 at once"):
        run.check_sample_zoo(1001, tmp_path / "s.zarr")
    with pytest.raises(ZooError, match="positive integer"):
        run.sample_zoo(2.0, tmp_path / "s.zarr")  # type: ignore[arg-type]
    assert not (tmp_path / "s.zarr").exists()


def test_cli_several_layouts(tiny_zoo, tmp_path, capsys):
    assert cli_main(["fit", "generator=dwf", f"zoo={tiny_zoo.path}", f"out={tmp_path / 'r'}", *FAST_CLI]) == 2
    assert "several layouts" in capsys.readouterr().err


def test_batchnorm_samples_are_recalibrated_on_training_data(tmp_path):
    """A BN CNN generator's samples carry running statistics re-estimated on the training split."""
    z = build_zoo(
        str(tmp_path / "cnn.zarr"),
        "recipe.arch=cnn",
        "recipe.dataset=digits-image",
        "recipe.widths=[4]",
        "recipe.seeds=4",
        "recipe.epochs=1",
        "recipe.checkpoint_epochs=[0,1]",
    )
    g = generators.fit("dwf", z.path, out=str(tmp_path / "r"), **FAST)
    flat, _ = g.sample_flat(3, seed=0)
    layout = g.layout
    raw = g.buffer_fill.expand(3, -1).clone()
    raw[:, layout.parameter_mask()] = flat[:, layout.parameter_mask()]
    expected = zoo.recalibrate_bn(layout, raw, z.dataset())
    assert torch.allclose(flat, expected)
    rm = layout["features.1.running_mean"]
    assert not torch.allclose(flat[:, rm.offset : rm.stop], g.buffer_fill[rm.offset : rm.stop].expand(3, -1))
    assert np.isfinite(g.sample_zoo(3, tmp_path / "s.zarr").models["test_acc"]).all()


# ---------------------------------------------------------------------------------------------- EMA (issue 27)
@pytest.fixture(scope="module")
def ema_runs(mlp_zoo, tmp_path_factory) -> dict[float, generators.Generator]:
    """The same fit with EMA decay 0 (the raw weights) and 0.9, raw snapshots after every optimizer step."""
    return {
        d: generators.fit(
            "dwf",
            mlp_zoo.path,
            out=str(tmp_path_factory.mktemp("ema") / f"run-{d}"),
            ema_decay=d,
            **{**FAST, "snapshot_every_n_steps": 1},
        )
        for d in (0.0, 0.9)
    }


def _best_step(run_dir) -> int:
    """The optimizer step at the end of the best validation epoch (the best checkpoint's)."""
    return int(torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["global_step"])


def _shipped(run_dir) -> dict[str, torch.Tensor]:
    return generators.load(run_dir).state_dict()


def test_ema_decay_changes_the_shipped_weights(ema_runs):
    """Two decays ship different weights; decay 0 ships the raw weights of its best epoch."""
    a, b = (_shipped(ema_runs[d].run_dir) for d in (0.0, 0.9))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    raw = generators.load(ema_runs[0.0].run_dir, snapshot=_best_step(ema_runs[0.0].run_dir)).state_dict()
    assert all(torch.equal(a[k], raw[k]) for k in a)


def test_shipped_weights_are_the_ema_of_the_raw_trajectory_at_the_best_epoch(ema_runs):
    """model.safetensors = EMA (decay 0.9, from the first optimizer step on: the callback's rule) of the raw
    snapshots up to the best epoch's last step, and neither that step's nor the last step's raw weights."""
    d = ema_runs[0.9].run_dir
    steps, best = generators.snapshots(d), _best_step(d)
    assert steps == list(range(1, steps[-1] + 1)) and 1 < best <= steps[-1]
    snap = [generators.load(d, snapshot=s).state_dict() for s in range(1, best + 1)]
    params = [n for n, _ in generators.load(d).named_parameters()]
    ema = {k: snap[0][k].clone() for k in params}  # the first update copies the weights after step 1
    for w in snap[1:]:
        ema = {k: torch.lerp(ema[k], w[k], 1 - 0.9) for k in params}
    shipped = _shipped(d)
    for k in params:
        torch.testing.assert_close(shipped[k], ema[k], rtol=1e-6, atol=1e-7)
    last = generators.load(d, snapshot=steps[-1]).state_dict()
    for raw in (snap[-1], last):
        assert max((shipped[k] - raw[k]).abs().max().item() for k in params) > 1e-4
    for k in set(shipped) - set(params):  # buffers (data statistics) are not averaged: the raw ones
        assert torch.equal(shipped[k], snap[-1][k])


@pytest.mark.parametrize("decay", [1.5, -0.1, "high"])
def test_bad_ema_decay(mlp_zoo, tmp_path, decay):
    with pytest.raises(ZooError, match=r"generator\.ema_decay=.* is invalid: expected a finite number >= 0 and <= 1"):
        generators.fit("dwf", mlp_zoo.path, out=str(tmp_path / "r"), ema_decay=decay)
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_validation_follows_the_ema_weights(ema_runs):
    """The logged val/sample_train_acc of the best epoch is the shipped (EMA) weights' own: early stopping and the
    best checkpoint follow the weights that are shipped."""
    import pandas as pd

    g = ema_runs[0.9]
    log = pd.read_csv(g.run_dir / "metrics.csv")
    acc = log.dropna(subset=["val/sample_train_acc"]).set_index("step")["val/sample_train_acc"]
    best = _best_step(g.run_dir)
    k = int(g.config["val_samples"])
    flat, _ = generators.load(g.run_dir).sample_flat(k, seed=0)
    mine = zoo.evaluate(g.layout, flat, g.dataset(), split="train")["acc"].mean().float().item()
    assert acc.loc[best - 1] == pytest.approx(mine, abs=1e-6)


def test_sample_refuses_while_another_writer_holds_the_lock(run, tmp_path, capsys):
    """A second writer to one --out: one-line error (exit 2) and nothing written, with or without a zoo there."""
    from zoo.store.lock import writing

    out = tmp_path / "s.zarr"
    with writing(str(out), "zoo import"):
        _refused(["sample", str(run.run_dir), "-n", "2", "--out", str(out)], "being written by zoo import", capsys)
        assert not out.exists()
    run.sample_zoo(2, out)
    before = _files(out)
    with writing(str(out), "zoo nowcast"), pytest.raises(ZooError, match="being written by zoo nowcast"):
        run.sample_zoo(3, out, overwrite=True)
    assert _files(out) == before


def test_a_failed_sample_write_keeps_the_old_zoo(run, tmp_path, monkeypatch):
    """A failure while writing samples leaves nothing at --out, or the old zoo it would have replaced, intact."""
    out = tmp_path / "s.zarr"

    def broken(*args, **kwargs):
        raise ZooError("disk full")

    monkeypatch.setattr(zoo.ZooWriter, "write", broken)
    with pytest.raises(ZooError, match="disk full"):
        run.sample_zoo(2, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.undo()
    first = run.sample_zoo(2, out)
    before = _files(out)
    monkeypatch.setattr(zoo.ZooWriter, "write", broken)
    with pytest.raises(ZooError, match="disk full"):
        run.sample_zoo(3, out, overwrite=True)
    assert _files(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]
    assert len(zoo.open(str(out))) == len(first) == 2


class Killed(RuntimeError):
    """What the simulated kill raises."""


def _kill_after_first_epoch(monkeypatch) -> None:
    """The next fit raises after its first validation epoch (a kill midway: metrics, snapshots, checkpoints are in)."""
    end = EMA.on_validation_end

    def killed(self, trainer, pl_module):
        end(self, trainer, pl_module)
        raise Killed("killed after the first epoch")

    monkeypatch.setattr(EMA, "on_validation_end", killed)


def test_killed_refit_is_refused_until_fitted_again(mlp_zoo, tmp_path, monkeypatch, capsys):
    """A completed fit has no INCOMPLETE; a re-fit killed midway leaves INCOMPLETE (and no old model beside its
    files), `zoo sample` on it is a one-line error (exit 2); fitting it again completes and loads."""
    out = tmp_path / "run"
    generators.fit("dwf", mlp_zoo.path, out=str(out), **FAST)
    assert not (out / "INCOMPLETE").exists() and (out / "summary.json").is_file()
    assert not (tmp_path / "run.lock").exists()
    generators.load(out)
    before = _files(out)
    with pytest.raises(ZooError, match=r"holds a finished fit .*pass overwrite=true \(--overwrite\)"):
        generators.fit("dwf", mlp_zoo.path, out=str(out), seed=1, **FAST)
    assert _files(out) == before  # refused before anything was touched
    with monkeypatch.context() as m:
        _kill_after_first_epoch(m)
        with pytest.raises(Killed):
            generators.fit("dwf", mlp_zoo.path, out=str(out), seed=1, overwrite=True, **FAST)
    assert "did not finish" in (out / "INCOMPLETE").read_text()
    assert (out / "metrics.csv").is_file() and generators.snapshots(out)  # the killed run's files
    assert not any((out / f).exists() for f in ("model.safetensors", "config.json", "summary.json"))
    assert not (tmp_path / "run.lock").exists()  # the lock goes with the fit that held it
    with pytest.raises(ZooError, match="this run did not finish.*fit it again"):
        generators.load(out)
    capsys.readouterr()
    _refused(["sample", str(out), "-n", "2", "--out", str(tmp_path / "s.zarr")], "this run did not finish", capsys)
    assert not (tmp_path / "s.zarr").exists()
    g = generators.fit("dwf", mlp_zoo.path, out=str(out), seed=1, **FAST)
    assert not (out / "INCOMPLETE").exists()
    again = generators.load(out)
    assert torch.equal(again.sample_flat(3, seed=0)[0], g.sample_flat(3, seed=0)[0])


def test_second_writer_is_refused_and_touches_nothing(run, tmp_path, capsys):
    """While the run folder is locked, `zoo fit` into it is a one-line error (exit 2) and the folder is unchanged."""
    before = _files(run.run_dir)
    with writing(str(run.run_dir), "zoo fit"):
        argv = ["fit", "generator=dwf", f"zoo={run.origin['zoo']}", f"out={run.run_dir}", "--overwrite", *FAST_CLI]
        _refused(argv, "is being written by zoo fit", capsys)
    assert _files(run.run_dir) == before
    generators.load(run.run_dir)


def test_bad_monitor_is_refused_before_the_folder_is_touched(run, capsys):
    before = _files(run.run_dir)
    argv = ["fit", "generator=dwf", f"zoo={run.origin['zoo']}", f"out={run.run_dir}", "monitor=val/acc", *FAST_CLI]
    _refused(argv, "monitor='val/acc' is invalid: expected one of ['auto'", capsys)
    assert _files(run.run_dir) == before


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda m: m.pop("dims"), "['dims'] missing or not a mapping"),
        (lambda m: m.__setitem__("source", [1]), "['source'] missing or not a mapping"),
        (lambda m: m.__setitem__("config", []), "['config'] missing or not a mapping"),
        (lambda m: m["config"].__setitem__("hidden", "abc"), "generator.hidden='abc' is invalid"),
        (lambda m: m["config"].pop("hidden"), "does not rebuild its generator (KeyError"),
    ],
)
def test_a_damaged_run_config_is_one_line(run, tmp_path, damage, message, capsys):
    """A run's config.json with a missing key or a wrong type: `zoo sample` says so in one line (exit 2), it
    was a KeyError/ValueError/TypeError traceback (issue 27)."""
    import json
    import shutil

    d = tmp_path / "run"
    shutil.copytree(run.run_dir, d)
    meta = json.loads((d / "config.json").read_text())
    damage(meta)
    (d / "config.json").write_text(json.dumps(meta))
    _refused(["sample", str(d), "-n", "2", "--out", str(tmp_path / "s.zarr")], message, capsys)
    assert not (tmp_path / "s.zarr").exists()


def test_fit_into_a_users_folder_is_refused_and_deletes_nothing(mlp_zoo, tmp_path, capsys):
    """`zoo fit out=<a folder of the user's>` deleted its config.json, metrics.csv, checkpoints/ and snapshots/
    (issue 27); now it is a one-line error and every file stays. A file as out is refused too."""
    users = tmp_path / "project"
    (users / "checkpoints").mkdir(parents=True)
    (users / "config.json").write_text('{"lr": 0.1}')
    (users / "metrics.csv").write_text("a,b\n1,2\n")
    (users / "checkpoints" / "mine.ckpt").write_bytes(b"x")
    before = _files(users)
    argv = ["fit", "generator=dwf", f"zoo={mlp_zoo.path}", f"out={users}", *FAST_CLI]
    _refused(argv, "is not a generator run folder", capsys)
    assert _files(users) == before
    note = tmp_path / "notes.txt"
    note.write_text("mine")
    _refused(["fit", "generator=dwf", f"zoo={mlp_zoo.path}", f"out={note}", *FAST_CLI], "is a file", capsys)
    assert note.read_text() == "mine"


def test_device_cpu_is_the_default_bits_and_generate_stays_on_the_device(run, tmp_path, capsys):
    """``device="cpu"`` (and ``--device cpu``) gives the bits of no device given; the flow's ``generate`` makes
    every tensor on the generator's device (checked on the meta device: no GPU here)."""
    check_device_paths(run, 4, condition=0.05)
    check_device_paths(run, 3)  # the condition drawn as in training
    a = [v for s in run.sample(3, seed=2) for v in s.values()]
    b = [v for s in run.sample(3, seed=2, device="cpu") for v in s.values()]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    outs = []
    for name, extra in (("plain", []), ("cpu", ["--device", "cpu"])):
        out = tmp_path / f"{name}.zarr"
        rc, _, err = run_cli(capsys, "sample", str(run.run_dir), "-n", "3", "--seed", "1", "--out", str(out), *extra)
        assert rc == 0, err
        outs.append(zoo.open(str(out)))
    assert torch.equal(outs[0].weights([0, 1, 2]), outs[1].weights([0, 1, 2]))
    assert outs[0].models["test_acc"].equals(outs[1].models["test_acc"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where torch sees no GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_device_cuda_without_a_gpu_is_one_line_and_writes_nothing(run, tmp_path, no_sampling, capsys, device):
    out = tmp_path / "s.zarr"
    _refused(["sample", str(run.run_dir), "-n", "3", "--out", str(out), "--device", device], "no CUDA GPU", capsys)
    assert not out.exists()
    with pytest.raises(ZooError, match="no CUDA GPU"):
        run.sample_zoo(2, out, device=device)
    assert not out.exists()


def test_device_bad_spelling_is_one_line(run, tmp_path, no_sampling, capsys):
    out = tmp_path / "s.zarr"
    _refused(["sample", str(run.run_dir), "-n", "3", "--out", str(out), "--device", "gpu"], "device='gpu'", capsys)
    assert not out.exists()


def test_finite_rows_is_torch_isfinite_per_row():
    """The numpy shortcut for [n, P] float weights says what torch.isfinite(...).all(1) says, NaN and +-inf alike."""
    from generators.base import finite_rows

    flat = torch.randn(6, 1000)
    flat[1, 7], flat[3, 999], flat[4, 0] = float("nan"), float("inf"), float("-inf")
    for x in (flat, flat.double(), flat.half()):
        assert torch.equal(finite_rows(x), torch.isfinite(x).all(1))
    assert finite_rows(flat).tolist() == [True, False, True, False, False, True]
