"""Git Re-Basin: specs derived from modules, function-preserving permutations, weight matching invariants."""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from zoo.arch import arch_spec, build_model
from zoo.datasets import load_dataset
from zoo.errors import ZooError
from zoo.layout import layout_of
from zoo.rebasin import (
    identity_perms,
    invert_perms,
    match_population,
    merge_many,
    permutation_spec,
    permute_state,
    permute_states,
    random_perms,
    weight_matching,
)
from zoo.rebasin.report import l2_distance, loss_barrier, top_singular_agreement

ARCHS = {
    "mlp": ("digits", dict(name="mlp", width=16, depth=2)),
    "cnn-bn": ("digits-image", dict(name="cnn", width=8, depth=2, batchnorm=True)),
    "cnn": ("digits-image", dict(name="cnn", width=8, depth=2, batchnorm=False)),
    "resnet": ("digits-image", dict(name="resnet", width=8, depth=2)),
}


@functools.cache
def _task(name):
    return load_dataset(name)


def trained(arch: str, seed: int, steps: int = 30):
    """A briefly trained model (full-batch Adam, train mode so BN running stats move) and its task."""
    model, task = _trained(arch, seed, steps)
    return copy.deepcopy(model), task


@functools.cache
def _trained(arch: str, seed: int, steps: int):
    task_name, kw = ARCHS[arch]
    task = _task(task_name)
    spec = arch_spec(input_shape=task.input_shape, num_outputs=task.num_outputs, **kw)
    torch.manual_seed(seed)
    model = build_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    X, y = task.X_train[:256], task.y_train[:256]
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    return model.eval(), task


def stack(states):
    return {k: torch.stack([s[k] for s in states]) for k in states[0]}


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_permuted_network_computes_same_logits(arch, seed):
    model, task = trained(arch, seed)
    spec = permutation_spec(model)
    state = model.state_dict()
    perms = random_perms(spec, torch.Generator().manual_seed(100 + seed))
    new = permute_state(spec, state, perms)
    assert any(not torch.equal(new[k], state[k]) for k in spec.matched)
    other = build_model(ARCHS_SPEC(arch, task))
    other.load_state_dict(new)
    other.eval()
    with torch.no_grad():
        torch.testing.assert_close(other(task.X_test), model(task.X_test), rtol=1e-4, atol=1e-5)
    for k, ax in spec.axes.items():  # BN buffers move with their channels; num_batches_tracked stays
        if k.endswith("running_mean") or k.endswith("running_var"):
            assert torch.equal(new[k], state[k][perms[ax[0]]])
        if k.endswith("num_batches_tracked"):
            assert ax == () and torch.equal(new[k], state[k])
    # the batched path permutes a stack exactly like one model at a time
    perms2 = random_perms(spec, torch.Generator().manual_seed(7), n=2)
    st = permute_states(spec, stack([state, new]), perms2)
    for i, s in enumerate([state, new]):
        one = permute_state(spec, s, {g: p[i] for g, p in perms2.items()})
        assert all(torch.equal(st[k][i], one[k]) for k in one)
    back = permute_state(spec, new, invert_perms(perms))
    assert all(torch.equal(back[k], state[k]) for k in state)


def ARCHS_SPEC(arch, task):
    return arch_spec(input_shape=task.input_shape, num_outputs=task.num_outputs, **ARCHS[arch][1])


def test_spec_fixes_input_and_output_and_shares_residual_stream():
    mlp = permutation_spec(build_model(arch_spec("mlp", [64], 10, 16, 3)))
    assert mlp.axes["layers.0.weight"][1] is None and mlp.axes["layers.6.weight"][0] is None
    assert mlp.axes["layers.6.bias"] == (None,) and len(mlp.groups) == 3
    res = permutation_spec(build_model(arch_spec("resnet", [1, 8, 8], 10, 8, 2)))
    stream = res.axes["stem.0.weight"][0]
    assert res.axes["stem.0.weight"][1] is None
    for b in range(2):
        assert res.axes[f"blocks.{b}.conv2.weight"][0] == stream
        assert res.axes[f"blocks.{b}.conv1.weight"][1] == stream
        assert res.axes[f"blocks.{b}.bn2.running_var"] == (stream,)
        assert res.axes[f"blocks.{b}.conv1.weight"][0] not in (stream, None)
    assert res.axes["head.weight"] == (None, stream)
    assert len(res.groups) == 3  # stream + one inner group per block
    cnn = permutation_spec(build_model(arch_spec("cnn", [1, 8, 8], 10, 8, 2)))
    assert cnn.axes["features.0.weight"] == (cnn.groups[0], None, None, None)
    assert cnn.axes["features.1.num_batches_tracked"] == ()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_matching_a_permuted_copy_recovers_it(arch):
    model, _ = trained(arch, 3, steps=10)
    spec = permutation_spec(model)
    ref = model.state_dict()
    copies = [permute_state(spec, ref, random_perms(spec, torch.Generator().manual_seed(s))) for s in range(3)]
    assert l2_distance(ref, copies[0], spec.matched) > 0.1
    one = weight_matching(spec, ref, copies[0], seed=0)
    back = permute_state(spec, copies[0], one.perms)
    assert l2_distance(ref, back, spec.matched) < 1e-5
    res = match_population(spec, ref, stack(copies), seed=0)
    aligned = permute_states(spec, stack(copies), res.perms)
    for i in range(3):
        assert l2_distance(ref, {k: v[i] for k, v in aligned.items()}, spec.matched) < 1e-5
        assert all(torch.equal(aligned[k][i], ref[k]) for k in ref)  # buffers included


def _true_objective(spec, ref, state):
    return float(sum((ref[k].double() * state[k].double()).sum() for k in spec.matched))


@pytest.mark.parametrize("arch", ["mlp", "cnn-bn", "resnet"])
def test_objective_never_decreases(arch):
    ref_model, _ = trained(arch, 0)
    others = [trained(arch, s)[0].state_dict() for s in (1, 2)]
    spec = permutation_spec(ref_model)
    ref = ref_model.state_dict()
    for seed, other in enumerate(others):
        r = weight_matching(spec, ref, other, seed=seed)
        h = r.history[:, 0]
        assert np.all(np.diff(h) >= -1e-9 * abs(h[0]) - 1e-12) and h[-1] > h[0]
        assert r.passes[0] >= 2  # the last pass is the one that finds no improvement
    # batched: the true objective after k passes, recomputed from the permuted weights, never falls
    prev = None
    for k in range(1, 6):
        res = match_population(spec, ref, stack(others), seed=0, max_iter=k)
        al = permute_states(spec, stack(others), res.perms)
        objs = np.array([_true_objective(spec, ref, {n: v[i] for n, v in al.items()}) for i in range(2)])
        np.testing.assert_allclose(objs, res.objective.numpy(), rtol=1e-9)
        if prev is not None:
            assert np.all(objs >= prev - 1e-6 * np.abs(prev))
        prev = objs
    assert np.all(np.diff(res.history, axis=0) >= 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_hidden_layer_matching_finds_the_exhaustive_optimum(seed):
    g = torch.Generator().manual_seed(seed)
    spec = permutation_spec(build_model(arch_spec("mlp", [5], 3, 6, 1)))
    a = {k: torch.randn(v, generator=g) for k, v in spec.shapes.items()}
    b = {k: torch.randn(v, generator=g) for k, v in spec.shapes.items()}
    (group,) = spec.groups
    best = max(
        _true_objective(spec, a, permute_state(spec, b, {group: torch.tensor(p)}))
        for p in itertools.permutations(range(6))
    )
    r = weight_matching(spec, a, b, seed=seed)
    got = _true_objective(spec, a, permute_state(spec, b, r.perms))
    assert got == pytest.approx(best, rel=1e-9)
    rb = match_population(spec, a, stack([b]), seed=seed)
    assert float(rb.objective[0]) == pytest.approx(best, rel=1e-6)


def test_batched_matches_pairwise_and_restarts_never_hurt():
    ref_model, _ = trained("mlp", 0)
    spec = permutation_spec(ref_model)
    ref = ref_model.state_dict()
    others = [trained("mlp", s)[0].state_dict() for s in (1, 2, 3)]
    res = match_population(spec, ref, stack(others), seed=4, chunk_size=2)  # two chunks
    for i, o in enumerate(others):
        one = weight_matching(spec, ref, o, seed=4)
        assert float(one.objective[0]) == pytest.approx(float(res.objective[i]), rel=1e-6)
        assert float(res.objective[i]) > float(res.initial[i])
    more = match_population(spec, ref, stack(others), seed=4, restarts=3)
    assert torch.all(more.objective >= res.objective - 1e-9 * res.objective.abs())


def test_alignment_lowers_distance_barrier_and_raises_singular_agreement():
    task = load_dataset("digits")
    spec_d = arch_spec("mlp", task.input_shape, task.num_outputs, 32, 1)
    states = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = build_model(spec_d)
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for _ in range(150):
            opt.zero_grad()
            F.cross_entropy(m(task.X_train), task.y_train).backward()
            opt.step()
        states.append({k: v.detach().clone() for k, v in m.state_dict().items()})
    spec = permutation_spec(m)
    r = weight_matching(spec, states[0], states[1], seed=0)
    aligned = permute_state(spec, states[1], r.perms)
    assert l2_distance(states[0], aligned, spec.matched) < l2_distance(states[0], states[1], spec.matched)
    assert top_singular_agreement(states[0], aligned, spec.matched) > top_singular_agreement(
        states[0], states[1], spec.matched
    )
    lay = layout_of(m, spec_d)
    before = loss_barrier(lay, states[0], states[1], task)["barrier"]
    after = loss_barrier(lay, states[0], aligned, task)["barrier"]
    assert after < before
    same = loss_barrier(lay, states[0], states[0], task)["barrier"]
    assert abs(same) < 1e-6


def test_recalibrated_bn_stats_match_data_statistics():
    model, task = trained("cnn-bn", 0)
    X = task.X_train[:300]
    lay = layout_of(model, arch_spec(input_shape=task.input_shape, num_outputs=task.num_outputs, **ARCHS["cnn-bn"][1]))
    w = zoo.recalibrate_bn(
        lay, lay.flatten(model.state_dict())[None], dataclasses.replace(task, X_train=X), batch_size=100
    )
    model.load_state_dict(lay.unflatten(w[0]))
    bn = model.features[1]
    with torch.no_grad():
        h = model.features[0](X)
    torch.testing.assert_close(bn.running_mean, h.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)


def test_merge_many_recovers_permuted_copies_and_never_increases_spread():
    model, _ = trained("mlp", 5, steps=10)
    spec = permutation_spec(model)
    ref = model.state_dict()
    copies = [permute_state(spec, ref, random_perms(spec, torch.Generator().manual_seed(s))) for s in range(4)]
    perms, merged, hist = merge_many(spec, stack(copies), seed=0)
    assert hist[-1] < 1e-8 * max(hist[0], 1)
    aligned = permute_states(spec, stack(copies), perms)
    assert l2_distance(merged, {k: v[0] for k, v in aligned.items()}, spec.matched) < 1e-5
    for i in range(1, 4):
        assert (
            l2_distance({k: v[0] for k, v in aligned.items()}, {k: v[i] for k, v in aligned.items()}, spec.matched)
            < 1e-5
        )
    trained_states = [trained("mlp", s)[0].state_dict() for s in (0, 1, 2)]
    _, _, hist = merge_many(spec, stack(trained_states), seed=1)
    assert all(b <= a * (1 + 1e-9) for a, b in zip(hist, hist[1:])) and hist[-1] < hist[0]


class _ResidualMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(64, 12)
        self.mid = nn.Linear(12, 12)
        self.out = nn.Linear(12, 10)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        return self.out(h + torch.tanh(self.mid(h)))


def test_self_coupled_residual_layer_keeps_function_and_monotone_objective():
    torch.manual_seed(0)
    a, b = _ResidualMLP(), _ResidualMLP()
    spec = permutation_spec(a)
    g = spec.axes["inp.weight"][0]
    assert spec.axes["mid.weight"] == (g, g) and spec.self_coupled(g)
    x = load_dataset("digits").X_test
    perms = random_perms(spec, torch.Generator().manual_seed(0))
    c = _ResidualMLP()
    c.load_state_dict(permute_state(spec, a.state_dict(), perms))
    with torch.no_grad():
        torch.testing.assert_close(c(x), a(x), rtol=1e-4, atol=1e-5)
    r = weight_matching(spec, a.state_dict(), b.state_dict(), seed=0)
    assert np.all(np.diff(r.history[:, 0]) >= 0)
    rb = match_population(spec, a.state_dict(), stack([b.state_dict()]), seed=0)
    assert float(rb.objective[0]) >= float(rb.initial[0])


def test_errors_are_clear():
    small = build_model(arch_spec("mlp", [64], 10, 8, 2))
    big = build_model(arch_spec("mlp", [64], 10, 16, 2))
    spec = permutation_spec(small)
    with pytest.raises(ZooError, match="mismatched layouts"):
        weight_matching(spec, small.state_dict(), big.state_dict())
    with pytest.raises(ZooError, match="mismatched layouts"):
        match_population(spec, small.state_dict(), stack([big.state_dict()]))
    other = build_model(arch_spec("cnn", [1, 8, 8], 10, 8, 2))
    with pytest.raises(ZooError, match="mismatched layouts"):
        permute_state(spec, other.state_dict(), identity_perms(spec))
    bad = {k: v.clone() for k, v in small.state_dict().items()}
    bad["layers.2.weight"][0, 0] = float("nan")
    with pytest.raises(ZooError, match="non-finite"):
        weight_matching(spec, small.state_dict(), bad)
    with pytest.raises(ZooError, match="non-finite"):
        match_population(spec, small.state_dict(), stack([small.state_dict(), bad]))
    with pytest.raises(ZooError, match="LSTM"):
        permutation_spec(nn.Sequential(nn.Linear(4, 8), nn.LSTM(8, 8)), torch.zeros(2, 4))
    with pytest.raises(ZooError, match="GroupNorm"):
        permutation_spec(nn.Sequential(nn.Linear(4, 8), nn.GroupNorm(2, 8), nn.Linear(8, 2)))
    with pytest.raises(ZooError, match="flatten"):
        permutation_spec(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 2)), torch.zeros(2, 1, 8, 8))
    with pytest.raises(ZooError, match="at least 2"):
        merge_many(spec, stack([small.state_dict()]))


def test_parallel_assignment_solves_give_the_same_result():
    spec = permutation_spec(build_model(arch_spec("mlp", [64], 10, 16, 2)))
    g = torch.Generator().manual_seed(0)
    ref = {k: torch.randn(v, generator=g) for k, v in spec.shapes.items()}
    pop = {k: torch.randn(12, *v, generator=g) for k, v in spec.shapes.items()}
    one = match_population(spec, ref, pop, seed=3, workers=1)
    two = match_population(spec, ref, pop, seed=3, workers=2)
    assert all(torch.equal(one.perms[k], two.perms[k]) for k in spec.groups)
    assert torch.all(one.objective > one.initial)


class _UserCNN(nn.Module):
    """A user's own net written the common way: functional pooling, view and a spatial mean."""

    def __init__(self, mean: bool):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 5, 3, padding=1)
        self.fc = nn.Linear(5, 10)
        self.mean = mean

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
        h = F.relu(self.c2(h))
        h = h.mean((2, 3)) if self.mean else F.adaptive_avg_pool2d(h, 1).view(h.size(0), -1)
        return self.fc(h)


@pytest.mark.parametrize("mean", [False, True])
def test_user_written_cnn_gets_a_spec_that_preserves_its_function(mean):
    torch.manual_seed(0)
    net = _UserCNN(mean)
    net.train()
    x = load_dataset("digits-image").X_test
    with torch.no_grad():
        net(x[:100])  # move the BN running stats away from their defaults
    net.eval()
    spec = permutation_spec(net, x[:2])
    assert len(spec.groups) == 2 and spec.axes["fc.weight"] == (None, spec.axes["c2.weight"][0])
    other = _UserCNN(mean)
    other.load_state_dict(permute_state(spec, net.state_dict(), random_perms(spec, torch.Generator().manual_seed(1))))
    with torch.no_grad():
        torch.testing.assert_close(other.eval()(x), net(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ZooError, match="mixing channels"):
        permutation_spec(_FlatHead(), x[:2])


class _FlatHead(nn.Module):
    """Conv features flattened with their positions into a Linear: channels and positions mix."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 36, 10)

    def forward(self, x):
        h = self.c(x)
        return self.fc(h.view(h.size(0), -1))
