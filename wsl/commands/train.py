"""``zoo train [-m] encoder=NAME task=NAME zoo=PATH [overrides]``: one run (or a sweep) of :func:`wsl.train.train`.

A Hydra app over ``conf/train.yaml`` (groups encoder/, task/, augment/; :mod:`zoo.app.sweep`) and prints the
run's test metrics; the run folder is described in :mod:`wsl.train`.
"""

from __future__ import annotations

from pathlib import Path

from wsl.augment import AugmentConfig
from wsl.encoders.config import SCHEMAS
from wsl.multirun import command, metrics_text
from wsl.targets import TaskConfig
from wsl.train import TrainConfig, train
from zoo.app import sweep
from zoo.app.config import help_text

USAGE = (
    "usage: zoo train [-m] encoder=NAME task=NAME zoo=PATH [key=value ...]"
    "  (-m: Hydra multirun over comma lists, as encoder=mlp,nfn seed=0,1,2)\n"
    """  encoders: {encoders}
  tasks:    {tasks}
  augment:  {augment}
  e.g. zoo train encoder=graph task=test_accuracy zoo=data/zoos/mlp-digits.zarr augment=permute trainer.max_epochs=20
  configs: conf/train.yaml, conf/encoder/, conf/task/, conf/augment/"""
)

GROUPS = ("encoder", "task", "augment")  # the config group `task` selects the encoder's target
# the typed config of a group's choice (--help lists the default choice's keys)
GROUP_SCHEMAS = {"encoder": SCHEMAS.get, "task": lambda name: TaskConfig, "augment": lambda name: AugmentConfig}


def main(argv: list[str]) -> int:
    """train a weight-space encoder on a zoo (Hydra overrides)"""
    if not argv or argv[0] in ("-h", "--help"):
        example = USAGE.split("e.g. ")[1].splitlines()[0]
        print(
            help_text(
                "train",
                USAGE.splitlines()[0],
                [example],
                TrainConfig,
                GROUP_SCHEMAS,
            )
        )
        return 0 if argv else 2
    return sweep.main(command("train", GROUPS, _single), argv)


def _single(cfg: dict) -> int:
    """Train one encoder and print its test metrics and run folder."""
    s = train(cfg)
    metrics = metrics_text(s["test"])
    held_out = s["splits"].get("test", {}).get("models", 0)
    print(
        f"zoo train: {s['encoder']} on {s['task']['name']}, {held_out} held-out models: {metrics}"
        f" ({s['epochs']} epochs in {s['fit_seconds']:.0f} s)\nrun in {s['out']} (summary.json, metrics.csv,"
        f" {Path(s['checkpoint']).name})"
    )
    return 0
