"""Hydra config composition for the CLI.

The configs live in the repository's top-level ``conf/`` folder; wheels ship that folder as ``zoo/conf``
(see setup.py). ``WSZOO_CONF`` points at another config folder and wins over both.
"""
from __future__ import annotations

import os
from pathlib import Path

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
