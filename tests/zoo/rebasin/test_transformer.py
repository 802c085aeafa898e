"""Transformers in the zoo: the stacked forward, the traced attention symmetries, weight matching, ``zoo align``."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.app.config import compose
from zoo.arch import arch_spec, build_model
from zoo.datasets.base import Dataset
from zoo.errors import ZooError
from zoo.forward import population_forward
from zoo.layout import layout_of
from zoo.rebasin import (
    activation_matching,
    loss_barriers,
    match_population,
    permute_flat,
    permute_state,
    permute_states,
    random_perms,
    spec_for_layout,
    weight_matching,
)
from zoo.rebasin.matching import _similarity

VIT = arch_spec("vit", [1, 8, 8], 10, 16, 2, "gelu", heads=4, patch=2)
TOKENS = arch_spec("transformer", [62], 31, 8, 1, "relu", heads=2, mlp_ratio=4.0)


def _spec(arch):
    model = build_model(arch)
    return model, spec_for_layout(layout_of(model, arch))


@pytest.mark.parametrize("arch", [VIT, TOKENS], ids=["vit", "tokens"])
def test_stacked_forward_is_each_models_function(arch):
    torch.manual_seed(0)
    models = [build_model(arch) for _ in range(3)]
    params = {k: torch.stack([dict(m.named_parameters())[k] for m in models]) for k, _ in models[0].named_parameters()}
    x = torch.rand(5, *arch["input_shape"])
    own = torch.rand(3, 5, *arch["input_shape"])
    with torch.no_grad():
        shared = population_forward(models[0], params, {}, x)
        each = population_forward(models[0], params, {}, own, shared_input=False)
        for j, m in enumerate(models):
            torch.testing.assert_close(shared[j], m(x), atol=1e-5, rtol=0)
            torch.testing.assert_close(each[j], m(own[j]), atol=1e-5, rtol=0)


def test_traced_spec_has_the_attention_symmetries():
    _, spec = _spec(VIT)
    stream = spec.axes["embed.weight"][0]
    qk, vo = spec.axes["blocks.0.attn.q.weight"][0], spec.axes["blocks.0.attn.v.weight"][0]
    # one residual-stream permutation through every block, LayerNorms and the position embedding
    for name in ("pos", "blocks.1.ln1.weight", "blocks.1.attn.o.weight", "blocks.1.mlp.2.bias", "norm.bias"):
        assert stream in spec.axes[name]
    assert spec.axes["blocks.0.attn.k.weight"] == (qk, stream)  # queries and keys share one permutation
    assert spec.axes["blocks.0.attn.o.weight"] == (stream, vo)  # values and the output projection another
    assert spec.heads[qk] == spec.heads[vo] and spec.heads[qk][1] == 4  # tied: one head permutation for both
    assert spec.ties()[spec.heads[qk][0]] == [qk, vo]
    assert spec.axes["blocks.0.mlp.0.weight"][0] not in (stream, qk, vo)


@pytest.mark.parametrize("arch", [VIT, TOKENS], ids=["vit", "tokens"])
def test_random_symmetries_preserve_the_function(arch):
    model, spec = _spec(arch)
    x = torch.rand(6, *arch["input_shape"])
    g = torch.Generator().manual_seed(0)
    other = build_model(arch)
    with torch.no_grad():
        want = model(x)
        for _ in range(10):
            perms = random_perms(spec, g)
            other.load_state_dict(permute_state(spec, model.state_dict(), perms))
            torch.testing.assert_close(other(x), want, atol=1e-5, rtol=0)
        # a query/key permutation that splits heads is NOT a symmetry: the tie is what makes the above hold
        qk = spec.axes["blocks.0.attn.q.weight"][0]
        perms[qk] = torch.roll(perms[qk], 1)
        other.load_state_dict(permute_state(spec, model.state_dict(), perms))
        assert (other(x) - want).abs().max() > 1e-3


def test_weight_matching_undoes_planted_head_permutations():
    model, spec = _spec(VIT)
    ref = model.state_dict()
    g = torch.Generator().manual_seed(1)
    states = [permute_state(spec, ref, random_perms(spec, g)) for _ in range(3)]
    stack = {k: torch.stack([s[k] for s in states]) for k in ref}
    aligned = permute_states(spec, stack, match_population(spec, ref, stack).perms)
    assert all(torch.equal(aligned[k], ref[k].expand_as(aligned[k])) for k in ref)
    one = permute_state(spec, states[0], weight_matching(spec, ref, states[0]).perms)
    assert all(torch.equal(one[k], ref[k]) for k in ref)


def _trained(arch, steps: int = 60):
    """A model of ``arch`` fitted for a few Adam steps to random labels (weights away from their init), its
    layout, spec and the data as a Dataset."""
    torch.manual_seed(0)
    model = build_model(arch)
    layout = layout_of(model, arch)
    x = torch.rand(64, *arch["input_shape"])
    y = torch.randint(0, arch["num_outputs"], (64,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    data = Dataset("random", x, y, x[:8], y[:8], "classification", arch["num_outputs"], "random")
    return model, layout, spec_for_layout(layout), data


@pytest.mark.parametrize("arch", [VIT, TOKENS], ids=["vit", "tokens"])
def test_matching_recovers_planted_symmetries_of_a_trained_transformer(arch):
    # every kind of permutation at once (residual stream, MLP units, heads, q/k and v/o dims within heads),
    # drawn through the spec, applied to a TRAINED model: both matchings must bring it back exactly
    model, layout, spec, data = _trained(arch)
    w = layout.flatten(model.state_dict())[None]
    planted = permute_flat(spec, layout, w.expand(3, -1), random_perms(spec, torch.Generator().manual_seed(2), 3))
    ref, states = layout.unflatten(w[0]), layout.unflatten_batch(planted)
    by_weights = permute_flat(spec, layout, planted, match_population(spec, ref, states).perms)
    by_acts = permute_flat(
        spec, layout, planted, activation_matching(spec, layout.build(), ref, states, data.X_train).perms
    )
    assert (planted - w).norm(dim=1).min() > 1.0
    assert torch.equal(by_weights, w.expand(3, -1)) and torch.equal(by_acts, w.expand(3, -1))
    barrier = loss_barriers(layout, w.expand(6, -1), torch.cat([planted, by_weights]), data)["barrier"]
    assert barrier[:3].min() > 0.05 and barrier[3:].abs().max() < 1e-6


def test_residual_stream_cost_sums_every_tensor_on_the_stream():
    model, layout, spec, _ = _trained(VIT, steps=5)
    stream = spec.axes["embed.weight"][0]
    want = {
        ("pos", 1),
        ("embed.weight", 0),
        ("embed.bias", 0),
        ("norm.weight", 0),
        ("norm.bias", 0),
        ("head.weight", 1),
    }
    for b in range(VIT["depth"]):
        p = f"blocks.{b}."
        want |= {(p + n, 0) for n in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "attn.o.weight")}
        want |= {(p + n, 0) for n in ("attn.o.bias", "mlp.2.weight", "mlp.2.bias")}
        want |= {(p + n, 1) for n in ("attn.q.weight", "attn.k.weight", "attn.v.weight", "mlp.0.weight")}
    assert set(spec.touches(stream)) == want
    # the similarity weight matching solves for the stream is the sum over all of them
    ref = layout.unflatten(layout.flatten(model.state_dict()))
    other = {
        k: v[None] for k, v in permute_state(spec, ref, random_perms(spec, torch.Generator().manual_seed(0))).items()
    }
    A = _similarity(spec, stream, {k: v[None] for k, v in ref.items()}, other)[0]
    by_hand = sum(
        ref[k].movedim(a, 0).reshape(ref[k].shape[a], -1) @ other[k][0].movedim(a, 0).reshape(ref[k].shape[a], -1).T
        for k, a in want
    )
    torch.testing.assert_close(A, by_hand, atol=1e-4, rtol=1e-5)


def test_bad_transformer_shapes_are_one_line_errors():
    with pytest.raises(ZooError, match="multiple of heads"):
        build_model(arch_spec("vit", [1, 8, 8], 10, 10, 1, heads=4))
    with pytest.raises(ZooError, match="must divide"):
        build_model(arch_spec("vit", [1, 8, 8], 10, 8, 1, heads=2, patch=3))
    with pytest.raises(ZooError, match="one-hot tokens"):
        build_model(arch_spec("transformer", [63], 31, 8, 1, heads=2))


def test_align_a_vit_zoo_keeps_functions_and_reports_the_barrier(tmp_path, capsys):
    from tests.conftest import run_cli

    path = tmp_path / "vit.zarr"
    cfg = [
        f"out={path}",
        "recipe=vit-digits",
        "progress=false",
        "recipe.widths=[8]",
        "recipe.heads=2",
        "recipe.depths=[1]",
        "recipe.learning_rates=[0.003]",
        "recipe.seeds=3",
        "recipe.epochs=1",
        "recipe.checkpoint_epochs=[0,1]",
    ]
    z = zoo.build(compose("build", cfg))
    assert len(z.models) == 3 and (z.models["status"] == "done").all()
    rc, out, err = run_cli(capsys, "align", str(path), "--checkpoint", "last", "--pairs", "2")
    assert rc == 0, err
    assert "loss barrier (2 pairs)" in out and "REPAIR" not in out and "matched by weights" in out  # auto: BN only
    rc, _, err = run_cli(capsys, "align", str(path), "--checkpoint", "last", "--pairs", "2", "--repair", "on")
    assert rc != 0 and "LayerNorm or attention" in err and len(err.strip().splitlines()) == 1, err
    x = torch.rand(8, 1, 8, 8)

    def canonical_keeps_functions():
        z = zoo.open(str(path))
        with torch.no_grad():
            for i in range(3):
                m = z.module(i)
                want = m(x)
                m.load_state_dict(z.state_dict(i, canonical=True))
                torch.testing.assert_close(m(x), want, atol=1e-5, rtol=0)

    canonical_keeps_functions()
    rc, out, err = run_cli(
        capsys, "align", str(path), "--checkpoint", "last", "--pairs", "2", "--method", "activations"
    )
    assert rc == 0 and "matched by activations" in out, err
    canonical_keeps_functions()
    rc, _, err = run_cli(capsys, "align", str(path), "--method", "gradients")
    assert rc != 0 and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("recipe", ["vit-digits", "grok-modadd"])
def test_transformer_recipes_plan(recipe):
    from zoo.datasets import load_dataset
    from zoo.training.build import make_build_plan

    cfg = compose("build", [f"recipe={recipe}", "progress=false"])
    plan = make_build_plan(cfg, load_dataset(cfg["recipe"]["dataset"], seed=0))
    assert {m.arch["name"] for m in plan.models} == {cfg["recipe"]["arch"]}
    assert len(plan.models) in (16, 32) and all(m.optimizer == "adamw" for m in plan.models)


def test_hessian_vector_products_run_through_attention():
    from torch.func import functional_call

    from zoo.landscape.hessian import hvp_fn

    torch.manual_seed(0)  # the model's init and data do not depend on which tests ran before
    model = build_model(TOKENS)
    layout = layout_of(model, TOKENS)
    x, y = torch.rand(4, 62, dtype=torch.float64), torch.randint(0, 31, (4,))

    def loss(theta: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(functional_call(model, layout.unflatten(theta), (x,)), y)

    theta = layout.flatten(model.state_dict()).double()  # float64: the finite difference is then exact enough
    model.double()
    v = torch.randn(layout.size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    hv = hvp_fn(loss)(theta, v)
    eps = 1e-5  # against a central finite difference of gradients (small enough not to cross a ReLU kink)
    g = [torch.func.grad(loss)(theta + s * eps * v) for s in (1, -1)]
    torch.testing.assert_close(hv, (g[0] - g[1]) / (2 * eps), atol=1e-4, rtol=1e-3)
