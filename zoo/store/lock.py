"""One writer at a time: a lock file beside a local store, held while a command writes it.

Two ``zoo build`` runs into one store would both train everything, and ``zoo align`` during a build
would align a subset. The lock is ``<store>.lock`` (beside the store, so replacing the store keeps it), an
OS file lock (``filelock``: ``flock`` on Unix) taken without waiting. The kernel releases it when its process
ends, however it ends, so a killed command never wedges the store, a reused pid is never mistaken for the
holder, and a lock left by a command on another host (a shared filesystem) frees itself too. The file holds
the owner's record (host, pid, start time, command) only to name the holder in the error message.
fsspec URLs (s3://, memory://) are not locked: coordinate writers there yourself.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator

from filelock import FileLock, Timeout

from zoo.errors import ZooError


def _lock_path(path: str) -> str | None:
    path = str(path)
    if "://" in path and not path.startswith("file://"):
        return None
    return os.path.abspath(path.removeprefix("file://").rstrip("/")) + ".lock"


def _owner(lock: str) -> dict:
    """The holder's record, or {} while it is being written (or the file is gone or garbage)."""
    try:
        with open(lock) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


@contextlib.contextmanager
def writing(path: str, command: str) -> Iterator[None]:
    """Hold the store's write lock for the duration; a ZooError naming the holder when another process has it."""
    lock = _lock_path(path)
    if lock is None:
        yield
        return
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    record = json.dumps(
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": command,
        }
    ).encode()

    def write_owner(fd: int) -> None:  # on the locked descriptor: a contender never truncates the holder's record
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)

    held = FileLock(lock, timeout=0, thread_local=False, on_acquired=write_owner)
    try:
        held.acquire()
    except Timeout:
        owner = _owner(lock)
        who = (
            f"{owner.get('command', 'a command')} (pid {owner.get('pid', '?')} on {owner.get('host', '?')},"
            f" since {owner.get('since', '?')})"
            if owner
            else "another process"
        )
        raise ZooError(
            f"{path!r} is being written by {who}; wait for it to finish (the lock frees itself when it ends)"
        ) from None
    except OSError as e:  # e.g. a filesystem without file locks
        raise ZooError(f"cannot lock {lock} for writing: {e.strerror or e}") from None
    try:
        yield
    finally:
        # unlinked while still held: a contender that opened this inode sees it unlinked and does not take it
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)
        held.release()
