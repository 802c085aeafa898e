"""Hidden-unit permutations of padded weight batches, drawn and matched by zoo.rebasin.

Permutations are drawn (``random_perms``) or weight-matched (the batched matcher ``match_pairs``) on each
layout's own traced ``PermutationSpec`` over its real units, padded units map to themselves, and
rebasin's ``permute_present`` applies them to the padded tensors of the whole batch at once; so every
permutation preserves each network's function and padding stays padding. Sign flips of units with an odd
activation (sine networks; tanh too on request) and positive rescalings of ReLU units (``rescale``,
zoo.rebasin.symmetries) are drawn on the same specs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from wsl.space import WeightSpace
from zoo.rebasin.apply import Perms, permute_present, random_perms
from zoo.rebasin.matching import match_pairs
from zoo.rebasin.signs import random_signs
from zoo.rebasin.spec import PermutationSpec
from zoo.rebasin.symmetries import random_scales, scale_groups


def _padded(
    space: WeightSpace, layout_index: torch.Tensor, draw: Callable[[int, PermutationSpec, torch.Tensor], Perms]
) -> Perms:
    """group -> [n, K] permutations; the rows of layout k get ``draw(k, spec_k, rows)`` on their real units."""
    n = len(layout_index)
    out = {g: torch.arange(size).repeat(n, 1) for g, size in space.group_sizes().items()}
    for k in layout_index.unique().tolist():
        rows = (layout_index == k).nonzero().flatten().cpu()
        for g, p in draw(k, space.spec(k), rows).items():
            out[g][rows, : p.shape[1]] = p
    return out


def apply_permutations(space: WeightSpace, weights: torch.Tensor, perms: Perms) -> torch.Tensor:
    """[n, P] -> [n, P]: every tensor axis a group touches gathered by that group's permutations ``[n, K]``."""
    views = {s.name: space.view(weights, s.name) for s in space.slots}
    new = permute_present(space.spec(0), views, {g: p.to(weights.device) for g, p in perms.items()})
    return torch.cat([new[s.name].reshape(len(weights), -1) for s in space.slots], dim=1)


def permute(
    space: WeightSpace, weights: torch.Tensor, layout_index: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """[n, P] -> [n, P]: a uniform random function-preserving hidden-unit permutation of every network."""
    perms = _padded(space, layout_index, lambda k, spec, rows: random_perms(spec, generator, len(rows)))
    return apply_permutations(space, weights, perms)


def flip_signs(
    space: WeightSpace,
    weights: torch.Tensor,
    layout_index: torch.Tensor,
    generator: torch.Generator | None = None,
    tanh: bool = False,
) -> torch.Tensor:
    """[n, P] -> [n, P]: each sign-symmetric unit (odd activation: sine networks; ``PermutationSpec.signs``; with
    ``tanh`` also tanh units, ``PermutationSpec.odd``) of every network flipped with probability 1/2 (incoming
    weights, bias, outgoing weights): the same functions. Layouts without sign groups, and padded units, are left
    as they are."""
    n = len(layout_index)
    signs = {g: torch.ones(n, size) for g, size in space.group_sizes().items()}
    for k in layout_index.unique().tolist():
        rows = (layout_index == k).nonzero().flatten().cpu()
        spec = space.spec(k)
        for g, s in random_signs(spec, generator, len(rows), spec.odd if tanh else None).items():
            signs[g][rows, : s.shape[1]] = s
    spec = space.spec(0)
    views = {s.name: space.view(weights, s.name) for s in space.slots}
    out = []
    for slot in space.slots:
        t = views[slot.name]
        for axis, group in enumerate(spec.axes[slot.name]):
            if group is not None:
                view = [n] + [1] * (t.ndim - 1)
                view[axis + 1] = signs[group].shape[1]
                t = t * signs[group].to(t.device, t.dtype).view(view)
        out.append(t.reshape(n, -1))
    return torch.cat(out, dim=1)


def align_to(
    space: WeightSpace,
    anchors: torch.Tensor,
    others: torch.Tensor,
    layout_index: torch.Tensor,
    generator: torch.Generator | None = None,
    max_iter: int = 50,
) -> torch.Tensor:
    """[n, P] ``others`` permuted to match ``anchors`` pairwise (weight matching; a pair shares one layout)."""
    seed = int(torch.randint(2**31, (1,), generator=generator))

    def draw(k: int, spec: PermutationSpec, rows: torch.Tensor) -> Perms:
        refs, states = space.states(anchors[rows], k), space.states(others[rows], k)
        return match_pairs(spec, refs, states, seed=seed, max_iter=max_iter).perms

    return apply_permutations(space, others, _padded(space, layout_index, draw))


def rescale(
    space: WeightSpace,
    weights: torch.Tensor,
    layout_index: torch.Tensor,
    generator: torch.Generator | None = None,
    log_std: float = 0.5,
) -> torch.Tensor:
    """[n, P] -> [n, P]: every positively scalable unit (ReLU-like readers; ``PermutationSpec.scales``) of every
    network scaled by ``exp(log_std * N(0, 1))``: incoming weights and bias (or its BatchNorm's affine parameters)
    times c, outgoing weights over c; the same functions. Padded units keep factor 1."""
    n = len(layout_index)
    factors = {g: torch.ones(n, size) for g, size in space.group_sizes().items()}
    for k in layout_index.unique().tolist():
        rows = (layout_index == k).nonzero().flatten().cpu()
        for g, c in random_scales(space.spec(k), generator, len(rows), log_std).items():
            factors[g][rows, : c.shape[1]] = c
    out = {s.name: space.view(weights, s.name) for s in space.slots}
    for sg in scale_groups(space.spec(0)):
        c = factors[sg.name].to(weights.device, weights.dtype)
        for name, axis, f in [(t, 0, c) for t in sg.incoming] + [(t, 1, 1.0 / c) for t in sg.outgoing]:
            t = out[name]
            view = [n] + [1] * (t.ndim - 1)
            view[axis + 1] = f.shape[1]
            out[name] = t * f.view(view)
    return torch.cat([out[s.name].reshape(n, -1) for s in space.slots], dim=1)
