"""``zoo align`` end to end on small zoos built in the test: canonical weights keep every model's function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import zoo
from zoo.app.config import compose
from zoo.commands.main import main as zoo_main
from zoo.errors import ZooError
from zoo.rebasin.align import align_zoo, choose_reference


def _build(path, *overrides):
    return zoo.build(compose("build", [f"out={path}", "recipe=tiny", "progress=false", *overrides]))


@pytest.fixture(scope="module")
def mlp_zoo(tmp_path_factory):
    """6 digits MLPs of one width (3 seeds x 2 learning rates, one of them divergent), checkpoints 0, 1, 3."""
    path = tmp_path_factory.mktemp("align") / "mlp.zarr"
    _build(path, "recipe.widths=[16]", "recipe.seeds=3", "recipe.learning_rates=[0.05,1e30]")
    return str(path)


def _same_function(z, model_id, checkpoint, X):
    with torch.no_grad():
        raw = z.module(model_id, checkpoint)(X)
        can = z.module(model_id, checkpoint, canonical=True)(X)
    torch.testing.assert_close(can, raw, rtol=1e-4, atol=1e-5)


def test_zoo_align_cli_writes_function_preserving_canonical_weights(mlp_zoo, capsys, monkeypatch):
    monkeypatch.setattr("zoo.rebasin.align.CHUNK_MODELS", 2)  # several read/align/write chunks
    assert zoo_main(["align", mlp_zoo, "--pairs", "2"]) == 0
    out = capsys.readouterr().out
    assert "L2 to reference" in out and "loss barrier" in out
    z = zoo.open(mlp_zoo)
    models = z.models
    done = models[models["status"] == "done"]
    assert len(done) >= 3
    X = z.dataset().X_test[:64]
    ref = choose_reference(models)
    assert ref == int(done.sort_values(["train_acc", "model_id"], ascending=[False, True])["model_id"].iloc[0])
    shuffled = models.assign(
        test_acc=models["test_acc"].sample(frac=1, random_state=0).to_numpy(), test_loss=-models["test_loss"]
    )
    assert choose_reference(shuffled) == ref  # the test split never takes part in the choice
    for i in done["model_id"]:
        for c in range(len(z.checkpoint_epochs)):
            _same_function(z, int(i), c, X)
    torch.testing.assert_close(z.weights([ref], canonical=True), z.weights([ref]))
    table = z.table("alignment")
    assert set(table["model_id"]) == set(done["model_id"])
    others = table[table["model_id"] != ref]
    assert np.all(others["l2_after"] <= others["l2_before"] + 1e-6)
    assert others["barrier_before"].notna().sum() == min(2, len(others))
    summary = z.table("alignment_summary")
    assert len(summary) == 1 and int(summary["reference_id"][0]) == ref


def test_diverged_models_are_skipped_or_aligned_where_finite(mlp_zoo):
    z = zoo.open(mlp_zoo)
    models = z.models
    div = models[models["status"] == "diverged"]
    assert len(div) > 0, "lr=1e30 should diverge"
    _, summary = align_zoo(z, pairs=0, checkpoint="all")
    assert summary["groups"][0]["skipped_diverged"] == len(div)
    i = int(div["model_id"].iloc[0])
    assert torch.isnan(z.weights([i], checkpoint=None, canonical=True)).all()
    _, summary = align_zoo(z, pairs=0, checkpoint="all", diverged="finite")
    assert summary["groups"][0]["skipped_diverged"] == 0
    last = int(div["model_id"].map(dict(zip(models["model_id"], models["last_checkpoint"]))).iloc[0])
    traj = z.weights([i], checkpoint=None, canonical=True)[0]
    assert torch.isfinite(traj[: last + 1]).all() and torch.isnan(traj[last + 1 :]).all()
    X = z.dataset().X_test[:64]
    for c in range(last + 1):
        _same_function(z, i, c, X)


def test_align_last_checkpoint_trajectory_mode_and_explicit_reference(tmp_path):
    path = tmp_path / "two.zarr"
    _build(path, "recipe.widths=[8]", "recipe.seeds=3")
    z = zoo.open(str(path))
    _, s = align_zoo(z, reference=2, checkpoint="last", pairs=1)
    assert s["groups"][0]["reference_id"] == 2 and s["checkpoint"] == [2]
    assert torch.isfinite(z.weights([0, 1, 2], checkpoint=2, canonical=True)).all()
    with pytest.raises(ZooError, match="not written"):
        z.weights([0], checkpoint=0, canonical=True)
    _, s = align_zoo(z, checkpoint="1", pairs=0)  # an index, as the CLI passes it
    assert s["checkpoint"] == [1] and torch.isfinite(z.weights([0, 1, 2], checkpoint=1, canonical=True)).all()
    with pytest.raises(ZooError, match="not written"):
        z.weights([0], checkpoint=0, canonical=True)
    _, s = align_zoo(z, reference="auto", checkpoint="all", trajectory=True, pairs=0)
    X = z.dataset().X_test[:32]
    for c in range(3):
        _same_function(z, 0, c, X)
    # trajectory mode: the first layer's rows are permuted the same way at every checkpoint
    layout = z.layout(0)
    raw = z.weights([0], checkpoint=None)[0]
    can = z.weights([0], checkpoint=None, canonical=True)[0]
    w_raw = layout.unflatten(raw[-1])["layers.0.weight"]
    w_can = layout.unflatten(can[-1])["layers.0.weight"]
    perm = [int((w_raw - row).abs().sum(1).argmin()) for row in w_can]
    for c in range(3):
        torch.testing.assert_close(
            layout.unflatten(can[c])["layers.0.weight"], layout.unflatten(raw[c])["layers.0.weight"][perm]
        )


def test_align_batchnorm_cnn_zoo(tmp_path):
    path = tmp_path / "cnn.zarr"
    _build(
        path,
        "recipe.arch=cnn",
        "recipe.dataset=digits-image",
        "recipe.widths=[4]",
        "recipe.seeds=2",
        "recipe.epochs=1",
        "recipe.checkpoint_epochs=[0,1]",
    )
    assert zoo_main(["align", str(path), "--pairs", "1", "--json"]) == 0
    z = zoo.open(str(path))
    X = z.dataset().X_test[:64]
    for i in z.models["model_id"]:
        _same_function(z, int(i), -1, X)
    t = z.table("alignment")
    assert t["barrier_after"].notna().sum() == 1
    assert t["barrier_repair"].notna().sum() == 1  # REPAIR is measured by default on BatchNorm layouts
    assert bool(z.table("alignment_summary")["repair"].iloc[0])


def test_align_errors(mlp_zoo, tmp_path, capsys):
    z = zoo.open(mlp_zoo)
    div = int(z.models.loc[z.models["status"] == "diverged", "model_id"].iloc[0])
    with pytest.raises(ZooError, match="diverged; pick a done model"):
        align_zoo(z, reference=div, write=False)
    with pytest.raises(ZooError, match="out of range"):
        align_zoo(z, reference=99, write=False)
    with pytest.raises(ZooError, match="--checkpoint"):
        align_zoo(z, checkpoint="first", write=False)
    with pytest.raises(ZooError, match="out of range"):
        align_zoo(z, checkpoint=7, write=False)
    assert zoo_main(["align", str(tmp_path / "missing.zarr")]) == 2
    assert zoo_main(["align", mlp_zoo, "--reference", "abc"]) == 2
    assert "error" in capsys.readouterr().err


def test_align_flat_canonicalizes_vectors_outside_the_store(mlp_zoo):
    from zoo.rebasin import permute_flat, random_perms, spec_for_layout
    from zoo.rebasin.align import align_flat

    z = zoo.open(mlp_zoo)
    layout = z.layout(0)
    ref = z.weights([0])[0]
    spec = spec_for_layout(layout)
    shuffled = permute_flat(
        spec, layout, ref.expand(3, -1).clone(), random_perms(spec, torch.Generator().manual_seed(0), n=3)
    )
    assert not torch.equal(shuffled[0], ref)
    aligned, res = align_flat(layout, ref, shuffled)
    torch.testing.assert_close(aligned, ref.expand(3, -1))
    with pytest.raises(ZooError, match="align_flat takes"):
        align_flat(layout, ref, ref)


def test_one_reference_rule_on_training_metrics_for_align_generators_and_diagnose(tmp_path):
    """zoo align, a generator's training data and zoo diagnose put a zoo in the frame of the same model."""
    from generators.diagnose.sets import load_train
    from generators.training_models import load_training_models

    path = tmp_path / "unaligned.zarr"
    _build(path, "recipe.widths=[16]", "recipe.seeds=4")
    z = zoo.open(path)
    models = z.models
    best = choose_reference(models)
    done = models[models["status"] == "done"]
    assert done.loc[done["model_id"] == best, "train_acc"].item() == done["train_acc"].max()
    assert load_train(z, canonical="align").reference_id == best
    src = load_training_models(str(path), {"canonical": "auto", "val_fraction": 0.25}, seed=0)
    assert src.info["canonical"] == "aligned"
    assert src.info["reference_id"] == choose_reference(models[models["model_id"].isin(src.info["train_ids"])])


def test_align_device_moves_the_barrier_evaluations_and_refuses_a_missing_gpu(mlp_zoo, tmp_path, capsys, monkeypatch):
    """``--device`` (the spelling every command shares): the loss barriers are evaluated on that device, every tensor
    of theirs there (checked on the meta device: no GPU here); the matching stays on the CPU, so the weights do not
    depend on it. ``--device cuda`` without a GPU is one line before the zoo is touched."""
    import zoo.rebasin.align as align_module
    from zoo.rebasin.report import loss_barriers

    seen = []

    def on_meta(layout, a, b, dataset, steps, **kw):
        out = loss_barriers(layout, a, b, dataset, steps, **kw)  # the real evaluation, on the endpoints' device
        seen.append((a.device.type, b.device.type, {k: v.device.type for k, v in out.items()}))
        return {"barrier": torch.zeros(len(a), dtype=torch.float64)}  # meta holds no numbers to report

    monkeypatch.setattr(align_module, "loss_barriers", on_meta)
    table, _ = align_zoo(zoo.open(mlp_zoo), device=torch.device("meta"), pairs=2, write=False, repair=False)
    on_device = dict.fromkeys(("barrier", "t_max", "losses", "ts"), "meta")
    assert seen and all(d == ("meta", "meta", on_device) for d in seen)
    assert table["l2_after"].notna().any()  # the matching itself ran (on the CPU)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    copy = tmp_path / "copy.zarr"
    import shutil

    shutil.copytree(mlp_zoo, copy)
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    for device in ("--device=cuda", "device=cuda"):  # both spellings of the shared option
        assert zoo_main(["align", str(copy), device]) == 2
        err = capsys.readouterr().err
        assert "torch sees no CUDA GPU" in err and err.count("\n") == 1
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before
