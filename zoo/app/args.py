"""argparse for the ``zoo`` subcommands: usage errors are one-line ZooErrors, ``--help`` returns normally."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import torch

from zoo.errors import ZooError

# torch threads, the same default for every command and for the Python API (conf/*.yaml ``threads: 1`` too): these
# models are small, so one thread is about as fast on a quiet machine and many times faster on a shared one
# (``generators.diagnose``: 10 s on one thread vs 42 s with torch's default there; OpenMP threads spin)
THREADS = 1
THREADS_HELP = "torch threads (0: torch's own setting)"


def _usage(parser: argparse.ArgumentParser) -> str:
    """The usage text on one line (argparse wraps it for commands with many options)."""
    return " ".join(parser.format_usage().split()).removeprefix("usage: ")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help with every option's default (unless its text already names one); descriptions and epilogs kept as
    written (they hold tables of config keys)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or f"({default})" in text
            or default is None
            or default is False
            or default == argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise ZooError (the dispatcher prints one line and exits 2) and whose
    help shows every option's default."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise ZooError(f"{message} (usage: {_usage(self)})")


def parse(parser: argparse.ArgumentParser, argv: list[str], intermixed: bool = False) -> argparse.Namespace | None:
    """Parsed arguments, or None after ``--help`` printed the help (the command then returns 0).
    ``intermixed``: options may come between positionals (``zoo landscape PATH --quiet key=value``)."""
    try:
        return parser.parse_intermixed_args(argv) if intermixed else parser.parse_args(argv)
    except SystemExit as e:
        if e.code:
            raise ZooError(f"usage: {_usage(parser)}") from None
        return None


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block on ``threads`` torch threads (None or 0: leave torch's setting), restoring the count after:
    the Python API's ``threads=`` arguments change nothing outside their call."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
        raise ZooError(f"threads must be an integer >= 0 (0 or None: torch's default), got {threads!r}")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def set_threads(threads: int) -> None:
    """Apply a ``--threads`` option: 0 keeps torch's default, a positive count sets it, a negative one is an error."""
    if threads < 0:
        raise ZooError("--threads must be >= 0")
    if threads:
        torch.set_num_threads(threads)
