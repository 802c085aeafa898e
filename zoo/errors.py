"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class ZooError(Exception):
    """A problem with the user's input (path, config, store, data), not a bug in wszoo."""
