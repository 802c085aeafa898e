"""The Lightning Trainer every training run uses (``zoo train``, ``zoo fit``, KNOWN): configured from a run's
``trainer:`` settings, quiet, logging CSV into the run folder, with one-line errors for bad arguments; and the
check of a Lightning-run command's overrides, which knows the Trainer's arguments."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from zoo.app.config import CONF_DIR, group_options
from zoo.app.progress import lightning_progress
from zoo.errors import ZooError


def make_trainer(
    settings: Mapping,
    out: Path,
    callbacks: list,
    progress: str | None = None,
    monitor: str | None = None,
    **defaults: Any,
) -> L.Trainer:
    """The ``lightning.Trainer`` of a run configured under ``trainer:`` (any Trainer argument), logging CSV to
    ``out``; Lightning's own argument errors become one-line ZooErrors and its banners stay quiet.

    ``progress`` (the command's name) replaces Lightning's bar by :mod:`zoo.app.progress` over epochs with the
    ``monitor``-ed validation metric (a bar in a terminal, a line every few seconds in a log), shown when
    ``trainer.enable_progress_bar`` is true."""
    kwargs = {
        **defaults,
        **dict(settings),
        "callbacks": list(callbacks),
        "logger": CSVLogger(str(out), name="", version=""),
        "default_root_dir": str(out),
    }
    if progress:
        shown = bool(kwargs.get("enable_progress_bar", True))
        kwargs["enable_progress_bar"] = False
        kwargs["callbacks"].append(lightning_progress("epochs", prefix=progress, monitor=monitor, enabled=shown))
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return L.Trainer(**kwargs)
    except Exception as e:  # Lightning validates its own arguments (TypeError, ValueError, MisconfigurationException)
        raise ZooError(f"bad trainer settings: {' '.join(str(e).split())}") from None


def checked_overrides(argv: list[str], config_name: str, groups: tuple[str, ...]) -> list[str]:
    """Hydra overrides of a Lightning-run app with one-line errors for a malformed argument or an unknown
    group choice; any ``lightning.Trainer`` argument passes through (``+`` added when the config lacks it)."""
    trainer_args = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    declared = set(OmegaConf.load(CONF_DIR / f"{config_name}.yaml").get("trainer", {}))
    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq:
            raise ZooError(f"bad argument {arg!r}: expected key=value")
        if key in groups and value not in group_options(key):
            raise ZooError(f"unknown {key} {value!r}; choose one of {group_options(key)}")
        if key.startswith("trainer."):
            name = key.split(".", 1)[1]
            if name not in trainer_args:
                raise ZooError(f"unknown Trainer argument {name!r} (from {key})")
            if name not in declared:
                arg = f"+{arg}"
        out.append(arg)
    return out
