"""The ``zoo`` command: a thin dispatcher over the Python API.

Each subcommand lives in the module that owns it and exposes ``main(argv: list[str]) -> int``.
User errors (``ZooError``, unknown Hydra override keys) print one line and exit 2, never a traceback.
"""
from __future__ import annotations

import importlib
import signal
import sys
import textwrap
import threading

from zoo.errors import ZooError

# subcommand -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "build": ("zoo.commands.build", "main", "train a zoo from a recipe into a Zarr store (Hydra overrides)"),
    "info": ("zoo.commands.info", "main", "summarize a zoo: models by status, layouts, checkpoints, accuracy"),
    "align": ("zoo.commands.align", "main", "Git Re-Basin: write canonical (permutation-aligned) weights"),
    "landscape": ("zoo.commands.landscape", "main_landscape", "compute loss-landscape metrics and phases"),
    "phases": ("zoo.commands.landscape", "main_phases", "draw the phase diagram of a zoo (PNG + JSON)"),
    "train": ("wsl.commands.train", "main", "train a weight-space encoder on a zoo (Hydra overrides)"),
    "fit": ("generators.commands.fit", "main_fit", "fit a weight generator on a zoo (Hydra overrides)"),
    "sample": ("generators.commands.fit", "main_sample", "sample networks from a fitted generator into a zoo"),
    "diagnose": ("generators.commands.diagnose", "main", "memorization check: samples vs training zoo and baselines"),
    "nowcast": ("generators.commands.nowcast", "main", "KNOWN: predict weights past a trajectory zoo's full data, as a zoo"),
    "lcsc": ("generators.commands.lcsc", "main", "LCSC: search linear combinations of saved checkpoints (val split)"),
    "export": ("zoo.commands.transfer", "main_export", "write a zoo as zoo.json + one safetensors file per model"),
    "import": ("zoo.commands.transfer", "main_import", "read an export or the flat weights.npy format into a new zoo"),
    "verify": ("zoo.store.verify", "main", "check every committed model's stored data; --repair marks damage for rebuild"),
    "upgrade": ("zoo.store.upgrade", "main", "convert a zoo written by an older wszoo (schema 1) to the current schema"),
}


def _usage() -> str:
    from zoo.app.config import group_options

    lines = ["usage: zoo COMMAND [args]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "configs (conf/GROUP/NAME.yaml; new files appear here and in each command's --help):"]
    for group, command in (("recipe", "build"), ("encoder", "train"), ("task", "train"), ("augment", "train"),
                           ("generator", "fit")):
        lines += textwrap.wrap(f"{group:<10} zoo {command} {group}=NAME: {', '.join(group_options(group))}", 108,
                               initial_indent="  ", subsequent_indent=" " * 13, break_on_hyphens=False)
    lines += ["", "zoo COMMAND --help lists a command's options, config groups and keys with their defaults."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"zoo: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    previous = _raise_on_signals()
    try:
        fn = getattr(importlib.import_module(module), func)
        return int(fn(rest) or 0)
    except ZooError as e:
        print(f"zoo {name}: error: {e}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as e:
        print(f"zoo {name}: interrupted: run the same command again to resume", file=sys.stderr)
        return 128 + (e.signum if isinstance(e, Interrupted) else signal.SIGINT)
    except BrokenPipeError:  # `zoo info ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived. A BaseException, so no ``except Exception`` on the way (Lightning's
    trainer included, which would turn a KeyboardInterrupt into exit(1)) swallows it; what was committed
    stays committed (writes are atomic per file, a model's state row last)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)


def _raise_on_signals() -> dict:
    """Make SIGTERM and SIGINT raise :class:`Interrupted` in the main thread; returns the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, _frame):
        raise Interrupted(signum)

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, handler)
    return previous


if __name__ == "__main__":
    sys.exit(main())
