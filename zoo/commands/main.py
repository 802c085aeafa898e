"""The ``zoo`` command: a thin dispatcher over the commands that packages declare as entry points.

Every package adds its subcommands under ``[project.entry-points."wszoo.commands"]`` in pyproject.toml
(``build = "zoo.commands.build:main"``, ``fit = "generators.commands.fit:main"``, ...): ``zoo`` names no
package above it. A command is a function ``(argv: list[str]) -> int`` whose docstring's first line is its
one-line help; ``zoo --help`` reads that line from the source without importing the command (importing
``generators`` or ``wsl`` loads Lightning, seconds for a help page). User errors (``ZooError``, unknown Hydra
override keys) print one line and exit 2, never a traceback; SIGTERM and SIGINT exit with 128 + signal.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import signal
import sys
import textwrap
import threading
import warnings
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from zoo import __version__
from zoo.app.style import normalize
from zoo.errors import ZooError

GROUP = "wszoo.commands"
# The order `zoo --help` lists commands in: a user's path through the platform (installers sort entry points
# by name). Names only: a command not listed here still works and is listed after these.
HELP_ORDER = (
    "build",
    "info",
    "align",
    "landscape",
    "phases",
    "train",
    "fit",
    "sample",
    "diagnose",
    "nowcast",
    "lcsc",
    "export",
    "import",
    "verify",
    "upgrade",
)


def commands() -> dict[str, EntryPoint]:
    """The installed subcommands by name, in help order."""
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    rank = {name: i for i, name in enumerate(HELP_ORDER)}
    return {name: found[name] for name in sorted(found, key=lambda n: (rank.get(n, len(rank)), n))}


def summary(ep: EntryPoint) -> str:
    """The first docstring line of a command's function, read from its source file (nothing is imported)."""
    top, *rest = ep.module.split(".")
    spec = importlib.util.find_spec(top)  # a top-level spec: the package itself is not executed
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder, *rest[:-1], f"{rest[-1]}.py") if rest else Path(folder, "__init__.py")
        if not path.is_file():
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name == ep.attr:
                return (ast.get_docstring(node) or "").split("\n", 1)[0]
    return ""


def _usage() -> str:
    lines = ["usage: zoo COMMAND [args]    (zoo --version: the installed version)", "", "commands:"]
    lines += [f"  {name:<10} {summary(ep)}" for name, ep in commands().items()]
    lines += ["", "configs (conf/GROUP/NAME.yaml; new files appear here and in each command's --help):"]
    from zoo.app.config import group_options  # omegaconf: only the overview needs the groups' options

    for group, command in (
        ("recipe", "build"),
        ("encoder", "train"),
        ("task", "train"),
        ("augment", "train"),
        ("generator", "fit"),
    ):
        lines += textwrap.wrap(
            f"{group:<10} zoo {command} {group}=NAME: {', '.join(group_options(group))}",
            108,
            initial_indent="  ",
            subsequent_indent=" " * 13,
            break_on_hyphens=False,
        )
    lines += ["", "zoo COMMAND --help lists a command's options, config groups and keys with their defaults."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version", "version"):
        print(f"zoo (wszoo) {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    known = commands()
    if name not in known:
        print(f"zoo: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    previous = _raise_on_signals()
    try:
        return int(known[name].load()(normalize(name, rest)) or 0)
    except ZooError as e:
        print(f"zoo {name}: error: {e}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as e:
        # zarr's pending async writes are abandoned on purpose (each file is written whole or not at all): keep
        # asyncio from printing "Task was destroyed but it is pending!" (and "coroutine ... was never awaited") for
        # each one at exit, under our one line
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
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
