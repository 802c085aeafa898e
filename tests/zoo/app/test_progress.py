"""zoo.progress: one bar per long step in a terminal, a bounded number of readable lines in a log."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time

import lightning as L
import pytest
import torch

import zoo
from zoo.app import progress as zp
from zoo.commands.main import main as zoo_main

LINE = re.compile(
    r"^\[zoo build\] models [\d,]+/[\d,]+ \(\d+%\) in \d+(\.\d)? (s|min|h)(, about .+ left|, done)?"
    r"(; diverged \d+)?$"
)


class FakeTTY(io.StringIO):
    """A stream that says it is a terminal (what tqdm and zoo.progress look at)."""

    def isatty(self) -> bool:
        return True


class Clock:
    """A fake perf_counter advanced by hand."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_log_lines_are_throttled_by_time_and_share(monkeypatch):
    """10,000 updates over a simulated hour: at most one line per 5 s and per 1% (about 100), plus the end."""
    clock = Clock()
    monkeypatch.setattr(zp.time, "perf_counter", clock)
    out = io.StringIO()
    with zp.Progress(10_000, "models", prefix="zoo build", stream=out) as bar:
        for _ in range(10_000):
            clock.t += 0.36
            bar.update(1, diverged=0)
    lines = out.getvalue().splitlines()
    assert 50 <= len(lines) <= 101 and len(lines) == bar.lines
    assert all(LINE.match(s) for s in lines), lines[:3]
    assert lines[-1].startswith("[zoo build] models 10,000/10,000 (100%) in 1.0 h, done")
    # a fast step (4 s in all) writes only its final line
    short = io.StringIO()
    with zp.Progress(50, "models", prefix="zoo build", stream=short) as bar:
        for _ in range(50):
            clock.t += 0.08
            bar.update(1)
    assert short.getvalue().splitlines() == ["[zoo build] models 50/50 (100%) in 4 s, done"]


def test_disabled_and_interrupted(monkeypatch):
    out = io.StringIO()
    with zp.Progress(10, "x", stream=out, enabled=False) as bar:
        bar.update(10)
    assert out.getvalue() == ""
    try:
        with zp.Progress(10, "models", prefix="p", stream=out) as bar:
            bar.update(3)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert out.getvalue().strip().endswith("3/10 (30%) in 0 s, interrupted")


def test_fractions_add_up():
    out = io.StringIO()
    bar = zp.Progress(3, "models", stream=out, interval=1e9)
    for _ in range(6):
        bar.update(1 / 7)
    assert bar.n == 0
    for _ in range(15):
        bar.update(1 / 7)
    bar.close()
    assert bar.n == 3 and out.getvalue().startswith("models 3/3 (100%)")


def test_terminal_gets_one_tqdm_bar():
    tty = FakeTTY()
    with zp.Progress(4, "models", prefix="zoo build", stream=tty) as bar:
        for _ in range(4):
            bar.update(1, diverged=0)
    text = tty.getvalue()
    assert bar.terminal and bar.lines == 0
    assert "\r" in text and "zoo build: models" in text and "4/4" in text and "[zoo build]" not in text


@pytest.mark.slow  # a subprocess: importing torch and Lightning takes 5-15 s on a busy machine
def test_build_log_is_bounded_and_readable(tmp_path):
    """The real CLI with stderr redirected to a file: a few throttled lines, no nested Lightning bars."""
    out, err = tmp_path / "z.zarr", tmp_path / "build.log"
    t0 = time.perf_counter()
    with err.open("w") as f:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "zoo.commands.main",
                "build",
                "recipe=tiny",
                f"out={out}",
                "recipe.seeds=4",
                "population_size=2",
                "block_size=4",
                "threads=1",
            ],
            stdout=subprocess.PIPE,
            stderr=f,
            text=True,
            timeout=300,
        )
    elapsed = time.perf_counter() - t0
    assert r.returncode == 0, err.read_text()
    lines = err.read_text().splitlines()
    assert 1 <= len(lines) <= elapsed / zp.INTERVAL + 2, lines
    assert all(LINE.match(s) for s in lines), lines
    assert lines[-1].startswith("[zoo build] models 8/8 (100%)") and "done" in lines[-1]
    assert "\r" not in err.read_text() and "Epoch" not in err.read_text()
    assert r.stdout.splitlines()[0].startswith(f"built 8/8 models (8 done, 0 diverged) into {out} in ")
    assert f"next: zoo info {out}" in r.stdout


def test_build_in_a_terminal_shows_one_bar_over_models(tmp_path, monkeypatch, capsys):
    """Populations finish one by one under one bar; Lightning's per-population bar stays off."""
    import tqdm.auto

    class EveryUpdate(tqdm.auto.tqdm):  # tqdm skips redraws within 0.1 s: on a fast machine 1/4..3/4 may not show
        def __init__(self, *args, **kwargs):
            super().__init__(*args, mininterval=0, miniters=1, **kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", EveryUpdate)
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    out = tmp_path / "t.zarr"
    assert zoo_main(["build", "recipe=tiny", f"out={out}", "population_size=1", "threads=1"]) == 0
    text = tty.getvalue()
    assert "zoo build: models" in text and "4/4" in text and "\r" in text
    assert "Epoch" not in text and "Epoch" not in capsys.readouterr().out
    # the bar advanced population by population: 1/4, 2/4, 3/4 were drawn before 4/4
    assert all(f"{k}/4" in text for k in (1, 2, 3))
    assert len(zoo.open(str(out))) == 4


def test_build_bar_advances_within_a_population(tmp_path, monkeypatch):
    """Two populations of 2 models, 3 epochs each: epochs move the display (1/4 and 3/4 are only reachable so;
    a log with no time throttle shows every step)."""
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setattr(zp, "INTERVAL", 0.0)
    assert zoo_main(["build", "recipe=tiny", f"out={tmp_path / 't.zarr'}", "threads=1"]) == 0
    shown = [re.match(r"\[zoo build\] models (\d)/4", s).group(1) for s in log.getvalue().splitlines()]
    assert shown == ["1", "2", "3", "4"], log.getvalue()


class _Regression(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.lin(x), y)
        self.log("train/loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.lin(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_epochs_with_the_validation_metric(tmp_path, monkeypatch):
    """make_trainer(progress=...) replaces Lightning's bar by zoo.progress over epochs, with the validation metric
    (interval 0 here: one log line per epoch)."""
    from torch.utils.data import DataLoader, TensorDataset

    from zoo.app.trainer import make_trainer

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=16)
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setattr(zp, "INTERVAL", 0.0)
    trainer = make_trainer(
        {"max_epochs": 3, "enable_progress_bar": True, "accelerator": "cpu"},
        tmp_path,
        [],
        progress="zoo train",
        monitor="val/loss",
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    assert trainer.progress_bar_callback is None  # Lightning's own bar is off
    trainer.fit(_Regression(), data, data)
    lines = log.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("[zoo train] epochs 1/3 (33%)") and lines[-1].startswith("[zoo train] epochs 3/3 (100%)")
    assert all("val/loss" in s and "train/loss" in s for s in lines)
    losses = [float(re.search(r"val/loss ([\d.e-]+)", s).group(1)) for s in lines]
    assert losses[-1] < losses[0]  # the numbers shown are the run's own, and it learned
    log.truncate(0)
    quiet = make_trainer({"max_epochs": 1, "enable_progress_bar": False}, tmp_path, [], progress="zoo train")
    assert quiet.progress_bar_callback is None
    quiet.fit(_Regression(), data, data)
    assert log.getvalue() == ""  # trainer.enable_progress_bar=false: nothing shown
