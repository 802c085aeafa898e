"""zoo verify: damage to a built zoo is found, and --repair + the same build restores it bit for bit."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
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
    assert "block 0 (models [0])" in out and "block 2 (models 4..5)" in out and "block 1" not in out
    assert zoo_main(["verify", str(path), "--repair"]) == 0
    assert "to restore them, run the same `zoo build` again" in capsys.readouterr().out
    df = zoo.open(str(path)).models
    # the flipped byte takes model 0 only (its block-mate 1 reads back and stays); the missing metrics chunk is
    # block 2's own, so both its models go
    assert df.status[df.status == "pending"].index.tolist() == [0, 4, 5], df.status.tolist()
    assert torch.equal(zoo.open(str(path)).weights([1], checkpoint=None), built.weights([1], checkpoint=None))
    rebuilt = build_zoo(str(path), *ARGS)
    assert (rebuilt.models.status == "done").all() and _same_bits(rebuilt, built)
    assert zoo_main(["verify", str(path)]) == 0


def _metrics_chunk(path, key: str, block: int):
    return path / "layouts" / key / "metrics" / "c" / str(block) / "0" / "0"


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_damaged_metrics_chunk_of_committed_models_is_a_one_line_error(built, tmp_path, capsys, damage):
    """Not NaN metrics and a different accuracy range: every metrics read names the block; verify repairs it."""
    path = tmp_path / "m.zarr"
    shutil.copytree(built.path, path)
    key = next(iter(built.layouts))
    chunk = _metrics_chunk(path, key, 1)
    if damage == "delete":
        chunk.unlink()
    else:
        chunk.write_bytes(chunk.read_bytes()[:7])
    what = "is missing though its models are committed" if damage == "delete" else "is corrupt or unreadable"
    expected = f"zoo '{path}', layout {key}, block 1 \\(models 2..3\\) {what}.*`zoo verify {path} --repair`"
    for read in (lambda z: z.models, lambda z: z.metrics, repr):
        with pytest.raises(ZooError, match=expected):
            read(zoo.open(str(path)))
    capsys.readouterr()
    assert zoo_main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "block 1" in err and "--repair" in err
    assert zoo_main(["verify", str(path)]) == 1 and "block 1 (models 2..3): metrics chunk" in capsys.readouterr().out
    assert zoo_main(["verify", str(path), "--repair"]) == 0
    df = zoo.open(str(path)).models
    assert df.status.tolist() == ["done", "done", "pending", "pending", "done", "done"]
    assert df.test_acc[[2, 3]].isna().all() and df.test_acc.drop([2, 3]).eq(built.models.test_acc.drop([2, 3])).all()


def test_a_pending_block_without_metrics_still_reads(built, tmp_path):
    """A build in progress reads its zoo: a block whose models are all pending has no metrics chunk yet."""
    from zoo.store.writer import open_writer

    path = tmp_path / "p.zarr"
    shutil.copytree(built.path, path)
    key = next(iter(built.layouts))
    assert open_writer(str(path)).mark_pending(key, 2) == [4, 5]
    assert not _metrics_chunk(path, key, 2).exists()
    z = zoo.open(str(path))
    assert z.models.status.eq("pending").sum() == 2 and z.models.test_acc[[4, 5]].isna().all()
    assert z.metrics.query("model_id >= 4").test_acc.isna().all()
    assert z.metrics.query("model_id < 4").test_acc.notna().all()


def test_a_missing_metrics_chunk_behind_an_fsspec_url_is_an_error_too():
    """The zarr read path (no local fast read) checks the chunks it found the same way."""
    import fsspec

    from zoo.store.writer import open_writer

    url = "memory://verify/metrics.zarr"
    z = build_zoo(url, "recipe.widths=[8]", "recipe.seeds=4", "block_size=2")
    key = next(iter(z.layouts))
    fs = fsspec.filesystem("memory")
    root = fs._strip_protocol(url)
    fs.rm(f"{root}/layouts/{key}/metrics/c/1/0/0")
    with pytest.raises(ZooError, match=f"layout {key}, block 1 \\(models 2..3\\) is missing"):
        _ = zoo.open(url).models
    fs.pipe(f"{root}/layouts/{key}/metrics/c/0/0/0", b"garbage")
    with pytest.raises(ZooError, match=f"layout {key}, block 0 \\(models 0..1\\) is corrupt"):
        _ = zoo.open(url).metrics
    open_writer(url).mark_pending(key, 0)
    open_writer(url).mark_pending(key, 1)
    assert zoo.open(url).models.test_acc.isna().all()
    fs.rm(root, recursive=True)


def test_a_flipped_bit_in_a_sample_zoo_resets_one_sample_and_says_how_to_resample(tmp_path, capsys):
    """Issue 27: one flipped bit turned a whole block of 20 samples pending and advised a `zoo build` that cannot
    make samples. Now the 19 intact samples stay, bit for bit, and the advice is `zoo sample` with the recorded
    run and seed."""
    from zoo.arch import arch_spec, build_model
    from zoo.layout import layout_of
    from zoo.store import create

    spec = arch_spec("mlp", (64,), 10, 8, 1)
    layout = layout_of(build_model(spec), spec)
    n = 20
    table = pd.DataFrame({"layout": [layout.key()] * n, "sample_seed": list(range(n))})
    attrs = {"generator": {"name": "dwf", "run": "data/runs/dwf", "seed": 7, "condition": None}}
    w = create(str(tmp_path / "s.zarr"), table, {layout.key(): layout}, [0], ["test_acc"], attrs=attrs)
    weights = torch.randn(n, 1, layout.size, generator=torch.Generator().manual_seed(0))
    w.write(list(range(n)), weights, torch.rand(n, 1, 1, dtype=torch.float64))
    assert zoo_main(["export", str(tmp_path / "s.zarr"), str(tmp_path / "exp")]) == 0  # for the import below
    shard = tmp_path / "s.zarr" / "layouts" / layout.key() / "weights" / "c" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[layout.size * 4 * 5 + 17] ^= 0x01  # one bit of one sample's chunk (chunks are stored in row order)
    shard.write_bytes(bytes(data))
    assert zoo_main(["verify", str(tmp_path / "s.zarr"), "--repair"]) == 0
    out = capsys.readouterr().out
    assert "repaired: 1 models marked pending" in out, out
    assert "zoo sample data/runs/dwf -n 20 --seed 7 --out" in out, out
    z = zoo.open(str(tmp_path / "s.zarr"))
    pending = z.models.index[z.models.status == "pending"].tolist()
    assert len(pending) == 1
    intact = [i for i in range(n) if i not in pending]
    assert torch.equal(z.weights(intact), weights[intact, 0])  # the other 19 samples, bit for bit
    assert zoo_main(["verify", str(tmp_path / "s.zarr")]) == 0
    # the same samples exported and imported: the advice is to import them again, not to sample
    assert zoo_main(["import", str(tmp_path / "exp"), "--out", str(tmp_path / "imp.zarr")]) == 0
    imported = zoo.open(str(tmp_path / "imp.zarr"))
    assert imported.attrs["generator"] == attrs["generator"]  # the source's provenance kept
    shard = tmp_path / "imp.zarr" / "layouts" / layout.key() / "weights" / "c" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[layout.size * 4 * 2 + 17] ^= 0x01
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert zoo_main(["verify", str(tmp_path / "imp.zarr"), "--repair"]) == 0
    out = capsys.readouterr().out
    assert f"zoo import {tmp_path / 'exp'} --out" in out and "zoo sample" not in out, out
