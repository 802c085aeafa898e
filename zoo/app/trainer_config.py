"""The typed ``trainer:`` settings of the Lightning-run commands (``zoo fit``, ``zoo train``): the Trainer arguments
Lightning accepts in its constructor but would only trip over mid-run (``trainer.max_epochs=abc``) are checked with
the rest of the config; any other Trainer argument is left to Lightning's own check (``make_trainer``: one line)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zoo.app.checks import Rule, number, optional, typed
from zoo.app.schema import Schema, key

NON_NEGATIVE = number(float, 0)


def epochs_rule(v: Any) -> str | None:
    """Lightning's epoch limits: a count >= 1, -1 (no limit) or null (Lightning's default)."""
    ok = v is None or v == -1 or number(int, 1)(v) is None
    return None if ok and not isinstance(v, (bool, float)) else "an integer >= 1, -1 (no limit) or null"


def devices_rule(v: Any) -> str | None:
    """Lightning's ``devices``: a count, ``auto`` or a list of device indices."""
    if v == "auto" or number(int, 1)(v) is None:
        return None
    if isinstance(v, (list, tuple)) and v and all(number(int, 0)(i) is None for i in v):
        return None
    return "an integer >= 1, 'auto' or a non-empty list of device indices"


TRAINER_ALSO: dict[str, Rule] = {
    "min_epochs": epochs_rule,
    "max_steps": epochs_rule,
    "min_steps": epochs_rule,
    "check_val_every_n_epoch": optional(number(int, 1)),
    "enable_checkpointing": typed(bool, "true or false"),
    "gradient_clip_val": optional(NON_NEGATIVE),
    "limit_train_batches": optional(number(float, 0, low_open=True)),
    "limit_val_batches": optional(number(float, 0)),
}


def logger_rule(v: Any) -> str | None:
    """trainer.logger: csv, tensorboard, a list, or true/false (zoo.app.trainer.make_logger builds them)."""
    if v is None or isinstance(v, bool):
        return None
    names = [v] if isinstance(v, str) else list(v) if isinstance(v, Sequence) else None
    if names and all(n in ("csv", "tensorboard") for n in names):
        return None
    return "csv, tensorboard, a list of them, or false"


@dataclass(frozen=True)
class TrainerConfig(Schema):
    """A run's ``trainer:`` (fit.yaml, train.yaml): passed to lightning.Trainer; any other Trainer argument works
    too (``trainer.max_time=00:00:05:00``); the ones Lightning would only trip over mid-fit are checked here."""

    WHERE = "trainer."
    OPEN = True
    ALSO = TRAINER_ALSO

    max_epochs: int | None = key(100, epochs_rule, "most epochs (-1: no limit)")
    accelerator: str = key("cpu", typed(str, "an accelerator name (cpu, gpu, auto, ...)"), "Lightning's accelerator")
    devices: Any = key(1, devices_rule, "a count, auto or a list of device indices")
    log_every_n_steps: int = key(10, number(int, 1), "steps between logged training metrics")
    enable_progress_bar: bool = key(True, typed(bool, "true or false"), "wszoo's bar over epochs")
    logger: Any = key(
        "csv", logger_rule, "csv (metrics.csv in the run folder) | tensorboard | [csv,tensorboard] | false (none)"
    )
    deterministic: bool | str | None = key(
        False,
        lambda v: None if v is None or isinstance(v, bool) or v == "warn" else "true, false or 'warn'",
        "Lightning's deterministic algorithms switch (true, false or warn)",
    )
