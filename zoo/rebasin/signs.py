"""Sign flips of hidden units with an odd activation (``PermutationSpec.signs``), one model or stacked.

Convention: ``signs[g]`` is a float tensor of +-1 per unit of group ``g`` (``[size]`` or ``[n, size]``); flipping
multiplies every tensor axis the group touches by it: the producing layer's weight rows and bias and the reading
layer's weight columns, so sin(-(Wx + b)) = -sin(Wx + b) is undone by the next layer and the function is the same.
Groups without the symmetry are never flipped. The canonical sign of a unit makes its bias positive (a zero bias:
the sum of its incoming weights; both zero: left as is): a rule of each unit alone, so it commutes with
permutations, and canonicalizing signs first, then matching permutations, resolves both symmetries.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from zoo.errors import ZooError
from zoo.rebasin.spec import PermutationSpec

Signs = dict[str, torch.Tensor]


def random_signs(
    spec: PermutationSpec,
    generator: torch.Generator | None,
    n: int | None = None,
    groups: tuple[str, ...] | None = None,
) -> Signs:
    """Uniform random +-1 for every unit of every sign group (``groups``: default ``spec.signs``, the sine units;
    ``spec.odd`` adds tanh units): ``[size]``, or ``[n, size]`` when ``n`` is given."""
    out = {}
    for g in spec.signs if groups is None else groups:
        shape = (spec.sizes[g],) if n is None else (n, spec.sizes[g])
        out[g] = torch.randint(0, 2, shape, generator=generator).float() * 2 - 1
    return out


def flip_present(
    spec: PermutationSpec, states: Mapping[str, torch.Tensor], signs: Mapping[str, torch.Tensor], batched: bool = True
) -> dict[str, torch.Tensor]:
    """Flip the tensors present in ``states`` (stacked ``[n, *shape]`` if ``batched``) by ``signs``."""
    unknown = sorted(set(signs) - set(spec.signs) - set(spec.odd))
    if unknown:
        raise ZooError(f"groups {unknown} have no sign symmetry (odd activations only); sign groups: {spec.odd}")
    out = {}
    lead = 1 if batched else 0
    for name, t in states.items():
        for axis, g in enumerate(spec.axes[name]):
            if g is not None and g in signs:
                s = signs[g].to(t.dtype)
                view = [1] * t.ndim
                if batched:
                    view[0] = s.shape[0]
                view[axis + lead] = s.shape[-1]
                t = t * s.view(view)
        out[name] = t
    return out


def _producer(spec: PermutationSpec, group: str) -> tuple[str | None, str]:
    """(bias name or None, weight name) of the layer whose output units are ``group``."""
    weight = next((n for n in spec.matched if spec.axes[n][:1] == (group,) and len(spec.axes[n]) >= 2), None)
    if weight is None:
        raise ZooError(f"no layer produces the units of group {group!r}")
    bias = weight.removesuffix("weight") + "bias"
    return (bias if bias in spec.axes else None), weight


def canonical_signs(
    spec: PermutationSpec, states: Mapping[str, torch.Tensor], groups: tuple[str, ...] | None = None
) -> Signs:
    """The flips ``[n, size]`` that bring each unit of stacked ``states`` to its canonical sign (module docstring);
    ``groups``: default ``spec.signs`` (sine units)."""
    out = {}
    for g in spec.signs if groups is None else groups:
        bias, weight = _producer(spec, g)
        w = states[weight].flatten(2).sum(2)  # [n, size]: the sum of each unit's incoming weights
        key = states[bias] if bias is not None else torch.zeros_like(w)
        key = torch.where(key != 0, key, w)
        out[g] = torch.where(key < 0, -1.0, 1.0).to(torch.float32)
    return out


def canonicalize_signs_flat(spec: PermutationSpec, layout, flat: torch.Tensor) -> torch.Tensor:
    """Flat weights ``[n, P]`` of ``layout`` with every sign-symmetric unit at its canonical sign (same functions)."""
    if not spec.signs:
        return flat
    states = layout.unflatten_batch(flat)
    return layout.flatten_batch(flip_present(spec, states, canonical_signs(spec, states)))


def flip_flat(spec: PermutationSpec, layout, flat: torch.Tensor, signs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Flat weights ``[n, P]`` of ``layout`` flipped by per-model ``signs`` (``[n, size]`` per group)."""
    return layout.flatten_batch(flip_present(spec, layout.unflatten_batch(flat), signs))
