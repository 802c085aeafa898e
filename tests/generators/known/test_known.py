"""KNOWN: the nowcaster learns a trajectory family with a known next step; recursive nowcasts are zoos whose
modules run; save/load predicts the same bits; bad inputs are one-line errors through the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import generators
import zoo
from generators.known.model import KINDS, Known, weight_kinds
from zoo.arch import arch_spec, build_model
from zoo.commands.main import main as zoo_main
from zoo.layout import layout_of
from zoo.store.lock import writing

RATE = 0.6  # reversed trajectories decay geometrically toward a target: v_j = a + (b - a) RATE^j


def trajectory_zoo(path: str, n: int, stages: int, arch: str = "mlp", seed: int = 0, attrs: bool = True):
    """A trajectory zoo (zoo.trajectory's contract) of ``n`` digits nets whose reversed trajectories
    (small data -> full data) are v_j = target + (start - target) RATE^j, j = 0..stages; buffers constant.
    Returns (zoo, reversed trajectories [n, T, P], the true next weights [n, P])."""
    data = zoo.load_dataset("digits-image" if arch == "cnn" else "digits")
    spec = arch_spec(arch, data.input_shape, data.num_outputs, 6, 1)
    torch.manual_seed(seed)
    layout = layout_of(build_model(spec), spec)
    mask = layout.parameter_mask()
    start = torch.stack([layout.flatten(build_model(spec).state_dict()) for _ in range(n)])
    target = start + 0.1 * torch.randn(start.shape, generator=torch.Generator().manual_seed(seed))
    target[:, ~mask] = start[:, ~mask]
    powers = RATE ** torch.arange(stages + 2, dtype=torch.float32)
    path_ = target[:, None] + (start - target)[:, None] * powers[None, :, None]  # [n, T + 1, P]
    rev, nxt = path_[:, :-1], path_[:, -1]
    stored = torch.cat([rev[:, -1:], rev[:, :-1].flip(1)], 1)  # training order: full, stage 1..S
    info = (
        {"trajectory": {"full_checkpoint": 0, "init_checkpoint": None, "stage_checkpoints": list(range(1, stages + 1))}}
        if attrs
        else {}
    )
    w = zoo.create(
        path,
        pd.DataFrame({"arch": arch, "seed": np.arange(n)}),
        {layout.key(): layout},
        list(range(stages + 1)),
        ["train_loss"],
        attrs=info,
        datasets=[data],
        overwrite=True,
    )
    w.write(list(range(n)), stored)
    return w.zoo(), rev, nxt


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """KNOWN fitted through `zoo fit` on 8 synthetic MLP trajectories (6 stages); 3 unseen ones to predict."""
    d = tmp_path_factory.mktemp("known")
    trajectory_zoo(str(d / "train.zarr"), 8, 6, seed=0)
    z_new, rev, nxt = trajectory_zoo(str(d / "new.zarr"), 3, 6, seed=1)
    rc = zoo_main(
        [
            "fit",
            "generator=known",
            f"zoo={d / 'train.zarr'}",
            f"out={d / 'run'}",
            "steps_per_epoch=30",
            "generator.max_epochs=4",
            "trainer.enable_progress_bar=false",
        ]
    )
    assert rc == 0
    return d, z_new, rev, nxt


@pytest.mark.slow
def test_learns_geometric_decay_next_step(fitted):
    """On unseen models the predicted next weights are >= 10x closer to the true next step than the last
    weights are (the no-change baseline); two recursive steps stay >= 5x closer than repeating the last."""
    d, z_new, rev, nxt = fitted
    g = generators.load(d / "run")
    layout = next(iter(z_new.layouts.values()))
    mask = layout.parameter_mask()
    pred = g.predict(rev)
    err, naive = (pred - nxt)[:, mask].abs().mean(), (rev[:, -1] - nxt)[:, mask].abs().mean()
    assert err < 0.1 * naive, (float(err), float(naive))
    assert torch.equal(pred[:, ~mask], rev[:, -1, ~mask])  # buffers are not predicted
    two = g.nowcast(rev, steps=2)
    assert two.shape == (3, 2, layout.size) and torch.equal(two[:, 0], pred)
    nxt2 = nxt + (nxt - rev[:, -1]) * RATE
    assert (two[:, 1] - nxt2)[:, mask].abs().mean() < 0.2 * (rev[:, -1] - nxt2)[:, mask].abs().mean()
    one = g.predict(rev[0])  # one model's [T, P]
    assert one.shape == (1, layout.size) and torch.allclose(one[0], pred[0], atol=1e-6)


@pytest.mark.slow
def test_save_load_same_predictions_and_kinds(fitted, tmp_path):
    d, _, rev, _ = fitted
    g = generators.load(d / "run")
    g.save(tmp_path / "copy")
    assert torch.equal(generators.load(tmp_path / "copy").predict(rev, steps=3), g.predict(rev, steps=3))
    layout = layout_of(build_model(arch_spec("cnn", (1, 8, 8), 10, 4, 1)), arch_spec("cnn", (1, 8, 8), 10, 4, 1))
    kinds = weight_kinds(layout)
    by_name = {e.name: {int(k) for k in kinds[e.offset : e.stop]} for e in layout.entries}
    assert by_name["features.0.weight"] == {KINDS.index("conv")} and by_name["head.weight"] == {KINDS.index("dense")}
    assert by_name["features.1.weight"] == {KINDS.index("norm")} and by_name["head.bias"] == {KINDS.index("bias")}
    assert by_name["features.1.running_mean"] == {-1}


@pytest.mark.slow
def test_nowcast_cli_writes_a_zoo_whose_modules_run(fitted, capsys):
    """`zoo nowcast --steps 2` on MLP and BatchNorm-CNN trajectories: same layouts, one checkpoint per step,
    BatchNorm statistics recomputed on the training split, modules that run on the data."""
    d, _, rev, _ = fitted
    trajectory_zoo(str(d / "cnn.zarr"), 2, 5, arch="cnn", seed=2)
    for src in ("new", "cnn"):
        out = d / f"nc-{src}.zarr"
        assert (
            zoo_main(["nowcast", str(d / "run"), "--zoo", str(d / f"{src}.zarr"), "--out", str(out), "--steps", "2"])
            == 0
        )
        err = capsys.readouterr().err
        assert ("note: KNOWN never trained on ['conv', 'norm']" in err) == (src == "cnn"), err
        z, z_src = zoo.open(out), zoo.open(d / f"{src}.zarr")
        assert z.layouts == z_src.layouts and z.checkpoint_epochs == [1, 2]
        assert z.models["source_model_id"].tolist() == list(range(len(z_src)))
        assert (z.models["status"] == "done").all() and z.models["test_acc"].notna().all()
        data = z.dataset()
        for i in range(len(z)):
            for c in (0, 1):
                out_ = z.module(i, checkpoint=c)(data.X_test[:5])
                assert out_.shape == (5, 10) and torch.isfinite(out_).all()
        if src == "cnn":
            layout = next(iter(z.layouts.values()))
            mean = layout["features.1.running_mean"]
            stored = z.weights([0], checkpoint=1)[0, mean.offset : mean.stop]
            assert not torch.equal(stored, z_src.weights([0], checkpoint=0)[0, mean.offset : mean.stop])
            again = zoo.recalibrate_bn(layout, z.weights([0], checkpoint=1), data)
            assert torch.allclose(again, z.weights([0], checkpoint=1), atol=1e-5)
    capsys.readouterr()


def _one_line_error(capsys, argv: list[str], match: str) -> None:
    assert zoo_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and match in err, err


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    trajectory_zoo(str(tmp_path / "plain.zarr"), 3, 6, attrs=False)
    trajectory_zoo(str(tmp_path / "short.zarr"), 3, 3)
    fit = ["fit", "generator=known", f"out={tmp_path / 'run'}", "trainer.enable_progress_bar=false"]
    _one_line_error(capsys, [*fit, f"zoo={tmp_path / 'plain.zarr'}"], "has no trajectories")
    _one_line_error(capsys, [*fit, f"zoo={tmp_path / 'short.zarr'}"], "needs at least 6")
    _one_line_error(capsys, [*fit, f"zoo={tmp_path / 'missing.zarr'}"], "missing.zarr")
    _one_line_error(
        capsys, [*fit, f"zoo={tmp_path / 'short.zarr'}", "generator.history=1"], "generator.history=1 is invalid"
    )
    _one_line_error(
        capsys, [*fit, f"zoo={tmp_path / 'short.zarr'}", "generator.hidden=0"], "generator.hidden=0 is invalid"
    )
    _one_line_error(capsys, [*fit, f"zoo={tmp_path / 'short.zarr'}", "generator.bound_quantile=2"], "bound_quantile")
    _one_line_error(capsys, [*fit, f"zoo={tmp_path / 'short.zarr'}", "generator.loss=l1"], "one of ['mae', 'mse']")
    _one_line_error(
        capsys,
        ["nowcast", str(tmp_path / "norun"), "--zoo", str(tmp_path / "short.zarr"), "--out", str(tmp_path / "o.zarr")],
        "no generator run",
    )


@pytest.mark.slow
def test_nowcast_bad_inputs_are_one_line_errors(fitted, tmp_path, capsys):
    d = fitted[0]
    trajectory_zoo(str(tmp_path / "plain.zarr"), 2, 6, attrs=False)
    trajectory_zoo(str(tmp_path / "short.zarr"), 2, 3)
    run = ["nowcast", str(d / "run"), "--out", str(tmp_path / "o.zarr")]
    _one_line_error(capsys, [*run, "--zoo", str(tmp_path / "plain.zarr")], "has no trajectories")
    _one_line_error(capsys, [*run, "--zoo", str(tmp_path / "short.zarr")], "too short")
    _one_line_error(capsys, [*run, "--zoo", str(d / "new.zarr"), "--steps", "0"], "--steps must be")
    _one_line_error(capsys, [*run, "--zoo", str(d / "new.zarr"), "--query", "nope >"], "bad --query")
    # a KNOWN run predicts weights: zoo sample says so in one line and writes nothing (issue 27)
    sample_out = tmp_path / "s.zarr"
    _one_line_error(capsys, ["sample", str(d / "run"), "-n", "2", "--out", str(sample_out)], "zoo nowcast applies it")
    assert not sample_out.exists()


@pytest.mark.slow
def test_same_config_and_seed_same_bits(fitted, tmp_path):
    """Two fits with one config and seed write identical weights; another seed does not."""
    d = fitted[0]
    files = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        generators.fit(
            "known",
            str(d / "train.zarr"),
            out=str(tmp_path / name),
            seed=seed,
            steps_per_epoch=5,
            max_epochs=1,
            **{"trainer.enable_progress_bar": False},
        )
        files.append((tmp_path / name / "model.safetensors").read_bytes())
    assert files[0] == files[1] and files[0] != files[2]


def test_killed_fit_is_refused_and_a_locked_run_is_not_written(tmp_path, monkeypatch, capsys):
    """KNOWN's run folder is owned like every fit's: a fit killed before its model is saved leaves INCOMPLETE and
    `zoo nowcast` refuses it (exit 2, one line); while the folder is locked, `zoo fit` into it changes nothing."""
    trajectory_zoo(str(tmp_path / "train.zarr"), 4, 6, seed=0)
    run = tmp_path / "run"
    fit = ["fit", "generator=known", f"zoo={tmp_path / 'train.zarr'}", f"out={run}", "steps_per_epoch=5"]
    fit += ["generator.max_epochs=1", "trainer.enable_progress_bar=false"]

    def killed(self, directory):
        raise RuntimeError("killed")

    with monkeypatch.context() as m:
        m.setattr(Known, "save", killed)
        with pytest.raises(RuntimeError, match="killed"):
            zoo_main(fit)
    capsys.readouterr()  # the crash's own report (Hydra names the failed job's overrides) is not nowcast's
    assert (run / "INCOMPLETE").is_file() and (run / "metrics.csv").is_file()
    nowcast = ["nowcast", str(run), "--zoo", str(tmp_path / "train.zarr"), "--out", str(tmp_path / "o.zarr")]
    _one_line_error(capsys, nowcast, "this run did not finish")
    assert zoo_main(fit) == 0 and not (run / "INCOMPLETE").exists()
    assert "the earlier fit was interrupted; restarting from scratch" in capsys.readouterr().err  # said, not silent
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    _one_line_error(capsys, fit, "holds a finished fit")  # a finished run is replaced only with overwrite=true
    with writing(str(run), "zoo fit"):
        _one_line_error(capsys, [*fit, "overwrite=true"], "is being written by zoo fit")
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before
    assert isinstance(generators.load(run), Known)


def test_nowcast_device_cpu_is_the_default_bits_and_cuda_is_refused(fitted, tmp_path, capsys):
    """``--device cpu`` (and ``device=torch.device("cpu")``) gives the default's bits; where torch sees no GPU,
    ``--device cuda`` is one line, exit 2, nothing written."""
    d, _, rev, _ = fitted
    g = generators.load(d / "run")
    assert torch.equal(g.nowcast(rev, steps=2), g.nowcast(rev, steps=2, device=torch.device("cpu")))
    outs = []
    for name, extra in (("plain", []), ("cpu", ["--device", "cpu"])):
        out = tmp_path / f"{name}.zarr"
        assert zoo_main(["nowcast", str(d / "run"), "--zoo", str(d / "new.zarr"), "--out", str(out), *extra]) == 0
        outs.append(zoo.open(out))
    ids = list(range(len(outs[0])))
    assert torch.equal(outs[0].weights(ids), outs[1].weights(ids))
    assert outs[0].models["test_acc"].equals(outs[1].models["test_acc"])
    if not torch.cuda.is_available():
        out = tmp_path / "gpu.zarr"
        _one_line_error(
            capsys,
            ["nowcast", str(d / "run"), "--zoo", str(d / "new.zarr"), "--out", str(out), "--device", "cuda"],
            "no CUDA GPU",
        )
        assert not out.exists()
