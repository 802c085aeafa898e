"""argparse for the ``zoo`` subcommands: usage errors are one-line ZooErrors, ``--help`` returns normally."""
from __future__ import annotations

import argparse

from .errors import ZooError


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise ZooError (the dispatcher prints one line and exits 2)."""

    def error(self, message: str):
        raise ZooError(f"{message} (usage: {self.format_usage().strip().removeprefix('usage: ')})")


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | None:
    """Parsed arguments, or None after ``--help`` printed the help (the command then returns 0)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as e:
        if e.code:
            raise ZooError(f"usage: {parser.format_usage().strip().removeprefix('usage: ')}") from None
        return None
