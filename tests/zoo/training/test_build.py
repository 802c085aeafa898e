"""zoo build: determinism, divergence, refusal of foreign stores, kill-and-resume, and the CLI."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import zoo
from tests.conftest import build_zoo, run_cli
from zoo import ZooError

ZOO_CLI = [sys.executable, "-m", "zoo.commands.main"]


def _all_weights(z: zoo.Zoo) -> dict[int, torch.Tensor]:
    return {i: z.trajectory(i) for i in z.models.model_id}


def _same_bits(a: zoo.Zoo, b: zoo.Zoo) -> bool:
    wa, wb = _all_weights(a), _all_weights(b)
    return (
        wa.keys() == wb.keys()
        and all(torch.equal(wa[i].nan_to_num(7.0), wb[i].nan_to_num(7.0)) for i in wa)
        and a.metrics.fillna(-1).equals(b.metrics.fillna(-1))
    )


def test_same_config_same_bits(tiny_zoo, tmp_path):
    again = build_zoo(str(tmp_path / "again.zarr"))
    assert _same_bits(tiny_zoo, again)


def test_diverged_model_is_recorded_and_does_not_disturb_others(tmp_path):
    z = build_zoo(
        str(tmp_path / "div.zarr"), "recipe.widths=[16]", "recipe.learning_rates=[0.05,1e12]", "recipe.seeds=2"
    )
    df = z.models.set_index("model_id")
    assert list(df.status) == ["done", "done", "diverged", "diverged"]
    for i in (2, 3):
        last = int(df.last_checkpoint[i])
        assert 0 <= last < len(z.checkpoint_epochs) - 1
        sd = z.state_dict(i)  # checkpoint=-1 gives the last finite one
        assert all(torch.isfinite(t.float()).all() for t in sd.values())
        assert torch.isnan(z.trajectory(i)[last + 1 :]).all()
        with pytest.raises(ZooError, match="diverged"):
            z.state_dict(i, checkpoint=len(z.checkpoint_epochs) - 1)
    alone = build_zoo(
        str(tmp_path / "alone.zarr"), "recipe.widths=[16]", "recipe.learning_rates=[0.05]", "recipe.seeds=2"
    )
    for i in (0, 1):
        assert torch.allclose(z.trajectory(i), alone.trajectory(i), atol=1e-6)


def test_refuses_a_store_from_another_config_unless_overwrite(tiny_zoo, tmp_path):
    path = str(tmp_path / "z.zarr")
    build_zoo(path)
    with pytest.raises(ZooError, match="different config"):
        build_zoo(path, "recipe.epochs=2", "recipe.checkpoint_epochs=[0,2]")
    z = build_zoo(path, "recipe.epochs=2", "recipe.checkpoint_epochs=[0,2]", "overwrite=true")
    assert z.checkpoint_epochs == [0, 2]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    with pytest.raises(ZooError, match="not a zoo"):
        build_zoo(str(foreign))
    assert (foreign / "keep.txt").read_text() == "precious"


def test_unknown_executor_writes_nothing(tmp_path):
    from zoo.app.config import compose

    cfg = compose("build", [f"out={tmp_path / 'x.zarr'}", "recipe=tiny"])
    cfg["executor"] = {"name": "slurm"}
    with pytest.raises(ZooError, match="executor.name='slurm' is invalid: expected one of"):
        zoo.build(cfg)
    assert not (tmp_path / "x.zarr").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        ["recipe.arch=cnn", "recipe.dataset=digits-image", "recipe.widths=[4]", "recipe.depths=[2]"],
        [
            "recipe.arch=resnet",
            "recipe.dataset=digits-image",
            "recipe.widths=[4]",
            "recipe.depths=[1]",
            "recipe.optimizer=adam",
            "recipe.learning_rates=[0.01]",
        ],
        [
            "recipe.dataset=sine-regression",
            "recipe.optimizer=adamw",
            "recipe.weight_decays=[0.01]",
            "recipe.schedule=cosine",
            "recipe.learning_rates=[0.01]",
            "recipe.batch_sizes=[32]",
        ],
    ],
    ids=["cnn-bn", "resnet-adam", "sine-adamw-cosine"],
)
def test_other_architectures_optimizers_and_tasks(tmp_path, overrides):
    z = build_zoo(str(tmp_path / "z.zarr"), "recipe.seeds=1", *overrides)
    df = z.models
    assert (df.status == "done").all()
    task = z.dataset()
    m = z.module(0)
    with torch.no_grad():
        out = m(task.X_test)
    if task.kind == "classification":
        assert (out.argmax(1) == task.y_test).double().mean().item() == df.test_acc[0]
    else:
        assert "test_acc" not in df.columns and "test_r2" in df.columns  # no accuracy that is secretly R^2
        assert (
            z.metrics.groupby("model_id").train_loss.last().lt(z.metrics.groupby("model_id").train_loss.first()).all()
        )
        mse = ((out - task.y_test) ** 2).mean().item()
        assert mse == pytest.approx(df.test_loss[0], rel=1e-5)


def _cli(*args, **kw):
    return subprocess.run([*ZOO_CLI, *args], capture_output=True, text=True, **kw)


@pytest.mark.slow
def test_cli_build_and_info_end_to_end(tmp_path):
    out = str(tmp_path / "cli.zarr")
    r = _cli("build", f"out={out}", "recipe=tiny", "progress=false")
    assert r.returncode == 0, r.stderr
    assert "4 done" in r.stdout
    r = _cli("info", out, "--json")
    import json

    info = json.loads(r.stdout)
    assert info["models"] == 4 and info["done"] == 4 and info["diverged"] == 0
    assert len(info["layouts"]) == 2 and info["checkpoints"] == [0, 1, 3]
    r = _cli("info", out)
    assert r.returncode == 0 and "4 done" in r.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["info", "/nonexistent/zoo.zarr"], "does not exist"),
        (["info", "."], "not a zoo"),
        (["build", "recipe.no_such_key=3", "progress=false"], "no_such_key"),
        (["build", "recipe=no_such_recipe"], "no_such_recipe"),
        (["build", "recipe=tiny", "recipe.dataset=/nonexistent/mine.npz", "out=/tmp/never.zarr"], "does not exist"),
        (["build", "recipe=tiny", "recipe.optimizer=lbfgs", "out=/tmp/never.zarr"], "lbfgs"),
        (["frobnicate"], "unknown command"),
    ],
)
def test_cli_user_errors_are_one_line_without_traceback(args, needle, capsys):
    """In process through the CLI's entry point (an uncaught exception would fail the test like a traceback);
    test_cli_build_and_info_end_to_end runs the real executable."""
    rc, _, err = run_cli(capsys, *args)
    assert rc != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err
    assert needle in err, err
    if args[0] != "frobnicate":
        assert len(lines) == 1, err
    assert not os.path.exists("/tmp/never.zarr")


KILL_ARGS = [
    "recipe=tiny",
    "recipe.widths=[4,6,8,10,12]",
    "recipe.epochs=6",
    "recipe.checkpoint_epochs=[0,3,6]",
    "progress=false",
    "block_size=2",
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> zoo.Zoo:
    """The kill tests' zoo built without interruption, once for all of them."""
    path = str(tmp_path_factory.mktemp("uninterrupted") / "ref.zarr")
    return build_zoo(path, *[a for a in KILL_ARGS if a not in ("recipe=tiny", "progress=false")])


@pytest.mark.slow
@pytest.mark.parametrize(
    # SIGKILL between blocks and SIGINT as soon as the store exists (inside zarr's async writes); SIGTERM and
    # SIGKILL at random moments, the store's creation included, are test_chaos.py's rounds
    "sig,kill_after_done",
    [(signal.SIGKILL, 2), (signal.SIGINT, 0)],
)
def test_sigkill_mid_build_then_resume_gives_the_same_bits(tmp_path, sig, kill_after_done, uninterrupted):
    """Kill the real build process (SIGKILL) early or between blocks, or stop it with SIGTERM/SIGINT (a one-line
    message and exit 128+signal); the rerun completes it exactly."""
    args = KILL_ARGS
    out = str(tmp_path / "killed.zarr")
    proc = subprocess.Popen([*ZOO_CLI, "build", f"out={out}", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            done = int((zoo.open(out).models.status != "pending").sum())
        except Exception:
            done = -1
        if (kill_after_done == 0 and os.path.exists(out)) or done >= kill_after_done > 0:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "build finished before it could be killed; make the recipe bigger"
    proc.send_signal(sig)
    proc.wait()
    if sig != signal.SIGKILL:
        err = proc.stderr.read().decode()
        assert proc.returncode == 128 + sig and "interrupted: run the same command again" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err  # even inside zarr's async writes
    r = _cli("build", f"out={out}", *args)
    assert r.returncode == 0, r.stderr
    resumed = zoo.open(out)
    assert (resumed.models.status == "done").all() and len(resumed.models) == 10
    assert _same_bits(resumed, uninterrupted)


def test_build_computes_landscape_when_the_recipe_asks(tmp_path):
    """recipe.landscape.enabled=true: the zoo comes back with a landscape table; the setting is not part of
    the config identity, so turning it on for an existing zoo adds the table without retraining."""
    path = str(tmp_path / "ls.zarr")
    plain = build_zoo(path, "recipe.widths=[8]", "recipe.seeds=2")
    assert plain.landscape is None
    z = build_zoo(
        path,
        "recipe.widths=[8]",
        "recipe.seeds=2",
        "recipe.landscape.enabled=true",
        "recipe.landscape.probes=4",
        "recipe.landscape.bezier_steps=10",
    )
    ls = z.landscape
    assert ls is not None and list(ls.model_id) == [0, 1]
    assert {"hessian_trace", "mode_connectivity", "cka", "phase"} <= set(ls.columns)
    assert torch.equal(z.trajectory(0), plain.trajectory(0))
