"""The grouped-convolution CNN path (zoo.forward.stacked_cnn_forward) against the vmap path it replaces: the same
function up to float32 rounding of the convolutions' sums (forward, gradients, BatchNorm statistics, a few
training steps per activation and optimizer the protocol draws), dropout masks bit for bit, and the fallbacks."""

from dataclasses import replace

import pytest
import torch

from zoo.app.config import compose
from zoo.arch import MaskedDropout, arch_spec, build_model
from zoo.forward import grouped_cnn_supported, looped_forward, output_shapes, population_forward
from zoo.training.build import make_build_plan, population_spec
from zoo.training.recipe import load_recipe_datasets

# float32: a sum of ~150 products rounds differently in another order; 1e-5 relative is ~100 ulps of the sums
RTOL, ATOL = 1e-5, 1e-6


def _stack(spec: dict, m: int, seed: int = 0) -> tuple[torch.nn.Module, dict, dict]:
    torch.manual_seed(seed)
    template = build_model(spec)
    states = [build_model(spec).state_dict() for _ in range(m)]
    for s in states:  # BatchNorm affine and statistics away from their 1/0 defaults, so they matter
        for k in s:
            if k.endswith(("running_mean", "bias")):
                s[k] = s[k] + 0.1 * torch.randn_like(s[k])
            if k.endswith("running_var") or (k.endswith("weight") and s[k].dim() == 1):  # BatchNorm's scale
                s[k] = s[k] * (1 + 0.2 * torch.rand_like(s[k]))
    params = {n: torch.stack([s[n] for s in states]).requires_grad_() for n, _ in template.named_parameters()}
    buffers = {n: torch.stack([s[n] for s in states]) for n in states[0] if n not in params}
    return template, params, buffers


@pytest.mark.parametrize("activation", ["relu", "elu", "sigmoid", "tanh"])
@pytest.mark.parametrize("batchnorm, dropout", [(False, True), (True, False)])
def test_grouped_forward_gradients_and_statistics_equal_vmap(activation, batchnorm, dropout):
    m, b = 5, 6
    spec = arch_spec("cnn", (1, 28, 28), 10, 16, 3, activation, batchnorm, 3, 2, "valid", dropout)
    template, params, buffers = _stack(spec, m)
    assert grouped_cnn_supported(template)
    x = torch.rand(m, b, 1, 28, 28)
    masks = {}
    if dropout:
        for name, shape in output_shapes(template, x[0], keep=lambda mod: isinstance(mod, MaskedDropout)):
            masks[f"{name}.mask"] = (torch.rand(m, b, *shape) >= 0.4).float() / 0.6
    for training in (True, False):
        template.train(training)
        outs, grads, stats = [], [], []
        for grouped in (True, False):
            bufs = {k: v.clone() for k, v in buffers.items()} | masks
            out = population_forward(template, params, bufs, x, shared_input=False, grouped=grouped)
            grads.append(torch.autograd.grad(out.square().sum(), list(params.values())))
            outs.append(out.detach())
            stats.append(bufs)
        assert outs[0].shape == (m, b, 10)
        assert torch.allclose(outs[0], outs[1], rtol=RTOL, atol=ATOL), (outs[0] - outs[1]).abs().max()
        for (name, _), g1, g2 in zip(params.items(), *grads):
            assert torch.allclose(g1, g2, rtol=1e-4, atol=1e-5 * float(g2.abs().max())), name
        for k in buffers:  # running statistics updated in place in train mode, identically
            assert torch.allclose(stats[0][k].float(), stats[1][k].float(), rtol=RTOL, atol=ATOL), k
        if training and batchnorm:
            assert not torch.equal(stats[0]["features.1.running_mean"], buffers["features.1.running_mean"])
    template.eval()  # evaluation: one input shared by every model (the first conv is one dense conv)
    with torch.no_grad():
        shared = [population_forward(template, params, buffers, x[0], grouped=g) for g in (True, False)]
    assert torch.allclose(shared[0], shared[1], rtol=RTOL, atol=ATOL)
    with torch.no_grad():  # model j alone, as a plain module, gives row j
        module = build_model(spec).eval()
        state = {**{k: v[2].detach() for k, v in params.items()}, **{k: v[2] for k, v in buffers.items()}}
        module.load_state_dict(state)
        assert torch.allclose(shared[0][2], module(x[0]), rtol=RTOL, atol=ATOL)


def test_unsupported_templates_fall_back_to_vmap():
    """A ResNet, or a BatchNorm with a cumulative average (momentum=None), is not the grouped path's to compute."""
    cnn = build_model(arch_spec("cnn", (1, 8, 8), 3, 4, 1, "relu", True, 3))
    assert grouped_cnn_supported(cnn)
    cnn.features[1].momentum = None
    assert not grouped_cnn_supported(cnn)
    assert not grouped_cnn_supported(build_model(arch_spec("resnet", (1, 8, 8), 3, 4, 1)))
    assert not grouped_cnn_supported(build_model(arch_spec("mlp", (1, 8, 8), 3, 4, 1)))


def _protocol_module(optimizer: str, activation: str, grouped: bool, seeds: int = 6, nudge: float = 0.0):
    from zoo.training.population_module import PopulationModule

    cfg = compose(
        "build",
        [
            "recipe=cnn-zoo-digits",
            f"recipe.seeds={seeds}",
            "~recipe.hparams.optimizer",
            f"recipe.optimizer={optimizer}",
            "~recipe.hparams.activation",
            f"recipe.activation={activation}",
            "progress=false",
        ],
    )
    datasets = load_recipe_datasets(cfg["recipe"])
    plan = make_build_plan(cfg, datasets)
    spec = replace(population_spec(cfg, plan, 0, datasets), grouped_cnn=grouped)
    if nudge:  # every initial weight moved by ~1 ulp: how far float32 rounding alone carries a run
        spec = replace(spec, init_states=[{k: v * (1 + nudge) for k, v in s.items()} for s in spec.init_states])
    module = PopulationModule(spec, next(iter(datasets.values())))
    module.manual_backward = lambda loss: loss.backward()  # type: ignore[method-assign]  # no Trainer attached
    module.log = lambda *a, **k: None  # type: ignore[method-assign]
    return module


@pytest.mark.parametrize(
    "optimizer, activation", [("sgd", "relu"), ("adam", "elu"), ("rmsprop", "tanh"), ("adam", "sigmoid")]
)
def test_training_steps_follow_the_vmap_path(optimizer, activation):
    """A population of the protocol (per-model lr, L2, init, dropout, training fraction) takes 6 steps both ways:
    weights, optimizer state and checkpoint metrics agree to float32 rounding; dropout masks are bit for bit.
    Adam and RMSprop divide by the root of tiny second moments, which carries a rounding difference of a
    near-zero gradient into a visible step: the bound is how far the vmap path itself moves when its initial
    weights move by one ulp (as tests/zoo/training/test_hparams.py bounds plain torch)."""
    mods = [_protocol_module(optimizer, activation, grouped) for grouped in (True, False)]
    mods.append(_protocol_module(optimizer, activation, False, nudge=1e-7))
    spec = mods[0].spec
    assert spec.dropouts and spec.train_subsets and any(p > 0 for p in spec.dropouts)
    for step in range(6):
        masks = [mod._dropout_masks(mod.batch_size) for mod in mods[:2]]  # the draws of this step, both ways
        assert masks[0].keys() == masks[1].keys() and all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
        mods[2]._dropout_masks(mods[2].batch_size)  # its generators advance alike
        for mod in mods:
            mod.training_step(None, step)
    w = [torch.cat([p.detach().flatten(1) for p in mod.stacked], 1) for mod in mods]
    init = torch.stack([torch.cat([s[n].flatten() for n in mods[1].param_names]) for s in spec.init_states])
    diff = (w[0] - w[1]).abs().amax(1)
    chaos = (w[2] - w[1]).abs().amax(1)
    scale = max(1.0, float(w[1].abs().max()))
    assert (diff <= torch.clamp(4 * chaos, min=1e-5 * scale)).all(), (diff, chaos)
    assert (diff <= 1e-5 * scale).sum() >= len(diff) - 2, diff  # most models agree to float32 rounding
    assert ((w[1] - init).abs().amax(1) > 10 * diff.clamp(min=1e-6)).all()  # they moved far beyond it
    for s0, s1, s2 in zip(mods[0].state1, mods[1].state1, mods[2].state1):
        assert (s0 - s1).abs().max() <= max(1e-5 * float(s1.abs().max()), 4 * float((s2 - s1).abs().max()))
    metrics = [mod.evaluate() for mod in mods]
    tight = diff <= 1e-5 * scale  # the checkpoint metrics of the models that agree to rounding agree too
    assert torch.allclose(metrics[0][tight], metrics[1][tight], rtol=1e-5, atol=1e-5)


def test_dropout_masks_are_each_models_own_draws():
    """The vectorized masks are, bit for bit, ``(rand(b, *shape) >= p).float() / (1 - p)`` from model j's own
    generator, site after site; rate-0 models and models sitting the step out draw nothing and get ones."""
    mod = _protocol_module("sgd", "relu", True, seeds=8)
    b, m = mod.batch_size, len(mod._dropouts)
    gens = [torch.Generator().manual_seed(int(s)) for s in mod.spec.dropout_seeds]
    mod._dropouts[1] = 0.0  # one model without dropout
    sitting = torch.zeros(m, dtype=torch.bool)
    sitting[3] = True  # one model sitting the step out
    mod._frozen = (sitting, [])
    got = mod._dropout_masks(b)
    for j, p in enumerate(mod._dropouts):
        for name, shape in mod._dropout_sites:
            if p > 0 and j != 3:
                want = (torch.rand((b, *shape), generator=gens[j]) >= p).float() / (1.0 - p)
            else:
                want = torch.ones((b, *shape))
            assert torch.equal(got[f"{name}.mask"][j], want), (j, name)
    assert any(p > 0 for p in mod._dropouts)


def test_resnet_without_gradients_loops_models_as_vmap_computes_them():
    """A staged ResNet (stem width 16: not narrow) with gradients off runs one model at a time on channels-last
    images (zoo.forward.looped_forward): the vmap function up to float32 rounding, shared or per-model inputs, and
    in train mode the same BatchNorm statistics written into each model's slice of the stacked buffers; with
    gradients on (training steps) gradients flow (the grouped path)."""
    m, b = 3, 5
    spec = arch_spec("resnet", (1, 12, 12), 10, 16, 1, "relu", True, 3, stride=2, stages=3)
    template, params, buffers = _stack(spec, m)
    params = {k: v.detach() for k, v in params.items()}
    x = torch.rand(m, b, 1, 12, 12)
    with torch.no_grad():
        for training in (False, True):
            template.train(training)
            for shared, xi in ((True, x[0]), (False, x)):
                outs, stats = [], []
                for grouped in (True, False):
                    bufs = {k: v.clone() for k, v in buffers.items()}
                    outs.append(population_forward(template, params, bufs, xi, shared_input=shared, grouped=grouped))
                    stats.append(bufs)
                assert outs[0].shape == (m, b, 10)
                assert torch.allclose(outs[0], outs[1], rtol=RTOL, atol=ATOL), (outs[0] - outs[1]).abs().max()
                if not training:  # it is the looped path that ran
                    assert torch.equal(outs[0], looped_forward(template, params, buffers, xi, shared))
                for k in buffers:
                    assert torch.allclose(stats[0][k].float(), stats[1][k].float(), rtol=RTOL, atol=ATOL), k
                    assert training == (not torch.equal(stats[0][k], buffers[k])), k  # updated in train mode only
    template.eval()
    p = {k: v.clone().requires_grad_() for k, v in params.items()}
    out = population_forward(template, p, buffers, x[0])  # gradients flow
    assert torch.autograd.grad(out.sum(), [p["head.weight"]])[0].abs().sum() > 0


@pytest.mark.parametrize("stages, stride", [(1, 1), (2, 2)])
def test_grouped_resnet_equals_vmap(stages, stride):
    """zoo.forward.stacked_resnet_forward (grouped convolutions, the 1x1 projection shortcuts too) against vmap:
    outputs, gradients and BatchNorm running statistics to float32 rounding, own and shared inputs, and model
    j alone as a plain module gives row j."""
    from zoo.forward import grouped_resnet_supported, stacked_resnet_forward

    m, b = 4, 6
    spec = {**arch_spec("resnet", (1, 8, 8), 10, 4, 1), "stages": stages, "stride": stride}
    template, params, buffers = _stack(spec, m)
    assert grouped_resnet_supported(template) and (stages == 1 or template.blocks[1].shortcut is not None)
    x = torch.rand(m, b, 1, 8, 8)
    template.train()
    outs, grads, stats = [], [], []
    for grouped in (True, False):
        bufs = {k: v.clone() for k, v in buffers.items()}
        out = population_forward(template, params, bufs, x, shared_input=False, grouped=grouped)
        grads.append(torch.autograd.grad(out.square().sum(), list(params.values())))
        outs.append(out.detach())
        stats.append(bufs)
    assert torch.allclose(outs[0], outs[1], rtol=RTOL, atol=ATOL), (outs[0] - outs[1]).abs().max()
    for (name, _), g1, g2 in zip(params.items(), *grads):
        assert torch.allclose(g1, g2, rtol=1e-4, atol=1e-5 * float(g2.abs().max())), name
    for k in buffers:
        assert torch.allclose(stats[0][k].float(), stats[1][k].float(), rtol=RTOL, atol=ATOL), k
    assert not torch.equal(stats[0]["stem.1.running_mean"], buffers["stem.1.running_mean"])
    template.eval()
    with torch.no_grad():
        shared = stacked_resnet_forward(template, params, buffers, x[0], True)
        module = build_model(spec).eval()
        module.load_state_dict(
            {**{k: v[2].detach() for k, v in params.items()}, **{k: v[2] for k, v in buffers.items()}}
        )
        assert torch.allclose(shared[2], module(x[0]), rtol=RTOL, atol=ATOL)
        wide = {**arch_spec("resnet", (1, 8, 8), 10, 16, 1)}  # wider ResNets evaluate one model at a time
        t16, p16, b16 = _stack(wide, 2)
        assert torch.allclose(
            population_forward(t16.eval(), p16, b16, x[0]), looped_forward(t16, p16, b16, x[0], True), rtol=0, atol=0
        )
