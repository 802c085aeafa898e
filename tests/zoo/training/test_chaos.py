"""Chaos: a build killed (SIGKILL, SIGTERM) at random moments, its chunks deleted and corrupted at random,
repaired with `zoo verify --repair` and built again, ends bit-identical to an uninterrupted build."""

from __future__ import annotations

import json
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


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class Killed(RuntimeError):
    """A write stopped midway (what a kill leaves, without the process)."""


def _fail_write(monkeypatch, nth: int) -> None:
    """ZooWriter stops at its ``nth`` write call (the store is created, earlier batches are in)."""
    from zoo.store.writer import ZooWriter

    real, calls = ZooWriter.write, []

    def write(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == nth:
            raise Killed("killed midway")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ZooWriter, "write", write)


@pytest.mark.slow
def test_generative_round_kills_and_corruption_lose_nothing(tmp_path, monkeypatch, capsys):
    """Issue 27's generative round: `zoo fit` SIGKILLed at a random moment (its last checkpoint sometimes
    corrupted), `zoo sample` and `zoo import` stopped midway, a sample zoo, an export and a snapshot corrupted.
    The training zoo is never touched; every output is complete (the bits of an undisturbed run) or refused
    with one line, and no half-written output, .partial or lock is left."""
    import generators
    from generators.lcsc.snapshots import lcsc_generator
    from tests.generators.test_resume import CLI, SETTINGS, _same_files
    from zoo.commands.main import main as zoo_main
    from zoo.store.transfer import export_zoo, import_zoo

    rng = random.Random(27)
    train = build_zoo(
        str(tmp_path / "train.zarr"), "recipe.widths=[8]", "recipe.seeds=5", "recipe.learning_rates=[0.05,0.1]"
    )
    before = _tree(Path(train.path))
    ref = generators.fit("dwf", train.path, out=str(tmp_path / "ref"), **SETTINGS).run_dir
    # fit: SIGKILL once its first checkpoint is on disk, at a random moment after; sometimes a corrupt checkpoint
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "zoo.commands.main", "fit", "generator=dwf", f"zoo={train.path}", f"out={run}", *CLI]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "last.ckpt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 1.0))
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    corrupt = rng.random() < 0.5 and (run / "checkpoints" / "last.ckpt").exists()
    if corrupt:
        last = run / "checkpoints" / "last.ckpt"
        last.write_bytes(last.read_bytes()[: len(last.read_bytes()) // 2])
    killed_midway = (run / "INCOMPLETE").exists()
    if killed_midway:  # killed before it finished: refused until fitted again
        with pytest.raises(ZooError, match="did not finish"):
            generators.load(run)
    capsys.readouterr()
    generators.fit("dwf", train.path, out=str(run), overwrite=True, **SETTINGS)  # also if it finished before the kill
    said = capsys.readouterr().err
    assert corrupt <= ("restarting from scratch" in said), said  # a corrupt checkpoint is never resumed from
    if killed_midway and not corrupt:  # a real resume from the SIGKILLed process's checkpoint, not from step 0
        resumed = json.loads((run / "summary.json").read_text())["resumed_from_step"]
        assert resumed and f"resuming the interrupted fit from its last checkpoint (step {resumed}" in said, said
    _same_files(ref, run)  # resumed or restarted: the bits of the undisturbed fit
    # a corrupted snapshot: LCSC refuses it with one line
    snap = sorted((run / "snapshots").iterdir())[rng.randrange(3)]
    snap.write_bytes(snap.read_bytes()[:64])
    with pytest.raises(ZooError, match=snap.name):
        lcsc_generator(run, samples=2)
    # sample: stopped midway, nothing is left; again, complete; a flipped byte is found by verify and refused on read
    out = tmp_path / "s.zarr"
    sample = ["sample", str(run), "-n", "6", "--seed", "3", "--out", str(out)]
    with monkeypatch.context() as m:
        _fail_write(m, 1)
        with pytest.raises(Killed):
            zoo_main(sample)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("s.zarr")) == []
    assert zoo_main(sample) == 0
    samples = zoo.open(str(out))
    assert (samples.models.status == "done").all() and not verify(samples)
    chunk = rng.choice(sorted(p for p in out.glob("layouts/*/weights/c/**/*") if p.is_file()))
    data = bytearray(chunk.read_bytes())
    data[rng.randrange(len(data))] ^= 0xFF
    chunk.write_bytes(bytes(data))
    assert verify(zoo.open(str(out)))
    # import: a corrupt model file is refused with nothing left; stopped midway, nothing left; then bit for bit
    exp = export_zoo(train, tmp_path / "exp")
    victim = rng.choice(sorted(exp.glob("models/*.safetensors")))
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 3])
    dest = tmp_path / "imp.zarr"
    with pytest.raises(ZooError, match=victim.name):
        import_zoo(exp, str(dest))
    victim.write_bytes(good)
    with monkeypatch.context() as m:
        _fail_write(m, 2)
        m.setattr("zoo.store.transfer.BATCH", 2)
        with pytest.raises(Killed):
            import_zoo(exp, str(dest))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("imp.zarr")) == []
    imported = import_zoo(exp, str(dest))
    assert _same_bits(imported, train)
    assert _tree(Path(train.path)) == before  # nothing lost: the training zoo is as it was built
