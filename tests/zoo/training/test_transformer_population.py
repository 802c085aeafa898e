"""Transformer populations (issue 25): the stacked forward's attention is ``scaled_dot_product_attention``'s math
path bit for bit (forward and gradients), and evaluation chunks keep attention scores cache-sized without changing
the metrics beyond float noise; on CPU every non-MLP population's chunks keep their largest activation cache-sized."""

import pytest
import torch
import torch.nn.functional as F

from zoo.arch import arch_spec, build_model
from zoo.datasets.base import Dataset
from zoo.forward import (
    EVAL_CACHE_FLOATS,
    _attention,
    attention_floats_per_sample,
    cpu_eval_chunk,
    largest_activation_floats_per_sample,
)
from zoo.layout import layout_of
from zoo.training.population_module import EVAL_ATTENTION_FLOATS, PopulationModule
from zoo.training.spec import PopulationSpec


@pytest.mark.parametrize("shape", [(3, 5, 4, 16, 4), (3, 5, 4, 2, 8)], ids=["vit", "grok"])
def test_attention_is_sdpa_bit_for_bit(shape):
    torch.manual_seed(0)
    qkv = [torch.randn(shape, requires_grad=True) for _ in range(3)]
    g = torch.randn(shape)
    outs, grads = [], []
    for f in (_attention, F.scaled_dot_product_attention):
        out = f(*qkv)
        grads.append(torch.autograd.grad(out, qkv, g))
        outs.append(out.detach())
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def _module(arch: dict, m: int, n: int) -> PopulationModule:
    torch.manual_seed(0)
    template = build_model(arch)
    states = [build_model(arch).state_dict() for _ in range(m)]
    x = torch.rand(n, *arch["input_shape"])
    y = torch.randint(0, arch["num_outputs"], (n,))
    data = Dataset("random", x, y, x[: n // 2], y[: n // 2], "classification", arch["num_outputs"], "random")
    spec = PopulationSpec(
        template, layout_of(template, arch), states, [0.01] * m, [0.0] * m, list(range(m)), 8, 1, [0, 1]
    )
    return PopulationModule(spec, data)


def test_evaluation_chunks_bound_the_attention_scores():
    arch = arch_spec("vit", [1, 8, 8], 10, 8, 1, "gelu", heads=2, patch=2)
    template = build_model(arch)
    scores = attention_floats_per_sample(template)
    assert scores == 2 * 16 * 16 and attention_floats_per_sample(build_model(arch_spec("mlp", [4], 2, 4, 1))) == 0
    module = _module(arch, 64, 40)  # 64 models: chunks of 2^20 // (64 * 512) = 32 images, not the memory bound's
    assert module._eval_chunk == EVAL_ATTENTION_FLOATS // (64 * scores) == 32
    small = _module(arch, 3, 40)
    assert small._eval_chunk > 40  # few models: one chunk holds the whole split
    chunked = small.evaluate()
    small._cpu_eval_chunk = 7  # chunks change nothing but float noise in the float64 sums
    torch.testing.assert_close(small.evaluate(), chunked, rtol=1e-6, atol=1e-6)


def test_cpu_evaluation_chunks_keep_the_largest_intermediate_cache_sized():
    """A CNN population evaluates in chunks whose largest activation fits EVAL_CACHE_FLOATS (the memory bound
    alone made one chunk of the whole split, 7x slower); an MLP keeps the memory bound; metrics are unchanged."""
    arch = arch_spec("cnn", [1, 28, 28], 10, 16, 3, "relu", False, 3, 2, "valid")
    template = build_model(arch)
    largest = largest_activation_floats_per_sample(template, torch.rand(2, 1, 28, 28))
    assert largest == 16 * 13 * 13  # the first conv's (and activation's) output
    module = _module(arch, 64, 200)
    assert module._eval_chunk == 116  # the memory bound (PopulationSpec's 50M floats; builds pass far more)
    assert module._cpu_eval_chunk == EVAL_CACHE_FLOATS // (64 * largest) == 12
    mlp = arch_spec("mlp", [64], 10, 32, 2)
    assert cpu_eval_chunk(build_model(mlp), torch.rand(2, 64), 256, 5000) == 5000
    cached = module.evaluate()  # 17 chunks of the 200 images
    module._cpu_eval_chunk = module._eval_chunk  # 2 chunks: float noise only in the float64 sums
    torch.testing.assert_close(module.evaluate(), cached, rtol=1e-6, atol=1e-6)
