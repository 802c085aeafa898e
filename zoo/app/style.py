"""One spelling of the options every command shares: the zoo argument, out, overwrite, threads, seed, device.

The canonical style is the option one (``--out DIR --overwrite --threads 1 --seed 0 --zoo PATH``), as the twelve
argparse commands take it. The Hydra commands (build, train, fit) take the same options and turn them into their
overrides (``--out X`` -> ``out=X``); the argparse commands take the Hydra spelling (``out=X``, ``overwrite=true``,
``zoo=PATH``) as an alias, so scripts written in either style keep working. Anything else written in the other
style is a one-line hint (``zoo build --recipe tiny`` -> "write recipe=tiny"), never a lexer error.
"""

from __future__ import annotations

from collections.abc import Mapping

from zoo.errors import ZooError

SHARED = ("zoo", "out", "overwrite", "threads", "seed", "device")
FLAGS = ("overwrite",)  # options without a value (``--overwrite``; ``overwrite=true`` in Hydra)
HYDRA = ("build", "train", "fit")  # the Hydra commands: their shared settings are conf/<name>.yaml's top-level keys
# passed on as they are: Hydra's own flags (zoo.app.hydra_app runs build, train and fit as Hydra apps)
HYDRA_FLAGS: tuple[str, ...] = ("-h", "--help", "-m", "--multirun", "--cfg", "--info", "--resolve", "--package")
HYDRA_FLAGS += (
    "--hydra-help",
    "--run",
    "--config-path",
    "--config-name",
    "--config-dir",
    "--shell-completion",
    "--experimental-rerun",
)
# the argparse commands: their shared options, and how each names the zoo it reads ("": its first argument)
OPTIONS: Mapping[str, tuple[tuple[str, ...], str | None]] = {
    "info": ((), ""),
    "align": (("seed", "threads", "device"), ""),
    "landscape": (("seed", "threads"), ""),
    "phases": (("out",), ""),
    "sample": (("out", "overwrite", "seed", "threads", "device"), None),
    "diagnose": (("out", "seed", "threads", "device"), "--train"),
    "nowcast": (("out", "overwrite", "threads", "device"), "--zoo"),
    "lcsc": (("out", "overwrite", "seed", "threads", "device"), ""),
    "export": ((), ""),
    "import": (("out", "overwrite"), None),
    "verify": ((), ""),
    "upgrade": ((), ""),
}
# argparse commands whose shared options are KEY=VALUE overrides of their config (conf/landscape/default.yaml):
# ``threads=2`` stays as written, ``--threads 2`` becomes ``threads=2``
OVERRIDES = ("landscape",)
# Why a command has no setting for a shared option: its --help ends with one line saying so, and writing the option
# is a one-line hint with the reason, never silently ignored.
_READS = "it only reads the zoo"
_NO_TORCH = "it runs no model"
NOT_TAKEN: Mapping[str, Mapping[str, str]] = {
    "build": {"zoo": "the zoo it builds is out=", "seed": "model seeds are recipe.seeds and recipe.seed_offset"},
    "info": {
        "out": _READS + " (--render PNG names its picture)",
        "overwrite": _READS,
        "seed": "nothing in it is random",
        "threads": _NO_TORCH + " (--render draws a few INRs on the CPU)",
        "device": _NO_TORCH + " (--render draws a few INRs on the CPU)",
    },
    "align": {
        "out": "it writes canonical weights (beside the raw ones) and its tables into the zoo it aligns",
        "overwrite": "it writes canonical weights (beside the raw ones) and its tables into the zoo it aligns",
    },
    "landscape": {
        "out": "it writes its tables into the zoo it measures",
        "overwrite": "it writes its tables into the zoo it measures",
        "device": "its Hessian, curve and CKA computations run on the CPU (none is ported to a GPU)",
    },
    "phases": {
        "overwrite": "it replaces its own phases.png and phases.json in --out",
        "seed": "it draws the stored landscape tables: nothing random",
        "threads": _NO_TORCH + " (it draws stored tables)",
        "device": _NO_TORCH + " (it draws stored tables)",
    },
    "sample": {"zoo": "it reads a run folder, which records its training zoo (--data-root if that moved)"},
    "diagnose": {"overwrite": "it replaces its own diagnose.json and PNGs in --out"},
    "nowcast": {"seed": "applying a fitted nowcaster draws nothing random"},
    "export": {
        "out": "the folder to write is its second argument DIR",
        "overwrite": "DIR must be new or empty",
        "seed": "nothing in it is random",
        "threads": _NO_TORCH + " (it copies stored arrays)",
        "device": _NO_TORCH + " (it copies stored arrays)",
    },
    "import": {
        "zoo": "it reads a folder DIR and writes the zoo --out",
        "seed": "nothing in it is random",
        "threads": _NO_TORCH + " (it copies arrays)",
        "device": _NO_TORCH + " (it copies arrays)",
    },
    "verify": {
        "out": "it checks the zoo in place",
        "overwrite": "it checks the zoo in place (--repair marks damaged blocks pending)",
        "seed": "nothing in it is random",
        "threads": _NO_TORCH + " (it hashes stored data)",
        "device": _NO_TORCH + " (it hashes stored data)",
    },
    "upgrade": {
        "out": "it converts the zoo in place",
        "overwrite": "it converts the zoo in place",
        "seed": "nothing in it is random",
        "threads": _NO_TORCH + " (it rewrites metadata)",
        "device": _NO_TORCH + " (it rewrites metadata)",
    },
}


def not_taken(command: str) -> str:
    """The one help line naming the shared options ``command`` has no setting for, and why ("" when it has all)."""
    reasons: dict[str, list[str]] = {}
    for key, why in NOT_TAKEN.get(command, {}).items():
        reasons.setdefault(why, []).append(f"--{key}")
    if not reasons:
        return ""
    parts = [f"{', '.join(keys)}: {why}" for why, keys in reasons.items()]
    return f"shared options zoo {command} does not take: {'; '.join(parts)}"


def hydra_shared_keys(command: str) -> tuple[str, ...]:
    """The shared options a Hydra command takes: those ``NOT_TAKEN`` does not list (each is a top-level key of
    conf/<command>.yaml; tests/commands/test_style.py holds the two together)."""
    return tuple(k for k in SHARED if k not in NOT_TAKEN.get(command, {}))


def _no_setting(command: str, key: str, options: tuple[str, ...]) -> ZooError:
    why = NOT_TAKEN.get(command, {}).get(key)
    return ZooError(
        f"zoo {command} has no {key} setting ({why + '; ' if why else ''}its shared options: {_listed(options)})"
    )


TRUE, FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off", "null")


def _split_option(argv: list[str], i: int) -> tuple[str, str | None, int]:
    """(name, value or None, tokens used) of the option at ``argv[i]`` (``--name value`` or ``--name=value``)."""
    name, eq, value = argv[i][2:].partition("=")
    if eq:
        return name, value, 1
    if name not in FLAGS and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
        return name, argv[i + 1], 2
    return name, None, 1


def hydra_overrides(command: str, argv: list[str]) -> list[str]:
    """``argv`` of a Hydra command with the shared options turned into overrides (``--out X`` -> ``out=X``); any
    other ``--option`` is a one-line hint to write it as an override."""
    if command not in HYDRA:
        return argv
    keys = hydra_shared_keys(command)
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token.split("=", 1)[0] in HYDRA_FLAGS:
            out.append(token)
            i += 1
            continue
        name, value, used = _split_option(argv, i)
        key = name.replace("-", "_")
        if key in keys:
            if key in FLAGS:
                value = "true" if value is None else value
            elif value is None:
                raise ZooError(f"--{name} needs a value: zoo {command} --{name} VALUE (or {key}=VALUE)")
            out.append(f"{key}={value}")
            i += used
            continue
        if key in SHARED:
            raise _no_setting(command, key, keys)
        shared = _listed(keys)
        raise ZooError(
            f"zoo {command} takes its settings as KEY=VALUE (Hydra overrides): write {key}={value or 'VALUE'}"
            f" instead of {token}; the options it takes are {shared} (zoo {command} --help lists the keys)"
        )
    return out


def option_aliases(command: str, argv: list[str]) -> list[str]:
    """``argv`` of an argparse command with the Hydra spelling of its shared options turned into options
    (``out=X`` -> ``--out X``, ``overwrite=true`` -> ``--overwrite``, ``zoo=P`` -> the command's zoo argument);
    a shared setting the command does not have is a one-line hint."""
    spec = OPTIONS.get(command)
    if spec is None:
        return argv
    options, zoo_arg = spec
    overrides = command in OVERRIDES
    out: list[str] = []
    first: list[str] = []

    def zoo_value(value: str) -> None:
        if zoo_arg is None:
            why = NOT_TAKEN.get(command, {}).get("zoo")
            shared = _listed(options)
            raise ZooError(f"zoo {command} reads no zoo ({why + '; ' if why else ''}its shared options: {shared})")
        if zoo_arg == "":
            first.append(value)
        else:
            out.extend([zoo_arg, value])

    i = 0
    while i < len(argv):
        token = argv[i]
        if (token == "--zoo" or token.startswith("--zoo=")) and zoo_arg != "--zoo":
            _, value, used = _split_option(argv, i)
            if value is None:
                raise ZooError(f"--zoo needs a value: zoo {command} --zoo PATH")
            zoo_value(value)
            i += used
            continue
        if overrides and token.startswith("--") and token[2:].split("=", 1)[0] in options:
            name, value, used = _split_option(argv, i)
            if value is None:
                raise ZooError(f"--{name} needs a value: zoo {command} --{name} VALUE (or {name}=VALUE)")
            out.append(f"{name}={value}")  # the command's own KEY=VALUE override of that key
            i += used
            continue
        key, eq, value = token.partition("=")
        i += 1
        if token.startswith("-") or not eq or key not in SHARED:
            out.append(token)  # the command's own arguments (landscape's KEY=VALUE overrides, paths with '=')
        elif key == "zoo":
            zoo_value(value)
        elif key not in options:
            raise _no_setting(command, key, options)
        elif overrides:
            out.append(token)
        elif key in FLAGS:
            if value.lower() in TRUE:
                out.append(f"--{key}")
            elif value.lower() not in FALSE:
                raise ZooError(f"{key}={value}: write {key}=true or {key}=false (or --{key})")
        else:
            out += [f"--{key}", value]
    if len(first) > 1:
        raise ZooError(f"zoo {command} reads one zoo, got {len(first)}: {first}")
    return first + out


def _listed(options: tuple[str, ...]) -> str:
    return " ".join(f"--{k}" for k in options) or "none"


def normalize(command: str, argv: list[str]) -> list[str]:
    """The arguments a command parses: the shared options in its own spelling, whichever style was written."""
    if any(a in ("-h", "--help") for a in argv[:1]):
        return argv
    return hydra_overrides(command, argv) if command in HYDRA else option_aliases(command, argv)
