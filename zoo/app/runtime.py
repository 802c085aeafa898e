"""The torch settings every command and the Python API share: threads (``--threads``, ``threads=``) and the device
(``--device``, ``device=``), spelled, checked and applied the same way everywhere. Kept apart from
:mod:`zoo.app.args` so commands that never run torch do not import it."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

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


# --device / device=: where a command runs its models, one spelling and one check for every command that has it
DEVICE_HELP = "cpu, cuda, cuda:N or auto (cuda when torch sees a GPU)"
_DEVICE = re.compile(r"cpu|auto|cuda(:\d+)?")


def device_rule(value: Any) -> str | None:
    """A config rule (:func:`zoo.app.checks.check`): the spelling of a device, without asking torch for GPUs."""
    return None if isinstance(value, str) and _DEVICE.fullmatch(value) else DEVICE_HELP


def resolve_device(device: str) -> torch.device:
    """The torch device a ``device`` setting names (cpu, cuda, cuda:N, auto); a one-line ZooError for another
    spelling, for cuda when torch sees no GPU and for a GPU index torch does not see."""
    if device_rule(device):
        raise ZooError(f"device={device!r} is invalid: expected {DEVICE_HELP}")
    if device == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if device == "auto":
        return torch.device("cuda" if available else "cpu")
    if not available:
        raise ZooError(
            f"device={device} was asked for but torch sees no CUDA GPU (torch.cuda.is_available() is False with"
            f" torch {torch.__version__}); use device=cpu or device=auto"
        )
    chosen = torch.device(device)
    count = torch.cuda.device_count()
    if chosen.index is not None and chosen.index >= count:
        raise ZooError(f"device={device}: torch sees {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
    return chosen


def lightning_device(device: str) -> tuple[str, int | list[int]]:
    """(``accelerator``, ``devices``) of a Lightning Trainer for a ``device`` setting (checked as
    :func:`resolve_device` does): ``cuda:1`` -> ("gpu", [1])."""
    chosen = resolve_device(device)
    if chosen.type == "cpu":
        return "cpu", 1
    return "gpu", [chosen.index] if chosen.index is not None else 1


def with_device(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A run config whose ``device`` (when set) decides its Trainer's ``accelerator`` and ``devices``; null leaves
    the ``trainer.*`` settings as they are. Checked here, before anything is written."""
    out = dict(cfg)
    device = out.get("device")
    if device is not None:
        accelerator, devices = lightning_device(device)
        out["trainer"] = {**dict(out.get("trainer") or {}), "accelerator": accelerator, "devices": devices}
    return out
