"""Hydra config composition for the CLI.

The configs live in the repository's top-level ``conf/`` folder; wheels ship that folder as ``zoo/conf``
(see setup.py). ``WSZOO_CONF`` points at another config folder and wins over both.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from omegaconf import OmegaConf

from .errors import ZooError


def find_conf_dir() -> Path:
    """The config folder: ``$WSZOO_CONF``, else the installed package's ``zoo/conf``, else the checkout's ``conf/``."""
    if os.environ.get("WSZOO_CONF"):
        return Path(os.environ["WSZOO_CONF"])
    packaged = Path(__file__).resolve().parent / "conf"
    if (packaged / "build.yaml").is_file():
        return packaged
    return Path(__file__).resolve().parent.parent / "conf"


CONF_DIR = find_conf_dir()


def compose(config_name: str, overrides: list[str]) -> dict:
    """Compose ``conf/<config_name>.yaml`` with Hydra overrides into a plain, resolved dict.

    Unknown keys, malformed overrides and missing config groups become one-line ZooErrors.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not (CONF_DIR / f"{config_name}.yaml").exists():
        raise ZooError(f"config {config_name}.yaml not found in {CONF_DIR}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
        return OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        msg = " ".join(str(e).split())
        raise ZooError(f"bad override: {msg}") from None
    finally:
        GlobalHydra.instance().clear()


def group_options(group: str) -> list[str]:
    """The configs of one config group (``conf/<group>/*.yaml``), by name."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def checked_overrides(argv: list[str], config_name: str, groups: tuple[str, ...]) -> list[str]:
    """Hydra overrides of a Lightning-run app with one-line errors for a malformed argument or an unknown
    group choice; any ``lightning.Trainer`` argument passes through (``+`` added when the config lacks it)."""
    import inspect

    import lightning as L

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


def make_trainer(settings: Mapping, out: Path, callbacks: list, **defaults: Any):
    """The ``lightning.Trainer`` of a run configured under ``trainer:`` (any Trainer argument), logging CSV to
    ``out``; Lightning's own argument errors become one-line ZooErrors and its banners stay quiet."""
    import logging

    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    kwargs = {**defaults, **dict(settings), "callbacks": callbacks,
              "logger": CSVLogger(str(out), name="", version=""), "default_root_dir": str(out)}
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return L.Trainer(**kwargs)
    except Exception as e:  # Lightning validates its own arguments (TypeError, ValueError, MisconfigurationException)
        raise ZooError(f"bad trainer settings: {' '.join(str(e).split())}") from None
