"""One writer at a time: a second build or an align during a build is refused; a dead owner's lock is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from zoo import ZooError
from zoo.app.config import compose
from zoo.commands.main import main as zoo_main
from zoo.store.lock import writing
from zoo.training.build import prepare


def test_a_held_lock_refuses_a_second_writer_and_is_released(tmp_path):
    path = str(tmp_path / "z.zarr")
    with writing(path, "zoo build"):
        with pytest.raises(ZooError, match="being written by zoo build"):
            with writing(path, "zoo align"):
                pass
    with writing(path, "zoo align"):  # released on exit
        pass
    assert not os.path.exists(path + ".lock")


def test_a_record_without_a_live_lock_is_taken_over(tmp_path):
    """Only the OS lock counts, not the record: a dead pid, a reused pid (alive, here this test's parent) and a
    command on another host all leave a record whose lock the kernel has freed, and each is taken over."""
    path = str(tmp_path / "z.zarr")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = socket.gethostname()
    for host, pid in ((here, dead.pid), (here, os.getppid()), ("another-host", 1)):
        with open(path + ".lock", "w") as f:
            json.dump({"host": host, "pid": pid, "command": "zoo build"}, f)
        with writing(path, "zoo build"):
            assert json.load(open(path + ".lock"))["pid"] == os.getpid()
        assert not os.path.exists(path + ".lock")


HOLD = """
import sys
from zoo.store.lock import writing
with writing(sys.argv[1], "zoo build"):
    print("held", flush=True)
    sys.stdin.read()
"""


def _holder(path: str) -> subprocess.Popen:
    """Another process holding the store's lock until its stdin closes (or it is killed)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_build_and_align_refuse_while_another_process_writes(tmp_path, capsys):
    out = str(tmp_path / "z.zarr")
    args = [f"out={out}", "recipe=tiny", "progress=false"]
    prepare(compose("build", args))  # a store with every model pending, as during a build
    holder = _holder(out)
    try:
        assert zoo_main(["build", *args]) == 2
        err = capsys.readouterr().err
        assert "being written by zoo build" in err and f"pid {holder.pid} " in err  # the owner record names it
        assert zoo_main(["align", out]) == 2 and "being written" in capsys.readouterr().err
    finally:
        holder.kill()  # killed, not released: the kernel frees the lock, no stale file blocks the next writer
        holder.wait()
    assert zoo_main(["align", out]) == 2 and "--allow-pending" in capsys.readouterr().err
