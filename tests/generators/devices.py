"""Checks that a generator honours ``device=`` without a GPU: its ``generate`` run on the meta device (PyTorch's
shape-only device, which refuses a CPU tensor mixed into its operations the way CUDA does) catches a tensor created
on the CPU in the sampling path; ``device="cpu"`` must give the bits of no device at all."""

from __future__ import annotations

import copy
from typing import Any

import torch

from generators import Generator


def generate_on_meta(g: Generator, n: int, condition: Any = None) -> torch.Tensor:
    """``generate`` of a copy of ``g`` moved to the meta device, fed as ``sample_flat`` feeds it (draws from a
    seeded CPU generator, condition indices moved to the generator's device)."""
    gen = torch.Generator().manual_seed(0)
    meta = copy.deepcopy(g).eval()
    idx, _ = meta._condition_index(n, condition, gen)  # d2nwg embeds its dataset here, on the CPU
    meta.to("meta")
    with torch.no_grad():
        return meta.generate(n, gen, None if idx is None else idx.to("meta"))


def check_device_paths(g: Generator, n: int, condition: Any = None) -> None:
    """``device="cpu"`` gives the bits of the default, and ``generate`` creates nothing off the generator's device."""
    default, _ = g.sample_flat(n, seed=5, condition=condition)
    explicit, _ = g.sample_flat(n, seed=5, condition=condition, device="cpu")
    assert torch.equal(default, explicit) and explicit.device.type == "cpu"
    out = generate_on_meta(g, n, condition)
    assert out.device.type == "meta" and tuple(out.shape) == (n, int(g.param_mask.sum()))
    assert g.device.type == "cpu"
