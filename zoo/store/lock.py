"""One writer at a time: a lock file beside a local store, held while a command writes it.

Two ``zoo build`` runs into one store would both train everything, and ``zoo align`` during a build
would align a subset. The lock is ``<store>.lock`` (beside the store, so replacing the store keeps it),
created atomically with O_EXCL and holding the owner's host, pid and start time. A lock whose process is
gone (same host, pid not alive) is stale and taken over, so a killed command never wedges the store.
fsspec URLs (s3://, memory://) are not locked: coordinate writers there yourself.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator

from zoo.errors import ZooError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_path(path: str) -> str | None:
    path = str(path)
    if "://" in path and not path.startswith("file://"):
        return None
    return os.path.abspath(path.removeprefix("file://").rstrip("/")) + ".lock"


def _try_acquire(lock: str, command: str) -> dict | None:
    """Create the lock; None on success, else the current owner's record."""
    record = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": command,
    }
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            with open(lock) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}  # being written this instant, or garbage: treated as held
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    return None


@contextlib.contextmanager
def writing(path: str, command: str) -> Iterator[None]:
    """Hold the store's write lock for the duration; a ZooError naming the holder when another process has it."""
    lock = _lock_path(path)
    if lock is None:
        yield
        return
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    owner = _try_acquire(lock, command)
    if (
        owner is not None
        and owner.get("host") == socket.gethostname()
        and isinstance(owner.get("pid"), int)
        and not _alive(owner["pid"])
    ):
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)  # stale: its process is gone
        owner = _try_acquire(lock, command)
    if owner is not None:
        who = (
            f"{owner.get('command', 'a command')} (pid {owner.get('pid', '?')} on {owner.get('host', '?')},"
            f" since {owner.get('since', '?')})"
            if owner
            else "another process"
        )
        raise ZooError(
            f"{path!r} is being written by {who}; wait for it to finish, or remove {lock} if that process is gone"
        )
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)
