"""Chaos: a build killed (SIGKILL, SIGTERM) at random moments, its chunks deleted and corrupted at random,
repaired with `zoo verify --repair` and built again, ends bit-identical to an uninterrupted build."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import zoo
from tests.conftest import build_zoo
from tests.zoo.training.test_build import _same_bits
from zoo.errors import ZooError
from zoo.store.verify import repair, verify

ARGS = [
    "recipe=tiny",
    "recipe.widths=[4,6,8,10,12]",
    "recipe.seeds=4",
    "recipe.epochs=6",
    "recipe.checkpoint_epochs=[0,3,6]",
    "block_size=2",
]
ROUNDS = 5


def _damage(path: Path, rng: random.Random) -> list[str]:
    """Delete or flip a byte of up to two random data chunks (weights shards, metrics or state chunks)."""
    chunks = sorted(p for p in path.glob("layouts/*/*/c/**/*") if p.is_file() and ".partial" not in p.name)
    done = []
    for chunk in rng.sample(chunks, k=min(2, len(chunks))):
        if rng.random() < 0.5:
            chunk.unlink()
            done.append(f"deleted {chunk.relative_to(path)}")
        else:
            data = bytearray(chunk.read_bytes())
            data[rng.randrange(len(data))] ^= 0xFF
            chunk.write_bytes(bytes(data))
            done.append(f"flipped a byte of {chunk.relative_to(path)}")
    return done


@pytest.mark.slow
def test_kills_and_corruption_then_verify_repair_and_build_give_the_same_bits(tmp_path):
    rng = random.Random(20261125)
    ref = build_zoo(str(tmp_path / "ref.zarr"), *ARGS[1:])
    out = tmp_path / "chaos.zarr"
    log = []
    for round_ in range(ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "zoo.commands.main", "build", f"out={out}", "progress=false", *ARGS],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(rng.uniform(2.0, 9.0))
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        proc.send_signal(sig)
        proc.wait()
        err = proc.stderr.read().decode()
        assert "Traceback" not in err, err
        # 0: it finished before the signal came; -SIGTERM with nothing said: it came while Python was still
        # importing, before any zoo code ran (nothing can have been written then)
        if sig == signal.SIGTERM and proc.returncode != 0 and not (proc.returncode == -signal.SIGTERM and not err):
            assert proc.returncode == 128 + signal.SIGTERM and "interrupted" in err, err
        if not (out / "zarr.json").exists():
            log.append(f"round {round_}: {sig.name} before the store existed")
            continue
        try:  # a kill while the store is being created leaves it marked so: the next build starts it over
            zoo.open(str(out))
        except ZooError as e:
            assert "creation was interrupted" in str(e), e
            log.append(f"round {round_}: {sig.name} while the store was being created")
            continue
        damage = _damage(out, rng)
        z = zoo.open(str(out))
        reports = verify(z)
        reset = repair(z, reports)
        log.append(
            f"round {round_}: {sig.name} after {int((z.models.status != 'pending').sum())} committed"
            f" models; {'; '.join(damage)}; verify found {len(reports)} damaged blocks, reset {reset} models"
        )
    r = subprocess.run(
        [sys.executable, "-m", "zoo.commands.main", "build", f"out={out}", "progress=false", *ARGS],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr + "\n" + "\n".join(log)
    final = zoo.open(str(out))
    assert not verify(final), log
    assert (final.models.status == "done").all() and _same_bits(final, ref), "\n".join(log)
    print("\n".join(log))
