"""The weight symmetries beside permutations, in one system: positive per-unit scaling and sign flips.

- ``scale``: a unit of a group in ``PermutationSpec.scales`` (read only by ReLU-like, positively homogeneous
  operations) keeps the network's function when its INCOMING tensors are multiplied by c > 0 and its OUTGOING
  weights (the next layers' input columns) by 1/c. Incoming: its layer's weight row and bias, or, when a
  BatchNorm follows the layer, that BatchNorm's weight and bias (its running statistics and the layer's rows
  stay: BatchNorm removes their scale only up to its eps, so that BatchNorm invariance is left alone).
  Canonical form: every unit's incoming vector has unit L2 norm (a zero vector is left as is), applied group by
  group in forward order, since a group's outgoing weights are the next group's incoming ones.
- ``sign``: a unit of a group in ``PermutationSpec.odd`` (an odd activation: sine, tanh) keeps the function
  when its incoming weights, bias and outgoing weights all flip sign. Canonical form: zoo.rebasin.signs' rule
  (positive bias; a zero bias: a positive sum of incoming weights). ``PermutationSpec.signs`` (sine units
  only) is what ``zoo align`` canonicalizes by default, as before; ``sign`` extends it to tanh units.
- ``permutation``: resolved after the two rules above (they are rules of each unit alone, so they commute with
  permutations) by weight matching to a reference (zoo.rebasin.align).

Functions take stacked state dicts (tensors ``[n, *shape]``) or flat ``[n, P]`` vectors of a layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from zoo.errors import ZooError
from zoo.rebasin.apply import permute_present, random_perms
from zoo.rebasin.signs import canonical_signs, flip_present, random_signs
from zoo.rebasin.spec import PermutationSpec

SYMMETRIES = ("permutation", "scale", "sign")


@dataclass(frozen=True)
class ScaleGroup:
    """Tensors a scale group's factor multiplies (axis 0: ``incoming``) and divides (axis 1: ``outgoing``)."""

    name: str
    incoming: tuple[str, ...]
    outgoing: tuple[str, ...]


def parse_symmetries(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"permutation,scale,sign"`` (or a list) -> the names in SYMMETRIES order; ZooError on unknown names."""
    names = [s.strip() for s in (value.split(",") if isinstance(value, str) else value) if str(s).strip()]
    unknown = [s for s in names if s not in SYMMETRIES]
    if unknown or not names:
        raise ZooError(f"unknown symmetry {unknown[0] if unknown else value!r}; choose from {', '.join(SYMMETRIES)}")
    return tuple(s for s in SYMMETRIES if s in names)


def scale_groups(spec: PermutationSpec) -> list[ScaleGroup]:
    """The scale groups of a traced spec in forward order, with the tensors each one scales."""
    g = spec.graph
    if g is None:
        return []
    norms = {n.nodeset: dict(n.tensors) for n in g.norms}
    out = []
    for layer in g.layers:
        group = g.nodesets[layer.dst].group
        if group is None or group not in spec.scales:
            continue
        t = norms.get(layer.dst)
        if t is not None:
            incoming = (t["weight"], t["bias"])
        else:
            incoming = (layer.weight,) + ((layer.bias,) if layer.bias is not None else ())
        outgoing = tuple(r.weight for r in g.layers if g.nodesets[r.src].group == group)
        out.append(ScaleGroup(group, incoming, outgoing))
    return out


def _mul(t: torch.Tensor, f: torch.Tensor, axis: int) -> torch.Tensor:
    """Stacked ``t`` [n, *shape] times per-model factors ``f`` [n, size] along ``shape[axis]``."""
    view = [f.shape[0]] + [1] * (t.ndim - 1)
    view[axis + 1] = f.shape[1]
    return t * f.to(t.dtype).view(view)


def scale_present(
    spec: PermutationSpec, states: Mapping[str, torch.Tensor], scales: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Stacked ``states`` with every unit of each group in ``scales`` (``[n, size]``, > 0) scaled: incoming x c,
    outgoing / c (the same functions)."""
    out = dict(states)
    for sg in scale_groups(spec):
        if sg.name not in scales:
            continue
        c = scales[sg.name]
        for name in sg.incoming:
            out[name] = _mul(out[name], c, 0)
        for name in sg.outgoing:
            out[name] = _mul(out[name], 1.0 / c, 1)
    unknown = sorted(set(scales) - set(spec.scales))
    if unknown:
        raise ZooError(f"groups {unknown} have no scaling symmetry; scale groups: {spec.scales}")
    return out


def random_scales(
    spec: PermutationSpec, generator: torch.Generator | None, n: int, log_std: float = 1.0
) -> dict[str, torch.Tensor]:
    """Per-unit factors ``exp(log_std * N(0, 1))`` ``[n, size]`` for every scale group."""
    return {g: torch.exp(log_std * torch.randn(n, spec.sizes[g], generator=generator)) for g in spec.scales}


def canonicalize_scales(spec: PermutationSpec, states: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stacked ``states`` with every scale-group unit's incoming vector at unit L2 norm, group by group in forward
    order (module docstring); the same functions."""
    out = dict(states)
    for sg in scale_groups(spec):
        n = next(iter(out.values())).shape[0]
        sq = sum(out[name].double().reshape(n, out[name].shape[1], -1).square().sum(2) for name in sg.incoming)
        norm = torch.as_tensor(sq).sqrt()
        c = torch.where(norm > 0, 1.0 / norm.clamp_min(1e-300), torch.ones_like(norm))
        for name in sg.incoming:
            out[name] = (_mul(out[name].double(), c, 0)).to(out[name].dtype)
        for name in sg.outgoing:
            out[name] = (_mul(out[name].double(), 1.0 / c, 1)).to(out[name].dtype)
    return out


def canonicalize_units(spec: PermutationSpec, layout, flat: torch.Tensor, symmetries: Sequence[str]) -> torch.Tensor:
    """Flat weights ``[n, P]`` of ``layout`` with the per-unit symmetries named in ``symmetries`` at their canonical
    form: ``scale`` (unit-norm incoming weights), ``sign`` (every odd unit, tanh included, at its canonical sign);
    sine units are at their canonical sign in any case (``zoo align``'s behaviour before these symmetries)."""
    groups = spec.odd if "sign" in symmetries else spec.signs
    if not groups and not ("scale" in symmetries and spec.scales):
        return flat
    states = layout.unflatten_batch(flat)
    if "scale" in symmetries and spec.scales:
        states = canonicalize_scales(spec, states)
    if groups:
        states = flip_present(spec, states, canonical_signs(spec, states, groups))
    return layout.flatten_batch(states)


def random_transform(
    spec: PermutationSpec,
    layout,
    flat: torch.Tensor,
    generator: torch.Generator | None,
    symmetries: Sequence[str] = SYMMETRIES,
    log_std: float = 1.0,
) -> torch.Tensor:
    """Flat ``[n, P]``, each model moved by a random element of the named symmetries (same functions)."""
    n = flat.shape[0]
    states = layout.unflatten_batch(flat)
    if "scale" in symmetries:
        states = scale_present(spec, states, random_scales(spec, generator, n, log_std))
    if "sign" in symmetries:
        states = flip_present(spec, states, random_signs(spec, generator, n, spec.odd))
    if "permutation" in symmetries:
        states = permute_present(spec, states, random_perms(spec, generator, n))
    return layout.flatten_batch(states)
