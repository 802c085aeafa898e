"""The Lightning Trainer every training run uses (``zoo train``, ``zoo fit``, KNOWN): configured from a run's
``trainer:`` settings, quiet, logging where ``trainer.logger`` says (CSV into the run folder by default,
TensorBoard on request, nothing with ``false``), with one-line errors for bad arguments; and the check of a
Lightning-run command's overrides, which knows the Trainer's arguments."""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import OmegaConf

from zoo.app.config import CONF_DIR, group_options
from zoo.app.progress import lightning_progress
from zoo.errors import ZooError

LOGGERS = ("csv", "tensorboard")  # trainer.logger: one name, a list of names, true (csv) or false (none)
# Lightning's advice that does not apply to these runs (small in-memory datasets, one process, a run folder that
# is reused on purpose); every other warning shows.
QUIET = (
    r".*does not have many workers.*",
    r".*is smaller than the logging interval.*",
    r"Checkpoint directory .* exists and is not empty.*",
    r"Experiment logs directory .* exists and is not empty.*",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*module\(s\) in eval mode.*",
    r"Trying to infer the `batch_size`.*",
)


@contextlib.contextmanager
def quiet_fit() -> Iterator[None]:
    """Hide Lightning's named advice that does not apply here (QUIET) while a run fits, and nothing else."""
    with warnings.catch_warnings():
        for msg in QUIET:
            warnings.filterwarnings("ignore", message=msg)
        yield


def make_logger(value: Any, out: Path) -> list | bool:
    """The Lightning loggers ``trainer.logger`` asks for, writing into the run folder ``out``: ``csv`` (the default,
    ``metrics.csv``), ``tensorboard`` (event files; needs the tensorboard package), a list of them, or false."""
    if value is None or value is True:
        value = "csv"
    if value is False or (isinstance(value, str) and value.lower() in ("false", "none", "")):
        return False
    names = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
    if names is None or not names or any(n not in LOGGERS for n in names):
        raise ZooError(f"bad trainer.logger {value!r}: expected one of {list(LOGGERS)}, a list of them, or false")
    loggers: list = []
    for n in dict.fromkeys(names):
        if n == "csv":
            loggers.append(CSVLogger(str(out), name="", version=""))
        elif not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
            raise ZooError("trainer.logger=tensorboard needs the tensorboard package: pip install tensorboard")
        else:
            loggers.append(TensorBoardLogger(str(out), name="", version="", default_hp_metric=False))
    return loggers


def make_trainer(
    settings: Mapping,
    out: Path,
    callbacks: list,
    progress: str | None = None,
    monitor: str | None = None,
    **defaults: Any,
) -> L.Trainer:
    """The ``lightning.Trainer`` of a run configured under ``trainer:`` (any Trainer argument), logging to ``out``
    as ``trainer.logger`` says (make_logger); Lightning's own argument errors become one-line ZooErrors and its
    banners stay quiet.

    ``progress`` (the command's name) replaces Lightning's bar by :mod:`zoo.app.progress` over epochs with the
    ``monitor``-ed validation metric (a bar in a terminal, a line every few seconds in a log), shown when
    ``trainer.enable_progress_bar`` is true."""
    kwargs = {
        **defaults,
        **dict(settings),
        "callbacks": list(callbacks),
        "logger": make_logger(settings.get("logger"), out),
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
