"""Hidden-unit permutations of padded weight batches: random (augmentation) and matched (alignment).

Permutations come from the space's Structure (derived from the architecture), act on the real units of
each model only (padded units stay in place), and gather every tensor axis a group touches at once, so
the permuted network computes the same function.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .space import WeightSpace


def _group_sizes(space: WeightSpace, layout_index: torch.Tensor) -> dict[str, torch.Tensor]:
    """group -> [n] number of real units of that group for every sample."""
    sizes = space.sizes_tensor().to(layout_index.device)[layout_index]  # [n, nodesets]
    out: dict[str, torch.Tensor] = {}
    for i, ns in enumerate(space.structure.nodesets):
        if ns.group is not None and ns.group not in out:
            out[ns.group] = sizes[:, i]
    return out


def random_permutations(space: WeightSpace, layout_index: torch.Tensor,
                        generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """group -> [n, K] permutations, uniform over each sample's real units; padded units map to themselves."""
    maxes = space.max_sizes()
    out = {}
    for i, ns in enumerate(space.structure.nodesets):
        if ns.group is None or ns.group in out:
            continue
        k = maxes[i]
        real = _group_sizes(space, layout_index)[ns.group]  # [n]
        keys = torch.rand(len(layout_index), k, generator=generator)
        ar = torch.arange(k)
        keys = torch.where(ar[None, :] < real[:, None].cpu(), keys, 2.0 + ar[None, :].float())
        out[ns.group] = keys.argsort(dim=1).to(layout_index.device)
    return out


def apply_permutations(space: WeightSpace, weights: torch.Tensor, perms: dict[str, torch.Tensor]) -> torch.Tensor:
    """[n, P] -> [n, P] with ``out[..., i, ...] = w[..., perm[i], ...]`` on every axis each group touches."""
    out = weights.clone()
    n = weights.shape[0]
    spec = space.structure.groups()
    for g, perm in perms.items():
        for name, axis in spec[g]:
            slot = space.slot(name)
            t = out[:, slot.offset : slot.stop].reshape(n, *slot.shape)
            shape = [n] + [1] * len(slot.shape)
            shape[axis + 1] = slot.shape[axis]
            idx = perm.reshape(shape).expand_as(t)
            out[:, slot.offset : slot.stop] = torch.gather(t, axis + 1, idx).reshape(n, -1)
    return out


def permute(space: WeightSpace, weights: torch.Tensor, layout_index: torch.Tensor,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Random function-preserving hidden-unit permutation of every network in the batch."""
    return apply_permutations(space, weights, random_permutations(space, layout_index, generator))


def match_weights(space: WeightSpace, anchor: torch.Tensor, other: torch.Tensor, layout_index: int,
                  generator: torch.Generator | None = None, max_iter: int = 50) -> dict[str, torch.Tensor]:
    """Weight matching: permutations of ``other`` ([P]) maximizing its inner product with ``anchor``.

    Coordinate descent over groups in a seeded random order; each step solves one group exactly with
    ``linear_sum_assignment`` given the others, until a full pass brings no improvement.
    Returns group -> [1, K] permutations for ``apply_permutations``.
    """
    spec = space.structure.groups()
    sizes = {g: int(s[0]) for g, s in _group_sizes(space, torch.tensor([layout_index])).items()}
    maxes = dict(zip([ns.group for ns in space.structure.nodesets], space.max_sizes()))
    perms = {g: torch.arange(maxes[g])[None] for g in spec}
    groups = sorted(spec)
    a = anchor[None]
    for _ in range(max_iter):
        improved = False
        order = torch.randperm(len(groups), generator=generator).tolist()
        for gi in order:
            g, k = groups[gi], sizes[groups[gi]]
            rest = apply_permutations(space, other[None], {h: p for h, p in perms.items() if h != g})
            cost = torch.zeros(k, k, dtype=torch.float64)
            for name, axis in spec[g]:
                A = space.view(a, name)[0].movedim(axis, 0)[:k].reshape(k, -1).double()
                B = space.view(rest, name)[0].movedim(axis, 0)[:k].reshape(k, -1).double()
                cost += A @ B.T
            c = cost.numpy()
            _, cols = linear_sum_assignment(c, maximize=True)
            old = perms[g][0, :k].numpy()
            if c[np.arange(k), cols].sum() > c[np.arange(k), old].sum() + 1e-9:
                improved = True
                new = torch.arange(maxes[g])
                new[:k] = torch.as_tensor(cols)
                perms[g] = new[None]
        if not improved:
            break
    return perms


def align_to(space: WeightSpace, anchors: torch.Tensor, others: torch.Tensor, layout_index: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """[n, P] ``others`` permuted to match ``anchors`` pairwise (same layout per pair)."""
    out = others.clone()
    for i in range(others.shape[0]):
        perms = match_weights(space, anchors[i], others[i], int(layout_index[i]), generator)
        out[i] = apply_permutations(space, others[i : i + 1], perms)[0]
    return out
