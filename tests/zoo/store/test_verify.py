"""zoo verify: damage to a built zoo is found, and --repair + the same build restores it bit for bit."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import zoo
from tests.conftest import build_zoo
from zoo import ZooError
from zoo.commands.main import main as zoo_main

ARGS = ("recipe.widths=[8]", "recipe.seeds=6", "block_size=2")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """6 digits MLPs of one layout in 3 blocks of 2."""
    return build_zoo(str(tmp_path_factory.mktemp("v") / "v.zarr"), *ARGS)


def _same_bits(a: zoo.Zoo, b: zoo.Zoo) -> bool:
    ids = list(range(len(a)))
    return torch.equal(a.weights(ids, checkpoint=None), b.weights(ids, checkpoint=None)) and np.array_equal(
        a._metric_values(), b._metric_values(), equal_nan=True
    )


def test_intact_zoo_verifies(built, capsys):
    assert zoo_main(["verify", built.path]) == 0 and "intact" in capsys.readouterr().out


def test_damage_is_found_and_repair_then_build_restores_the_same_bits(built, tmp_path, capsys):
    path = tmp_path / "d.zarr"
    shutil.copytree(built.path, path)
    key = next(iter(built.layouts))
    shard = path / "layouts" / key / "weights" / "c" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[40] ^= 0xFF  # one model's weights: its checksum no longer matches
    shard.write_bytes(bytes(data))
    (path / "layouts" / key / "metrics" / "c" / "2" / "0" / "0").unlink()  # block 2's metrics chunk
    with pytest.raises(ZooError, match="corrupt"):
        zoo.open(str(path)).weights([0, 1], checkpoint=None)
    assert zoo_main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "block 0" in out and "block 2" in out and "block 1" not in out
    assert zoo_main(["verify", str(path), "--repair"]) == 0
    df = zoo.open(str(path)).models
    assert (df.status == "pending").sum() == 4 and df.status[[2, 3]].eq("done").all()
    rebuilt = build_zoo(str(path), *ARGS)
    assert (rebuilt.models.status == "done").all() and _same_bits(rebuilt, built)
    assert zoo_main(["verify", str(path)]) == 0
