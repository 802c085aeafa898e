"""``zoo train -m key=a,b other=range(3) ...``: a Hydra multirun sweep of ``zoo train`` (:mod:`zoo.app.sweep`).

Each job writes its own run folder ``<root>/<job number>-<run name>`` (root: ``out=DIR`` when given, else
``data/runs/multirun/<date>_<time>``), prints its test metrics in one line, and ``<root>/multirun.json`` lists
every job's overrides, folder and test metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from wsl.train import check_train_config, refuse_finished_run, run_name, train
from zoo.app.config import compose
from zoo.app.sweep import Command
from zoo.app.sweep import multirun as sweep
from zoo.app.trainer import checked_overrides
from zoo.errors import ZooError


def metrics_text(test: Mapping) -> str:
    """``kendall_tau 0.8123, r2 ...``; a metric that is undefined (null) says so."""
    return ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} undefined" for k, v in test.items())


def multirun(
    argv: list[str], config_name: str = "train", groups: tuple[str, ...] = ("encoder", "task", "augment")
) -> int:
    """Run every job of the sweep ``argv`` describes; prints one line per job and returns 0."""

    def compose_job(job: list[str]) -> dict:
        cfg = compose(config_name, checked_overrides(job, config_name, groups))
        if not cfg.get("zoo"):
            raise ZooError("zoo=PATH is required (the zoo to learn from)")
        check_train_config(cfg)
        return cfg

    def run(cfg: dict) -> tuple[str, dict, bool]:
        s = train(cfg)
        line = f"{metrics_text(s['test'])} ({s['epochs']} epochs, {s['fit_seconds']:.0f} s)"
        return line, {"test": s["test"], "best_val": s["best_val"]}, True

    command = Command(
        name="train",
        compose=compose_job,
        output_name=run_name,
        default_root="data/runs/multirun",
        refuse=lambda cfg: refuse_finished_run(Path(cfg["out"]), bool(cfg.get("overwrite", False))),
        run=run,
    )
    return sweep(command, argv)
