"""``zoo train [-m] key=a,b other=range(3) ...``: ``zoo train`` as a Hydra app, sweeps included (:mod:`zoo.app.sweep`).

Each job writes its own run folder ``<root>/<job number>-<run name>`` (root: ``out=DIR`` when given, else
``data/runs/multirun/<date>_<time>``), prints its test metrics in one line, and ``<root>/multirun.json`` lists
every job's overrides, folder and test metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from wsl.train import check_train_config, refuse_finished_run, run_name, train
from zoo.app import sweep
from zoo.app.config import compose
from zoo.app.sweep import Command
from zoo.app.trainer import checked_overrides
from zoo.errors import ZooError


def metrics_text(test: Mapping) -> str:
    """``kendall_tau 0.8123, r2 ...``; a metric that is undefined (null) says so."""
    return ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} undefined" for k, v in test.items())


def command(
    config_name: str = "train",
    groups: tuple[str, ...] = ("encoder", "task", "augment"),
    single: Callable[[dict], int] | None = None,
) -> Command:
    """``zoo train`` for :mod:`zoo.app.sweep`: checks, each sweep job's run folder and line, and ``single``, the
    run of a command line without ``-m``."""

    def check(cfg: dict) -> None:
        if not cfg.get("zoo"):
            raise ZooError("zoo=PATH is required (the zoo to learn from)")
        check_train_config(cfg)

    def compose_job(job: list[str]) -> dict:
        cfg = compose(config_name, checked_overrides(job, config_name, groups))
        check(cfg)
        return cfg

    def run(cfg: dict) -> tuple[str, dict, bool]:
        s = train(cfg)
        line = f"{metrics_text(s['test'])} ({s['epochs']} epochs, {s['fit_seconds']:.0f} s)"
        return line, {"test": s["test"], "best_val": s["best_val"]}, True

    def run_one(cfg: dict) -> int:
        run(cfg)
        return 0

    return Command(
        name=config_name,
        compose=compose_job,
        check=check,
        output_name=run_name,
        default_root="data/runs/multirun",
        refuse=lambda cfg: refuse_finished_run(Path(cfg["out"]), bool(cfg.get("overwrite", False))),
        run=run,
        single=single or run_one,
        overrides=lambda argv: checked_overrides(argv, config_name, ()),  # undeclared Trainer arguments get their +
        objective=lambda record: record.get("best_val"),  # the checkpointed validation metric, never a test one
    )


def multirun(
    argv: list[str], config_name: str = "train", groups: tuple[str, ...] = ("encoder", "task", "augment")
) -> int:
    """Run every job of the sweep ``argv`` describes (Hydra's multirun); prints one line per job and returns 0."""
    return sweep.main(command(config_name, groups), ["-m", *argv])
