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


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path):
    path = str(tmp_path / "z.zarr")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(path + ".lock", "w") as f:
        json.dump({"host": socket.gethostname(), "pid": dead.pid, "command": "zoo build"}, f)
    with writing(path, "zoo build"):
        assert json.load(open(path + ".lock"))["pid"] == os.getpid()


def test_build_and_align_refuse_while_another_process_writes(tmp_path, capsys):
    out = str(tmp_path / "z.zarr")
    args = [f"out={out}", "recipe=tiny", "progress=false"]
    prepare(compose("build", args))  # a store with every model pending, as during a build
    with open(out + ".lock", "w") as f:  # held by a live process (this one's parent)
        json.dump({"host": socket.gethostname(), "pid": os.getppid(), "command": "zoo build"}, f)
    assert zoo_main(["build", *args]) == 2 and "being written by zoo build" in capsys.readouterr().err
    assert zoo_main(["align", out]) == 2 and "being written" in capsys.readouterr().err
    os.remove(out + ".lock")
    assert zoo_main(["align", out]) == 2 and "--allow-pending" in capsys.readouterr().err
