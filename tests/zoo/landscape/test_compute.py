"""Landscape metrics against exact references: Hessian (torch.func.hessian), CKA invariances, mode connectivity."""

import math

import pytest
import torch
from torch.func import hessian, vmap

from tests.conftest import build_zoo
from zoo.arch import arch_spec, build_model
from zoo.datasets import load_dataset
from zoo.evaluate import predict
from zoo.landscape.cka import linear_cka
from zoo.landscape.compute import analysis_indices, compute_landscape, model_generators, resolve_config
from zoo.landscape.connectivity import bezier, mc_from_losses, mode_connectivity
from zoo.landscape.functional import FunctionalNet
from zoo.landscape.hessian import batched_hvp, exact_trace, hutchinson_trace, top_eigenvalue
from zoo.layout import layout_of


def _tiny_population(n=3, width=4, arch="mlp", seed=0):
    """n tiny trained-ish models of one layout on 'moons' (or digits-image for the CNN), stacked."""
    torch.manual_seed(seed)
    task = load_dataset("digits-image" if arch == "cnn" else "moons")
    spec = arch_spec(arch, task.input_shape, task.num_outputs, width, 1, "tanh", batchnorm=True)
    mods = []
    for i in range(n):
        torch.manual_seed(seed + i)
        m = build_model(spec)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        m.train()
        for _ in range(20):  # a few real training steps so the point is not the initialization
            idx = torch.randint(0, len(task.X_train), (64,))
            loss = torch.nn.functional.cross_entropy(m(task.X_train[idx]), task.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        mods.append(m.eval())
    lay = layout_of(mods[0], spec)
    w = torch.stack([lay.flatten(m.state_dict()) for m in mods])
    return task, lay, w


@pytest.mark.parametrize("arch", ["mlp", pytest.param("cnn", marks=pytest.mark.slow)])
def test_hessian_trace_and_top_eigenvalue_match_exact_hessian(arch):
    task, lay, w = _tiny_population(arch=arch, width=3)
    net = FunctionalNet.from_layout(lay)
    theta, bufs = net.split(w)
    x, y = task.X_train[:64], task.y_train[:64]
    loss = net.loss_fn(task.kind)
    hvp = batched_hvp(loss, in_dims=(0, None, None))
    exact = [hessian(loss)(theta[i], {k: v[i] for k, v in bufs.items()}, x, y) for i in range(len(theta))]
    exact_tr = torch.stack([h.trace() for h in exact])
    eig = [torch.linalg.eigvalsh((h + h.T) / 2) for h in exact]
    exact_top = torch.stack([e[e.abs().argmax()] for e in eig])

    tr_basis = exact_trace(hvp, theta, (bufs, x, y))
    assert torch.allclose(tr_basis, exact_tr, rtol=1e-4, atol=1e-5)

    # Hutchinson: unbiased; with 2000 probes the standard error is small against the trace
    samples = hutchinson_trace(hvp, theta, (bufs, x, y), probes=400, return_samples=True, chunk=50)
    est, se = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
    assert torch.all((est - exact_tr).abs() <= 4 * se + 1e-5), (est, exact_tr, se)

    lam, _ = top_eigenvalue(hvp, theta, (bufs, x, y), iters=300, tol=1e-6)
    assert torch.allclose(lam, exact_top, rtol=1e-3, atol=1e-4), (lam, exact_top)


def test_batchnorm_loss_uses_running_stats_so_it_is_a_function_of_weights():
    task, lay, w = _tiny_population(arch="cnn", n=2, width=3)
    net = FunctionalNet.from_layout(lay)
    theta, bufs = net.split(w)
    x, y = task.X_train[:32], task.y_train[:32]
    l_full = net.loss_fn(task.kind)(theta[0], {k: v[0] for k, v in bufs.items()}, x, y)
    l_half = torch.nn.functional.cross_entropy(
        net.forward(theta[0], {k: v[0] for k, v in bufs.items()}, x[:16]), y[:16], reduction="sum"
    )
    l_rest = torch.nn.functional.cross_entropy(
        net.forward(theta[0], {k: v[0] for k, v in bufs.items()}, x[16:]), y[16:], reduction="sum"
    )
    # eval-mode BN: per-example outputs do not depend on which other examples share the batch
    assert torch.allclose(l_full * 32, l_half + l_rest, rtol=1e-5)
    module = lay.build()
    module.load_state_dict(lay.unflatten(w[0]))
    module.eval()
    with torch.no_grad():
        ref = torch.nn.functional.cross_entropy(module(x), y)
    assert torch.allclose(l_full, ref, rtol=1e-5)
    # the differentiable loss and the batched evaluator's forward are the same function of the weights
    batched = torch.nn.functional.cross_entropy(predict(lay, w, x)[0], y)
    assert torch.allclose(batched, ref, rtol=1e-5)


def test_cka_invariances():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 10, generator=g)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g))
    assert torch.allclose(linear_cka(x, x @ q), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(linear_cka(x, 3.7 * x), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(linear_cka(x, x + 5.0), torch.tensor(1.0), atol=1e-5)  # centring
    other = torch.randn(200, 10, generator=g)
    assert linear_cka(x, other) < 0.2
    batched = linear_cka(torch.stack([x, x]), torch.stack([x @ q, other]))
    assert batched.shape == (2,) and abs(batched[0] - 1) < 1e-5 and batched[1] < 0.2


def test_mc_formula_on_profiles():
    t = torch.linspace(0, 1, 11)
    barrier = 1.0 + 2.0 * torch.sin(math.pi * t)  # ends 1, peak 3 -> mc = -2
    valley = 1.0 - 0.5 * torch.sin(math.pi * t)  # dip to 0.5 -> mc = +0.5
    flat = torch.full_like(t, 0.3)
    mc = mc_from_losses(torch.stack([barrier, valley, flat]))
    assert torch.allclose(mc, torch.tensor([-2.0, 0.5, 0.0]), atol=1e-6)


def _quad_barrier_loss(theta, x, y):
    """A double well in a (minima near a = +-1) plus a bump at (0, -0.5) that a curve can bend around."""
    a, b = theta[0], theta[1]
    return (a**2 - 1) ** 2 + 4 * torch.exp(-((b + 0.5) ** 2)) * torch.exp(-4 * a**2) + 0.0 * x.sum() * y.sum()


def test_mode_connectivity_identical_endpoints_and_barrier():
    x, y = torch.zeros(8, 1), torch.zeros(8)
    w0 = torch.tensor([[-1.0, 0.0], [-1.0, 0.0]])
    w1 = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    out = mode_connectivity(_quad_barrier_loss, w0, w1, x, y, x, y, k=21, steps=0)
    assert out["mc"][0].abs() < 1e-6 and out["mc_linear"][0].abs() < 1e-6  # identical ends: flat profile
    assert out["mc_linear"][1] < -3.0  # the straight line crosses the bump
    # a fitted curve bends around the bump and lowers the barrier, but the double well keeps one
    fit = mode_connectivity(_quad_barrier_loss, w0, w1, x, y, x, y, k=21, steps=300, lr=0.05)
    assert fit["mc"][1] > fit["mc_linear"][1] + 1.0 and fit["mc"][1] < 0
    pts = bezier(w0, fit["control"], w1, torch.tensor(0.0))
    assert torch.equal(pts, w0)


def test_mode_connectivity_positive_for_undertrained_ends():
    """Two points high on the sides of a bowl: the curve through the bottom has lower loss than the ends."""
    x, y = torch.zeros(4, 1), torch.zeros(4)

    def bowl(th: torch.Tensor, x_: torch.Tensor, y_: torch.Tensor) -> torch.Tensor:
        return (th**2).sum() + 0.0 * x_.sum()

    w0, w1 = torch.tensor([[2.0, 2.0]]), torch.tensor([[2.0, -2.0]])
    out = mode_connectivity(bowl, w0, w1, x, y, x, y, k=21, steps=300, lr=0.1)
    assert out["mc"][0] > 1.0 and out["mc_linear"][0] > 1.0
    # identical endpoints at the minimum: the fitted curve stays there and mc is exactly 0
    zero = torch.zeros(1, 2)
    same = mode_connectivity(bowl, zero, zero, x, y, x, y, k=21, steps=50, lr=0.1)
    assert same["mc"].abs().max() < 1e-7 and same["curve"].abs().max() < 1e-7


def test_connectivity_between_trained_mlps_batches_over_pairs():
    task, lay, w = _tiny_population(n=3, width=8)
    net = FunctionalNet.from_layout(lay, batch_stats=True)
    theta, _ = net.split(w)

    def loss(th: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(net.forward(th, {}, x), y)

    out = mode_connectivity(
        loss,
        theta[[0, 1]],
        theta[[1, 2]],
        task.X_train,
        task.y_train,
        task.X_train[:256],
        task.y_train[:256],
        k=5,
        steps=20,
    )
    assert out["curve"].shape == (2, 5) and torch.isfinite(out["mc"]).all()
    ends = vmap(loss, in_dims=(0, None, None))(theta, task.X_train[:256], task.y_train[:256])
    assert torch.allclose(out["curve"][:, 0], ends[[0, 1]], rtol=1e-5)
    assert torch.allclose(out["curve"][:, -1], ends[[1, 2]], rtol=1e-5)


def test_default_config_top_eigenvalue_and_trace_match_exact_hessian_on_a_zoo(tmp_path):
    """At the default config every model of a small trained zoo gets its top Hessian eigenvalue within 5% of
    the exact Hessian's, and its Hutchinson trace within 3 of its own standard errors (probes' spread)."""
    z = build_zoo(str(tmp_path / "h.zarr"), "recipe.seeds=4")  # 8 digits MLPs, widths 8 and 16
    cfg = resolve_config()
    table = compute_landscape(z, cfg, write=False).set_index("model_id")
    data = z.dataset()
    idx = analysis_indices(len(data.X_train), cfg["batches"], cfg["batch_size"], cfg["seed"]).reshape(-1)
    x, y = data.X_train[idx], data.y_train[idx]
    for layout_key, group in z.models.groupby("layout"):
        net = FunctionalNet.from_layout(z.layouts[layout_key])
        loss = net.loss_fn(data.kind)
        ids = group.model_id.astype(int).tolist()
        theta, bufs = net.split(z.weights(ids, checkpoint=cfg["checkpoint"]))
        hvp = batched_hvp(loss, in_dims=(0, None, None))
        g = model_generators(cfg["seed"] + 1, ids)  # the probes compute_landscape drew
        samples = hutchinson_trace(hvp, theta, (bufs, x, y), cfg["probes"], g, return_samples=True)
        se = samples.std(0) / math.sqrt(samples.shape[0])
        for k, i in enumerate(ids):
            h = hessian(loss)(theta[k], {n: v[k] for n, v in bufs.items()}, x, y)
            eig = torch.linalg.eigvalsh((h + h.T).double() / 2)
            top, est = eig[eig.abs().argmax()].item(), table.loc[i, "hessian_top_eigenvalue"]
            assert abs(est - top) <= 0.05 * abs(top), (i, est, top)
            tr = h.double().trace().item()
            assert table.loc[i, "hessian_trace"] == pytest.approx(samples[:, k].mean().item(), rel=1e-6)
            assert abs(table.loc[i, "hessian_trace"] - tr) <= 3 * se[k].item(), (i, table.loc[i, "hessian_trace"], tr)
