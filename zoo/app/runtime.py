"""The torch settings every command and the Python API share: threads (``--threads``, ``threads=``), applied the
same way everywhere. Kept apart from :mod:`zoo.app.args` so commands that never run torch do not import it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from zoo.errors import ZooError

# torch threads, the same default for every command and for the Python API (conf/*.yaml ``threads: 1`` too): these
# models are small, so one thread is about as fast on a quiet machine and many times faster on a shared one
# (``generators.diagnose``: 10 s on one thread vs 42 s with torch's default there; OpenMP threads spin)
THREADS = 1
THREADS_HELP = "torch threads (0: torch's own setting)"


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
