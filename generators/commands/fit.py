"""``zoo fit [-m] generator=NAME zoo=PATH [overrides]``: fit a weight generator and write its run folder (``-m``:
one run folder per job of a sweep, :mod:`zoo.app.sweep`).

It composes ``conf/fit.yaml`` with ``conf/generator/<NAME>.yaml`` (Hydra overrides; ``trainer.*``
keys go to the Lightning Trainer) and writes the run folder (``zoo sample`` samples it).
"""

from __future__ import annotations

import json
from pathlib import Path

from generators.fit import FitConfig, check_fit_config, fit_config
from generators.registry import get, refuse_finished
from zoo.app import sweep
from zoo.app.config import compose, help_text
from zoo.app.sweep import Command
from zoo.app.trainer import checked_overrides
from zoo.errors import ZooError

FIT_USAGE = """usage: zoo fit [-m] generator=NAME zoo=PATH [out=DIR] [key=value ...]
  generators: {generators}
  e.g. zoo fit generator=dwf zoo=data/zoos/dwf-mlp-digits.zarr out=data/runs/dwf generator.condition=learning_rate
       zoo fit generator=dwf zoo=Z.zarr generator.canonical=false trainer.max_epochs=10
       zoo fit -m generator=dwf,simplex zoo=Z.zarr seed=0,1 out=data/runs/sweep
  configs: conf/fit.yaml, conf/generator/"""


def main(argv: list[str]) -> int:
    """fit a weight generator on a zoo (Hydra overrides)"""
    if not argv or argv[0] in ("-h", "--help"):
        print(
            help_text(
                "fit",
                FIT_USAGE.splitlines()[0],
                [e.strip().removeprefix("e.g. ") for e in FIT_USAGE.splitlines()[2:-1]],
                FitConfig,
                {"generator": lambda name: get(name).schema},
            )
        )
        return 0 if argv else 2
    return sweep.main(SWEEP, argv)


def _single(cfg: dict) -> int:
    """Fit one generator and print its summary and what to run next."""
    g = fit_config(cfg)
    summary = json.loads((g.run_dir / "summary.json").read_text())
    print(
        f"zoo fit: {summary['generator']} on {summary['zoo']} ({summary['train_models']} train / "
        f"{summary['val_models']} val models, weights {summary['canonical']}): {summary['steps']} steps in "
        f"{summary['fit_seconds']:.1f}s, best {summary['monitor']} {summary['best_score']:.4g}\n"
        f"run in {summary['out']} (model.safetensors, summary.json, metrics.csv); next: "
        + summary.get("next", f"zoo sample {summary['out']} -n 100 --out data/zoos/{summary['generator']}-samples.zarr")
    )
    return 0


def _check(cfg: dict) -> None:
    """A composed fit config's values (the zoo to fit on is required)."""
    if not cfg.get("zoo"):
        raise ZooError("zoo=PATH is required (the zoo to fit on)")
    check_fit_config(cfg)


def _checked(job: list[str]) -> dict:
    """A job's composed config, checked before any job fits."""
    cfg = compose("fit", checked_overrides(job, "fit", ("generator",)))
    _check(cfg)
    return cfg


def _run(cfg: dict) -> tuple[str, dict, bool]:
    """Fit one job's generator: its one-line result and its record for multirun.json."""
    summary = json.loads((fit_config(cfg).run_dir / "summary.json").read_text())
    line = (
        f"{summary['steps']} steps in {summary['fit_seconds']:.1f}s, best {summary['monitor']}"
        f" {summary['best_score']:.4g}"
    )
    keys = ("generator", "monitor", "best_score", "steps", "fit_seconds")
    return line, {k: summary.get(k) for k in keys}, True


SWEEP = Command(
    name="fit",
    compose=_checked,
    check=_check,
    output_name=lambda cfg: f"{cfg['generator']['name']}-{Path(str(cfg['zoo'])).stem}",
    default_root="data/runs/multirun",
    refuse=lambda cfg: refuse_finished(cfg["out"], bool(cfg.get("overwrite", False))),
    run=_run,
    single=_single,
    overrides=lambda argv: checked_overrides(argv, "fit", ()),  # undeclared Trainer arguments get their +
    # the best validation value of the run's monitor (val/loss: minimize; an accuracy monitor: maximize, so
    # hydra.sweeper.direction=maximize)
    objective=lambda record: record.get("best_score"),
)
