"""Hydra config composition for the CLI.

The configs live in the repository's top-level ``conf/`` folder; wheels ship that folder as ``zoo/conf``
(see setup.py). ``WSZOO_CONF`` points at another config folder and wins over both.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

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
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
        return OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        msg = " ".join(str(e).split())
        raise ZooError(f"bad override: {msg}") from None
    finally:
        GlobalHydra.instance().clear()


def cfg_request(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without Hydra's ``--cfg job`` (``--cfg=job``, ``-c job``) and whether it was there: the command then
    prints the composed config it would run (as YAML) and runs nothing. Only ``job``: these commands compose with
    Hydra's compose API, so there is no Hydra runtime config to show."""
    out: list[str] = []
    wanted = False
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in ("--cfg", "-c") or token.startswith("--cfg="):
            value = token.split("=", 1)[1] if "=" in token else (argv[i + 1] if i + 1 < len(argv) else None)
            i += 1 if "=" in token else 2
            if value != "job":
                raise ZooError(f"--cfg {value or ''}: only --cfg job is supported (it prints the composed config)")
            wanted = True
            continue
        out.append(token)
        i += 1
    return out, wanted


def config_yaml(cfg: dict) -> str:
    """A composed config as the YAML ``--cfg job`` prints."""
    return OmegaConf.to_yaml(OmegaConf.create(cfg)).rstrip()


def group_options(group: str) -> list[str]:
    """The configs of one config group (``conf/<group>/*.yaml``), by name."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


# ---------------------------------------------------------------------------------------------- --help text
def _split_comment(text: str) -> tuple[str, str]:
    """``value  # comment`` -> (value, comment); a ``#`` inside quotes or right after a non-space is kept."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].strip(), text[i + 1 :].strip()
    return text.strip(), ""


def config_doc(path: str | Path) -> tuple[str, list[tuple[str, str, str]]]:
    """A YAML config's own documentation: (its leading comment, [(dotted key, default as written, comment)]).

    Comments on a key's line, the comment lines aligned under it, and comment lines just above a key all
    document that key; the ``defaults:`` list is left out (see :func:`config_groups`)."""
    lines = Path(path).read_text().splitlines()
    head: list[str] = []
    keys: list[list] = []  # [dotted key, value, comment, comment column]
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    in_defaults, continues = False, -1  # continues: indent of the key whose line comment may go on below
    block: list | None = None  # the last key without a value: [its entry's index or None, dotted, comment, col, items]

    def close_block() -> None:  # a key followed by "- item" lines is a list: one entry, value [items]
        nonlocal block
        if block is not None and block[4]:
            entry = [block[1], f"[{', '.join(block[4])}]", block[2], block[3]]
            if block[0] is None:
                keys.append(entry)
            else:
                keys[block[0]] = entry
            if stack and stack[-1][1] == block[1].rsplit(".", 1)[-1]:
                stack.pop()
        block = None

    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not stripped:
            above, continues = [], -1
            continue
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if keys and continues >= 0 and indent > continues:
                keys[-1][2] = f"{keys[-1][2]} {text}".strip()  # continues the comment on the line above
            elif not keys and not stack and indent == 0 and not in_defaults:
                head.append(text)
            elif not text.startswith("--"):  # "# -- data": a section heading, not a key's documentation
                above.append(text)
            continue
        continues = -1
        if in_defaults and (indent > 0 or stripped.startswith("-")):
            continue
        in_defaults = False
        if stripped == "-" or stripped.startswith("- "):
            if block is not None:
                block[4].append(_split_comment(stripped[1:])[0])
            continue
        close_block()
        m = re.match(r"([A-Za-z_][\w\-]*)\s*:(\s.*|)$", stripped)
        if not m:
            continue
        key, rest = m.group(1), m.group(2)
        if indent == 0 and key == "defaults":
            in_defaults, above = True, []
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        value, comment = _split_comment(rest)
        col = line.find("#", len(line) - len(rest)) if comment else None
        dotted = ".".join([k for _, k in stack] + [key])
        comment = " ".join([*above, comment]).strip()
        above = []
        if value == "":  # a mapping (its keys follow, dotted) or a block list
            stack.append((indent, key))
            block = [len(keys) if comment else None, dotted, comment, col, []]
            if comment:
                keys.append([f"{dotted}.*", "", comment, col])
            continue
        keys.append([dotted, value, comment, col])
        continues = indent if col is not None else -1
    close_block()
    return " ".join(head), [(k, v, c) for k, v, c, _ in keys]


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


def help_text(config_name: str, usage: str, examples: list[str] = (), group_keys: tuple[str, ...] = ()) -> str:
    """``--help`` of a Hydra-configured command, read from the packaged configs so new ones appear by
    themselves: usage, each config group's choices (with their first comment line), every key of
    ``conf/<config_name>.yaml`` with its default and comment, and the keys of the default choice of each
    group in ``group_keys``."""
    doc, keys = config_doc(CONF_DIR / f"{config_name}.yaml")
    out = [usage]
    if doc:
        out.append(f"  {doc}")
    out += [f"  e.g. {e}" for e in examples]
    groups = config_groups(config_name)
    if groups:
        out += ["", "config groups (choose with GROUP=NAME; one YAML file each in conf/GROUP/):"]
        for group, default in groups:
            out.append(f"  {group} (default: {default})")
            for name in group_options(group):
                first = config_doc(CONF_DIR / group / f"{name}.yaml")[0]
                out += doc_lines(f"    {name}", first.split(". ")[0].rstrip(".") if first else "")
    out += ["", f"keys of conf/{config_name}.yaml (override with KEY=VALUE; default shown):"]
    for k, v, c in keys:
        out += doc_lines(f"  {k}" if not v else f"  {k}={v}", c)
    for group, default in groups:
        if group in group_keys and (CONF_DIR / group / f"{default}.yaml").is_file():
            out += [
                "",
                f"keys of {group}={default} (override with {group}.KEY=VALUE; other {group} files have their own):",
            ]
            for k, v, c in config_doc(CONF_DIR / group / f"{default}.yaml")[1]:
                out += doc_lines(f"  {group}.{k}" if not v else f"  {group}.{k}={v}", c)
    out += ["", f"configs: {CONF_DIR}"]
    return "\n".join(out)
