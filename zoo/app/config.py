"""Hydra config composition for the CLI.

The configs live in the repository's top-level ``conf/`` folder; wheels ship that folder as ``zoo/conf``
(see setup.py). ``WSZOO_CONF`` points at another config folder and wins over both.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from zoo.app.schema import Schema, help_rows, store
from zoo.app.style import not_taken
from zoo.errors import ZooError


def find_conf_dir() -> Path:
    """The config folder: ``$WSZOO_CONF``, else the installed package's ``zoo/conf``, else the checkout's ``conf/``."""
    if os.environ.get("WSZOO_CONF"):
        return Path(os.environ["WSZOO_CONF"])
    packaged = Path(__file__).resolve().parents[1] / "conf"
    if (packaged / "build.yaml").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "conf"


CONF_DIR = find_conf_dir()


def compose(config_name: str, overrides: list[str]) -> dict:
    """Compose ``conf/<config_name>.yaml`` with Hydra overrides into a plain, resolved dict.

    Unknown keys, malformed overrides and missing config groups become one-line ZooErrors.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    if not (CONF_DIR / f"{config_name}.yaml").exists():
        raise ZooError(f"config {config_name}.yaml not found in {CONF_DIR}")
    GlobalHydra.instance().clear()
    store()  # the typed configs, as schema/<group>/<name>: a user's YAML may extend one
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
        return OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        msg = " ".join(str(e).split()).split(" Config search path:")[0]
        if "Could not find 'hydra/launcher/" in msg or "Could not find 'hydra/sweeper/" in msg:
            msg += " (launchers and sweepers are Hydra plugins: pip install 'wszoo[launchers]' for joblib)"
        cause = e.__cause__  # e.g. the type a schema-typed YAML (schema/<group>/<name>) wanted
        if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
            msg += ": " + str(cause).strip().splitlines()[0]
        raise ZooError(f"bad override: {msg}") from None
    finally:
        GlobalHydra.instance().clear()


def group_options(group: str) -> list[str]:
    """The configs of one config group (``conf/<group>/*.yaml``), by name."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


# ---------------------------------------------------------------------------------------------- --help text
def leading_comment(path: str | Path) -> str:
    """A YAML config's description: the comment lines it starts with, joined (a group choice's line in --help)."""
    head = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        head.append(line.lstrip("#").strip())
    return " ".join(head)


def config_groups(config_name: str) -> list[tuple[str, str]]:
    """The config groups ``conf/<config_name>.yaml`` composes: [(group, default choice)]."""
    groups = []
    for item in OmegaConf.load(CONF_DIR / f"{config_name}.yaml").get("defaults", []) or []:
        if isinstance(item, str) or item is None:
            continue
        for group, choice in dict(item).items():
            if not str(group).startswith(("/", "override")) and "@" not in str(group):
                groups.append((str(group), str(choice)))
    return groups


def doc_lines(left: str, text: str, width: int = 110, col: int = 34) -> list[str]:
    """``left`` and ``text`` as help lines: text wrapped in a column at ``col`` (on the next line if left is long)."""
    if not text:
        return [left]
    first = left.ljust(col - 1) + " " if len(left) < col - 1 else None
    body = textwrap.wrap(text, width - col, break_on_hyphens=False) or [""]
    if first is None:
        return [left] + [" " * col + b for b in body]
    return [first + body[0]] + [" " * col + b for b in body[1:]]


def schema_lines(schema: type[Schema], prefix: str = "") -> list[str]:
    """One entry per key of a typed config: ``prefix.key=default``, then ``(type) doc`` in a column."""
    out: list[str] = []
    for dotted, kind, default, doc in help_rows(schema):
        out += doc_lines(f"  {prefix}{dotted}={default}", f"({kind}) {doc}".strip())
    return out


def help_text(
    config_name: str,
    usage: str,
    examples: Sequence[str] = (),
    schema: type[Schema] | None = None,
    group_schemas: Mapping[str, Callable[[str], type[Schema] | None]] | None = None,
) -> str:
    """``--help`` of a Hydra-configured command: usage, each config group's choices (with their description, the
    YAML file's leading comment, so new files appear by themselves), then every key of the command's typed config
    ``schema`` and of the default choice of each group in ``group_schemas`` (group -> the schema of a choice)
    with its type, default and doc."""
    out = [usage]
    doc = leading_comment(CONF_DIR / f"{config_name}.yaml")
    if doc:
        out.append(f"  {doc}")
    out += [f"  e.g. {e}" for e in examples]
    groups = config_groups(config_name)
    if groups:
        out += ["", "config groups (choose with GROUP=NAME; one YAML file each in conf/GROUP/):"]
        for group, default in groups:
            out.append(f"  {group} (default: {default})")
            for name in group_options(group):
                first = leading_comment(CONF_DIR / group / f"{name}.yaml")
                out += doc_lines(f"    {name}", first.split(". ")[0].rstrip(".") if first else "")
    if schema is not None:
        out += ["", f"keys of conf/{config_name}.yaml (override with KEY=VALUE; default and type shown):"]
        out += schema_lines(schema)
    for group, default in groups:
        of_choice = (group_schemas or {}).get(group)
        choice_schema = of_choice(default) if of_choice is not None else None
        if choice_schema is not None:
            out += [
                "",
                f"keys of {group}={default} (override with {group}.KEY=VALUE; other {group} choices have their own):",
            ]
            out += schema_lines(choice_schema, f"{group}.")
    out += ["", f"configs: {CONF_DIR}"]
    line = not_taken(config_name)  # the shared options this command has no setting for, and why
    return "\n".join([*out, *(["", line] if line else [])])
