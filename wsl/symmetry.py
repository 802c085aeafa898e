"""Hidden-unit permutations of padded weight batches, drawn and matched by zoo.rebasin.

Each layout's rows are unpadded to the layout's real tensors, permuted with zoo.rebasin on that layout's
traced ``PermutationSpec`` (``random_perms`` for augmentation, the batched matcher ``match_pairs`` for
alignment) and padded again, so padded units never move and every permutation preserves the function.
"""
from __future__ import annotations

from typing import Callable

import torch

from zoo.rebasin.apply import permute_states, random_perms
from zoo.rebasin.matching import match_pairs
from zoo.rebasin.spec import PermutationSpec

from .space import WeightSpace

States = dict[str, torch.Tensor]


def _per_layout(space: WeightSpace, layout_index: torch.Tensor, fn: Callable[..., States], weights: torch.Tensor,
                *more: torch.Tensor) -> torch.Tensor:
    """[n, P] -> [n, P]: every layout's rows of ``weights`` (and of ``more``) unpadded to stacked state dicts,
    replaced by ``fn(spec, states, *more_states)`` padded again."""
    out = weights.clone()
    for k in layout_index.unique().tolist():
        rows = (layout_index == k).nonzero().flatten()
        layout = space.layouts[k]
        states = [layout.unflatten_batch(space.unpad(t[rows], k)) for t in (weights, *more)]
        out[rows] = space.pad(layout.flatten_batch(fn(space.spec(k), *states)), k)
    return out


def permute(space: WeightSpace, weights: torch.Tensor, layout_index: torch.Tensor,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """[n, P] -> [n, P]: a uniform random function-preserving hidden-unit permutation of every network."""
    def fn(spec: PermutationSpec, states: States) -> States:
        n = next(iter(states.values())).shape[0]
        return permute_states(spec, states, random_perms(spec, generator, n))

    return _per_layout(space, layout_index, fn, weights)


def align_to(space: WeightSpace, anchors: torch.Tensor, others: torch.Tensor, layout_index: torch.Tensor,
             generator: torch.Generator | None = None, max_iter: int = 50) -> torch.Tensor:
    """[n, P] ``others`` permuted to match ``anchors`` pairwise (weight matching; a pair shares one layout)."""
    seed = int(torch.randint(2**31, (1,), generator=generator))

    def fn(spec: PermutationSpec, states: States, refs: States) -> States:
        return permute_states(spec, states, match_pairs(spec, refs, states, seed=seed, max_iter=max_iter).perms)

    return _per_layout(space, layout_index, fn, others, anchors)
