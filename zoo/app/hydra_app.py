"""``zoo build|train|fit`` as real Hydra applications: a task function run through ``hydra.main`` (public API).

Hydra then parses the command line and runs it: ``-m`` sweeps through the chosen sweeper and launcher plugins
(``hydra/launcher=joblib``, ``hydra/sweeper=optuna`` when installed), ``--cfg job|hydra|all``, ``--info``,
``--resolve``, ``--package`` and every ``hydra.*`` override work as in any Hydra app. :data:`DEFAULTS` keeps a
run's folder the command's own ``out=`` (no ``outputs/<date>/`` folder, no ``.hydra/``, no log file) unless the
command line sets those keys. Hydra's errors become one-line ZooErrors (the CLI exits 2): ``HYDRA_FULL_ERROR``
is set while the app runs so exceptions reach the dispatcher instead of Hydra's report and ``exit(1)``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from zoo.app.config import CONF_DIR
from zoo.app.schema import store
from zoo.errors import ZooError

# Hydra's own flags: those that take a value, and those that do not (``--info`` takes an optional one)
VALUE_FLAGS: tuple[str, ...] = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn")
VALUE_FLAGS += ("--config-dir", "-cd", "--experimental-rerun")
BARE_FLAGS = ("-m", "--multirun", "-r", "--run", "--resolve", "--hydra-help", "-sc", "--shell-completion")
INFO = ("--info", "-i")
MODES = ("-m", "--multirun", "-r", "--run", "--cfg", "-c", "-sc", "--shell-completion", *INFO)  # one at a time
INFO_TOPICS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")

# Hydra settings of these commands unless the command line sets the same key: a run writes only its out=
DEFAULTS = (
    "hydra.run.dir=.",  # no outputs/<date>_<time>/ folder per run: the command writes its own out=
    "hydra.output_subdir=null",  # no .hydra/ folder (the command records its config in its own output)
    "hydra/job_logging=none",  # logging left as the command sets it: no <job>.log file
    "hydra/hydra_logging=none",  # ... and no [HYDRA] lines (hydra/hydra_logging=default shows them)
    "hydra.sweep.subdir=.",  # a job writes <sweep dir>/<job>-<name> itself, not a folder per job number
)


def key_of(override: str) -> str:
    """The key an override sets, without its ``+``/``++``/``~`` prefix (``+trainer.x=1`` -> ``trainer.x``)."""
    return override.split("=", 1)[0].lstrip("+~")


def is_hydra_key(override: str) -> bool:
    """Whether an override sets Hydra's own config (``hydra.launcher.n_jobs=2``, ``hydra/launcher=joblib``)."""
    key = key_of(override)
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def split_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """``argv`` as (Hydra's flags with their values, the overrides), so flags may come anywhere on the line."""
    flags: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name = token.split("=", 1)[0]
        if name in VALUE_FLAGS and "=" not in token and i + 1 < len(argv):
            flags += argv[i : i + 2]
            i += 2
            continue
        if name in VALUE_FLAGS or name in BARE_FLAGS:
            flags.append(token)
        elif name in INFO:
            flags.append(token)
            if "=" not in token and i + 1 < len(argv) and argv[i + 1] in INFO_TOPICS:
                flags.append(argv[i + 1])
                i += 1
        else:
            overrides.append(token)
        i += 1
    return flags, overrides


def quoted(value: str) -> str:
    """A value as an override writes it: as it is when Hydra's grammar reads it so, else single-quoted."""
    return value if re.fullmatch(r"[\w./:@-]+", value) else "'" + value.replace("'", "\\'") + "'"


def one_line(e: BaseException) -> str:
    """A Hydra or OmegaConf error as one line (with the first line of its cause, e.g. a schema's expected type)."""
    from omegaconf.errors import OmegaConfBaseException

    msg = " ".join(str(e).split())
    cause = e.__cause__
    if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
        msg += ": " + str(cause).strip().splitlines()[0]
    return msg


def check_flags(flags: list[str]) -> None:
    """Hydra's flags that cannot go together, or a ``--cfg`` it has no view for: one-line ZooErrors."""
    names = [f.split("=", 1)[0] for f in flags]
    modes = [f for f in names if f in MODES]
    if len(modes) > 1:
        raise ZooError(f"{' and '.join(modes)}: give one of -m, --run, --cfg, --info, --shell-completion")
    for i, flag in enumerate(flags):
        value = flag.split("=", 1)[1] if "=" in flag else flags[i + 1] if i + 1 < len(flags) else ""
        if flag.split("=", 1)[0] in ("--cfg", "-c") and value not in ("job", "hydra", "all"):
            raise ZooError(f"--cfg {value}: give --cfg job, --cfg hydra or --cfg all")
    if ("--resolve" in names) and not {"--cfg", "-c"} & set(names):
        raise ZooError("--resolve goes with --cfg (zoo COMMAND --cfg job --resolve)")


def run_app(config_name: str, args: list[str], task: Callable[[Any], Any], extra: tuple[str, ...] = ()) -> None:
    """Run ``task`` (it gets each job's composed DictConfig) as the Hydra app of ``conf/<config_name>.yaml`` with
    the command line ``args`` (Hydra's flags and overrides); ``extra`` overrides (and :data:`DEFAULTS`) apply
    unless ``args`` sets the same key. Hydra's errors, composition's included, are one-line ZooErrors."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    flags, overrides = split_flags(args)
    check_flags(flags)
    given = {key_of(o) for o in overrides}
    named = (f"hydra.job.name={config_name}",)  # not the task function's name
    settings = [o for o in (*DEFAULTS, *named, *extra) if key_of(o) not in given]

    @hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base=None)
    def app(cfg: Any) -> Any:
        return task(cfg)

    store()  # the typed configs, as schema/<group>/<name>: a user's YAML may extend one
    saved_argv, saved_env = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [f"zoo-{config_name}", *flags, *settings, *overrides]
    os.environ["HYDRA_FULL_ERROR"] = "1"  # exceptions reach the dispatcher (one line), not Hydra's report + exit(1)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # --info adds a DEBUG handler on stdout: not past this call
    GlobalHydra.instance().clear()
    try:
        app()
    except (HydraException, OmegaConfBaseException) as e:
        raise ZooError(f"bad override: {one_line(e)}") from None
    except SystemExit as e:  # Hydra's argparse printed its usage error; --hydra-help and --info exit 0
        if e.code:
            raise ZooError(f"bad Hydra flags: {' '.join(flags)} (zoo {config_name} --hydra-help lists them)") from None
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.argv = saved_argv
        if saved_env is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_env
        GlobalHydra.instance().clear()
