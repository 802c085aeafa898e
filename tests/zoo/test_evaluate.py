"""zoo.evaluate / predict / recalibrate_bn: the batched evaluator equals Zoo.module(i) one model at a time on
every architecture, and BatchNorm recalibration reads the training split only."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import zoo
from tests.conftest import build_zoo, float32_sum_atol
from zoo import ZooError

ARCHS = {
    "mlp": [],  # the tiny recipe: two widths -> two layouts
    "cnn-bn": ["recipe.arch=cnn", "recipe.dataset=digits-image", "recipe.widths=[4]", "recipe.depths=[2]"],
    "cnn-nobn": [
        "recipe.arch=cnn",
        "recipe.dataset=digits-image",
        "recipe.widths=[4]",
        "recipe.depths=[2]",
        "recipe.batchnorm=false",
    ],
    "resnet": [
        "recipe.arch=resnet",
        "recipe.dataset=digits-image",
        "recipe.widths=[4]",
        "recipe.depths=[1]",
        "recipe.optimizer=adam",
        "recipe.learning_rates=[0.01]",
    ],
    "sine": [
        "recipe.dataset=sine-regression",
        "recipe.optimizer=adam",
        "recipe.learning_rates=[0.01]",
        "recipe.batch_sizes=[32]",
    ],
}


@pytest.fixture(scope="module", params=list(ARCHS))
def arch_zoo(request, tmp_path_factory):
    """(name, zoo) of small really-trained models (2 seeds) for each architecture and the regression dataset."""
    name = request.param
    return name, build_zoo(str(tmp_path_factory.mktemp("ev") / f"{name}.zarr"), *ARCHS[name])


def _groups(z: zoo.Zoo):
    """(layout, model ids, weights [n, P]) per layout of the zoo's done models."""
    df = z.models[z.models.status == "done"]
    for key, g in df.groupby("layout"):
        ids = g.model_id.astype(int).tolist()
        yield z.layouts[key], ids, z.weights(ids)


def _module_metrics(module: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, kind: str) -> dict[str, float]:
    """The reference: one nn.Module in eval mode on the whole split at once."""
    with torch.no_grad():
        out = module.eval()(X)
    if kind == "classification":
        return {"loss": F.cross_entropy(out, y).item(), "acc": (out.argmax(1) == y).double().mean().item()}
    sse = ((out - y) ** 2).double().sum()
    return {"loss": ((out - y) ** 2).mean().item(), "r2": (1 - sse / ((y - y.mean(0)) ** 2).double().sum()).item()}


def test_evaluate_equals_zoo_module_and_stored_metrics(arch_zoo):
    name, z = arch_zoo
    data = z.dataset()
    metrics = z.metrics
    last = metrics[metrics.checkpoint == metrics.checkpoint.max()].set_index("model_id")
    for layout, ids, W in _groups(z):
        for split in ("train", "test"):
            X, y = (data.X_train, data.y_train) if split == "train" else (data.X_test, data.y_test)
            res = zoo.evaluate(layout, W, data, split)
            assert set(res) == ({"loss", "acc"} if data.kind == "classification" else {"loss", "r2"}), name
            assert all(v.shape == (len(ids),) for v in res.values())
            # memory bound far below one model's activations on the split: chunks of models and of samples
            tiny = zoo.evaluate(layout, W, data, split, memory_floats=1000)
            for k, i in enumerate(ids):
                ref = _module_metrics(z.module(i), X, y, data.kind)
                assert res["loss"][k].item() == pytest.approx(ref["loss"], rel=1e-5, abs=1e-7), (name, split, i)
                assert tiny["loss"][k].item() == pytest.approx(ref["loss"], rel=1e-5, abs=1e-7)
                # stored checkpoint metrics come from the same forward and reduction
                assert res["loss"][k].item() == pytest.approx(last.loc[i, f"{split}_loss"], rel=1e-6)
                if data.kind == "classification":
                    assert res["acc"][k].item() == ref["acc"] == last.loc[i, f"{split}_acc"], (name, split, i)
                    assert tiny["acc"][k].item() == ref["acc"]
                else:
                    assert res["r2"][k].item() == pytest.approx(ref["r2"], rel=1e-5, abs=1e-6)
                    assert res["r2"][k].item() == pytest.approx(last.loc[i, f"{split}_r2"], rel=1e-6, abs=1e-9)
                    assert res["r2"][k].item() > 0.5  # trained: the sine is mostly fitted


def test_predict_equals_module_outputs(arch_zoo):
    name, z = arch_zoo
    X = z.dataset().X_test[:50]
    for layout, ids, W in _groups(z):
        out = zoo.predict(layout, W, X)
        small = zoo.predict(layout, W, X, memory_floats=500)
        assert out.shape == (len(ids), 50, z.dataset().num_outputs)
        for k, i in enumerate(ids):
            with torch.no_grad():
                ref = z.module(i)(X)
            torch.testing.assert_close(out[k], ref, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(small[k], ref, rtol=1e-5, atol=1e-6)


def _reference_recompute(module: torch.nn.Module, X: torch.Tensor, batch_size: int) -> torch.nn.Module:
    """One nn.Module: reset every BatchNorm and run X in train mode with momentum=None (cumulative average)."""
    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    with torch.no_grad():
        for i in range(0, len(X), batch_size):
            module(X[i : i + batch_size])
    return module.eval()


def _assert_statistics_close(layout: zoo.Layout, got: torch.Tensor, ref: torch.Tensor, n: int) -> None:
    """Flat weights [m, P]: parameters and batch counts bit-equal; each model's running statistics equal to
    float32 rounding of sums of n terms at the magnitude of that BatchNorm's statistics (mean and var together)."""
    assert got.shape == ref.shape
    for g, r in zip(got, ref):
        a, b = layout.unflatten(g), layout.unflatten(r)
        for e in layout.entries:
            if e.kind == "parameter" or e.name.endswith("num_batches_tracked"):
                assert torch.equal(a[e.name], b[e.name]), e.name  # copied or counted, never summed
                continue
            bn = e.name.rsplit(".", 1)[0]
            scale = max(b[f"{bn}.running_mean"].abs().max().item(), b[f"{bn}.running_var"].abs().max().item())
            atol = float32_sum_atol(scale, n)
            torch.testing.assert_close(a[e.name], b[e.name], rtol=0, atol=atol, msg=lambda m, k=e.name: f"{k}: {m}")


@pytest.mark.parametrize("name", ["cnn-bn", "resnet"])
def test_recalibration_equals_per_module_recompute(name, tmp_path):
    z = build_zoo(str(tmp_path / f"{name}.zarr"), *ARCHS[name])
    data = z.dataset()
    ((layout, ids, W),) = _groups(z)
    new = zoo.recalibrate_bn(layout, W, data, batch_size=200)
    stats = [e for e in layout.entries if e.kind == "buffer"]
    assert stats and all(
        e.name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked") for e in stats
    )
    # each BatchNorm statistic sums one channel over a batch: 200 images x 8x8 pixels
    n = 200 * data.X_train[0, 0].numel()
    # the same call twice is the same computation: bit for bit
    torch.testing.assert_close(zoo.recalibrate_bn(layout, W, data, batch_size=200), new, rtol=0, atol=0)
    # one model per chunk is a different batch shape (other kernels, other summation order): float32 rounding
    one_at_a_time = zoo.recalibrate_bn(layout, W, data, batch_size=200, memory_floats=1)
    _assert_statistics_close(layout, one_at_a_time, new, n)
    mean = next(e for e in stats if e.name.endswith("running_mean"))
    off = new.clone()
    off[0, mean.offset] += 1e-4  # a real error in one statistic fails the check
    with pytest.raises(AssertionError, match="running_mean"):
        _assert_statistics_close(layout, off, one_at_a_time, n)
    for k, i in enumerate(ids):
        ref = _reference_recompute(z.module(i), data.X_train, 200)
        _assert_statistics_close(layout, new[k : k + 1], layout.flatten(ref.state_dict())[None], n)
        assert int(layout.unflatten(new[k])[stats[-1].name]) == -(-len(data.X_train) // 200)  # batches seen


def test_recalibration_reads_training_split_only_and_repairs_corrupted_statistics(tmp_path):
    z = build_zoo(
        str(tmp_path / "bn.zarr"),
        "recipe.arch=cnn",
        "recipe.dataset=digits-image",
        "recipe.widths=[8]",
        "recipe.depths=[2]",
        "recipe.optimizer=adam",
        "recipe.learning_rates=[0.01]",
        "recipe.epochs=6",
        "recipe.checkpoint_epochs=[0,6]",
    )  # trained well above chance (test accuracy ~0.63)
    data = z.dataset()
    ((layout, ids, W),) = _groups(z)
    good = zoo.evaluate(layout, W, data, "test")
    bad = W.clone()
    g = torch.Generator().manual_seed(0)
    for e in layout.entries:
        if e.name.endswith("running_mean"):
            bad[:, e.offset : e.stop] += 3 * torch.randn(len(ids), e.numel, generator=g)
        elif e.name.endswith("running_var"):
            bad[:, e.offset : e.stop] *= 25.0
    broken = zoo.evaluate(layout, bad, data, "test")
    assert (broken["acc"] < good["acc"] - 0.2).all()
    fixed = zoo.evaluate(layout, bad, data, "test", recalibrate_bn=True)
    assert (fixed["acc"] > good["acc"] - 0.05).all(), (good, fixed)
    # the test split never enters the statistics: scrambling it leaves the recalibrated weights bit-equal
    other = dataclasses.replace(data, X_test=torch.randn_like(data.X_test) * 5, y_test=data.y_test.flip(0))
    torch.testing.assert_close(
        zoo.recalibrate_bn(layout, bad, other), zoo.recalibrate_bn(layout, bad, data), rtol=0, atol=0
    )
    # ... while the training split does
    shifted = dataclasses.replace(data, X_train=data.X_train + 1.0)
    assert not torch.equal(zoo.recalibrate_bn(layout, bad, shifted), zoo.recalibrate_bn(layout, bad, data))


def test_layout_without_batchnorm_is_returned_unchanged(tiny_zoo):
    data = tiny_zoo.dataset()
    layout, ids, W = next(_groups(tiny_zoo))
    assert zoo.recalibrate_bn(layout, W, data) is W
    a = zoo.evaluate(layout, W, data, "test", recalibrate_bn=True)
    b = zoo.evaluate(layout, W, data, "test")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_inputs_are_one_line_errors(tiny_zoo):
    data = tiny_zoo.dataset()
    layout, ids, W = next(_groups(tiny_zoo))
    with pytest.raises(ZooError, match="split must be one of"):
        zoo.evaluate(layout, W, data, "val")
    with pytest.raises(ZooError, match="do not fit the layout"):
        zoo.evaluate(layout, W[:, :-1], data)
    with pytest.raises(ZooError, match="do not fit the layout"):
        zoo.predict(layout, W[0], data.X_test)
    empty = zoo.evaluate(layout, W[:0], data)
    assert empty["loss"].shape == (0,) and empty["acc"].shape == (0,)


def test_non_finite_weights_give_nan_not_a_fake_accuracy(tiny_zoo):
    data = tiny_zoo.dataset()
    layout, ids, W = next(_groups(tiny_zoo))
    W = W.clone()
    W[0] = float("nan")
    res = zoo.evaluate(layout, W, data)
    assert np.isnan(res["loss"][0].item()) and np.isnan(res["acc"][0].item())
    assert torch.isfinite(res["acc"][1:]).all()


@pytest.mark.parametrize(
    "n,N,act,mem",
    [
        (1000, 360, 74, 50_000_000),
        (1000, 1437, 3090, 50_000_000),
        (100_000, 360, 800, 50_000_000),
        (3, 5, 7000, 1000),
        (7, 300, 26, 1000),
    ],
)
def test_chunks_respect_the_memory_bound(n, N, act, mem):
    from zoo.evaluate import _chunk_sizes

    models, samples = _chunk_sizes(n, N, act, mem)
    assert 1 <= models <= n and 1 <= samples <= N
    assert models * samples * act <= max(mem, act)  # one sample of one model is the least a forward can do
    if n * N * act <= mem:
        assert (models, samples) == (n, N)  # everything fits: one forward
