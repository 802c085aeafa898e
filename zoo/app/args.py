"""argparse for the ``zoo`` subcommands: usage errors are one-line ZooErrors, ``--help`` returns normally. No torch
(:mod:`zoo.app.runtime` applies ``--threads`` and ``--device``): ``zoo info`` and ``--help`` start without it."""

from __future__ import annotations

import argparse

from zoo.app.style import not_taken
from zoo.errors import ZooError


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

    def format_help(self) -> str:
        """argparse's help, ending with the one line that names the shared options the command has no setting for."""
        text = super().format_help()
        line = not_taken(self.prog.removeprefix("zoo ").split(" ")[0]) if self.prog.startswith("zoo ") else ""
        return f"{text.rstrip()}\n\n{line}\n" if line else text

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
