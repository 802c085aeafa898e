"""A build on a real Dask cluster (scheduler + two worker processes on loopback) equals the local build."""

import shutil
import socket
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import build_zoo

ARGS = ["recipe.widths=[4,8,12]", "recipe.seeds=2", "recipe.epochs=2", "recipe.checkpoint_epochs=[0,1,2]"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dask_build_equals_local_build_bit_for_bit(tmp_path):
    port = _free_port()
    bindir = shutil.which("dask", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert bindir, "the dask CLI is installed with dask[distributed]"
    procs = [
        subprocess.Popen(
            [bindir, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        time.sleep(2)
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        bindir,
                        "worker",
                        f"tcp://127.0.0.1:{port}",
                        "--nthreads",
                        "1",
                        "--nworkers",
                        "1",
                        "--no-dashboard",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        remote = build_zoo(
            str(tmp_path / "dask.zarr"), *ARGS, "executor=dask", f"executor.address=tcp://127.0.0.1:{port}", "threads=1"
        )
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    local = build_zoo(str(tmp_path / "local.zarr"), *ARGS, "threads=1")
    assert (remote.models.status == "done").all() and len(remote.models) == 6
    for i in local.models.model_id:
        assert torch.equal(remote.trajectory(i), local.trajectory(i)), i
    assert remote.metrics.equals(local.metrics)
