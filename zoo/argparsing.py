"""argparse for the ``zoo`` subcommands: usage errors are one-line ZooErrors, ``--help`` returns normally."""
from __future__ import annotations

import argparse

from .errors import ZooError


def _usage(parser: argparse.ArgumentParser) -> str:
    """The usage text on one line (argparse wraps it for commands with many options)."""
    return " ".join(parser.format_usage().split()).removeprefix("usage: ")


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise ZooError (the dispatcher prints one line and exits 2)."""

    def error(self, message: str):
        raise ZooError(f"{message} (usage: {_usage(self)})")


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | None:
    """Parsed arguments, or None after ``--help`` printed the help (the command then returns 0)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as e:
        if e.code:
            raise ZooError(f"usage: {_usage(parser)}") from None
        return None
