"""Distances between flat weight vectors up to hidden-unit permutations, and overlaps of error sets.

Everything is batched: distances from ``torch.cdist`` and IoUs from boolean matrix products, in chunks of
ROW_CHUNK rows; direct weight matchings from one ``zoo.rebasin.match_pairs`` per chunk of PAIR_CHUNK
(sample, candidate) pairs. There is no Python loop over pairs.
"""

from __future__ import annotations

import torch

from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.rebasin import align_flat, match_pairs, permute_flat, spec_for_layout

ROW_CHUNK = 1024  # rows of a distance or IoU matrix computed at once (bounds memory on big zoos)
PAIR_CHUNK = 4096  # (sample, candidate) pairs weight-matched at once


def iou_matrix(errors_a: torch.Tensor, errors_b: torch.Tensor) -> torch.Tensor:
    """IoU [n, m] of boolean error sets errors_a [n, N] and errors_b [m, N]; two empty sets have IoU 1."""
    a, b = errors_a.to(torch.float32), errors_b.to(torch.float32)
    inter = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))


def max_iou(
    errors_a: torch.Tensor, errors_b: torch.Tensor, exclude_self: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(max IoU [n], argmax [n]) of each error set of errors_a [n, N] over the sets of errors_b [m, N].

    ``exclude_self``: a and b are the same models (row i of a is row i of b) and the pair (i, i) is skipped.
    """
    if errors_a.shape[1] != errors_b.shape[1]:
        raise ZooError(f"error sets over {errors_a.shape[1]} and {errors_b.shape[1]} test points cannot be compared")
    if exclude_self and errors_b.shape[0] < 2:
        raise ZooError("max_iou with self excluded needs at least 2 models")
    best = torch.empty(errors_a.shape[0])
    arg = torch.empty(errors_a.shape[0], dtype=torch.int64)
    for lo in range(0, errors_a.shape[0], ROW_CHUNK):
        m = iou_matrix(errors_a[lo : lo + ROW_CHUNK], errors_b)
        if exclude_self:
            rows = torch.arange(m.shape[0])
            m[rows, rows + lo] = -1.0
        best[lo : lo + ROW_CHUNK], arg[lo : lo + ROW_CHUNK] = m.max(1)
    return best, arg


def nearest_candidates(a: torch.Tensor, b: torch.Tensor, k: int = 1, exclude_self: bool = False) -> torch.Tensor:
    """Indices [n, k] of the k nearest rows of b [m, P] to each row of a [n, P], nearest first.

    ``torch.cdist`` in float32 on vectors centred on b's mean (which keeps its matrix-product form accurate);
    only rows whose distances tie within float32 rounding may swap. ``exclude_self``: a and b are the same
    rows and the pair (i, i) is skipped.
    """
    if a.shape[1] != b.shape[1]:
        raise ZooError(f"vectors of {a.shape[1]} and {b.shape[1]} coordinates cannot be compared")
    if exclude_self and b.shape[0] < 2:
        raise ZooError("nearest-neighbour distances with self excluded need at least 2 models")
    k = max(1, min(int(k), b.shape[0] - int(exclude_self)))
    centre = b.to(torch.float64).mean(0)
    B = (b.to(torch.float64) - centre).to(torch.float32)
    out = torch.empty(a.shape[0], k, dtype=torch.int64)
    for lo in range(0, a.shape[0], ROW_CHUNK):
        d = torch.cdist((a[lo : lo + ROW_CHUNK].to(torch.float64) - centre).to(torch.float32), B)
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + lo] = float("inf")
        out[lo : lo + ROW_CHUNK] = d.argmin(1, keepdim=True) if k == 1 else d.topk(k, dim=1, largest=False).indices
    return out


def nearest_l2(a: torch.Tensor, b: torch.Tensor, exclude_self: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance [n] float64, index [n]) of each row of a [n, P] to its nearest row of b [m, P] (L2).

    The nearest row comes from :func:`nearest_candidates`; its distance is recomputed directly in float64,
    so an exact copy gives 0. ``exclude_self``: a and b are the same rows and the pair (i, i) is skipped.
    """
    arg = nearest_candidates(a, b, 1, exclude_self)[:, 0]
    dist = torch.empty(a.shape[0], dtype=torch.float64)
    for lo in range(0, a.shape[0], ROW_CHUNK):
        dist[lo : lo + ROW_CHUNK] = (
            a[lo : lo + ROW_CHUNK].to(torch.float64) - b[arg[lo : lo + ROW_CHUNK]].to(torch.float64)
        ).norm(dim=1)
    return dist, arg


def matched_l2(
    layout: Layout, a: torch.Tensor, b: torch.Tensor, candidates: torch.Tensor, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance [n], index into b [n]): each row of a [n, P] weight-matched directly to each of its candidate
    rows of b (``candidates`` [n, c]; a repeated candidate is matched once) and the closest kept; L2 over
    trainable parameters, float64.

    Aligning two models to each other (``zoo.rebasin.match_pairs``, batched) finds the permutation between
    them far more reliably than aligning both to a third model: weight matching is a local search, and two
    copies of one network started from different frames can stop in different optima of the one-reference
    problem. Each distance is the distance under some permutation: an upper bound of the distance up to
    permutations, like the one-reference distance, and usually a much tighter one.
    """
    spec = spec_for_layout(layout)
    mask = layout.parameter_mask()
    n, c = candidates.shape
    earlier = (candidates[:, :, None] == candidates[:, None, :]).tril(-1).any(2)  # [n, c] repeats an earlier one
    rows = torch.arange(n).repeat_interleave(c)[~earlier.reshape(-1)]
    cols = candidates.reshape(-1)[~earlier.reshape(-1)]
    d = torch.full((n * c,), float("inf"), dtype=torch.float64)
    flat_d = torch.empty(len(rows), dtype=torch.float64)
    for lo in range(0, len(rows), PAIR_CHUNK):
        refs, models = b[cols[lo : lo + PAIR_CHUNK]], a[rows[lo : lo + PAIR_CHUNK]]
        res = match_pairs(spec, layout.unflatten_batch(refs), layout.unflatten_batch(models), seed=seed)
        moved = permute_flat(spec, layout, models, res.perms)
        flat_d[lo : lo + PAIR_CHUNK] = (moved[:, mask].to(torch.float64) - refs[:, mask].to(torch.float64)).norm(dim=1)
    d[~earlier.reshape(-1)] = flat_d
    d = d.view(n, c)
    best = d.argmin(1)
    return d.gather(1, best[:, None])[:, 0], candidates.gather(1, best[:, None])[:, 0]


def permutation_nn(
    layout: Layout,
    a_canon: torch.Tensor,
    a_raw: torch.Tensor,
    b_canon: torch.Tensor,
    b_raw: torch.Tensor,
    refine: int = 4,
    exclude_self: bool = False,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-neighbour L2 up to hidden-unit permutations: (distance [n], index [n]) of a's rows against b's.

    The distance in the one-reference canonical frame, lowered where matching a row directly to one of its
    ``refine`` nearest canonical rows or its nearest raw row gives less (``refine=0``: canonical frame only).
    """
    mask = layout.parameter_mask()
    dist, arg = nearest_l2(a_canon[:, mask], b_canon[:, mask], exclude_self)
    if refine <= 0 or len(a_canon) == 0:
        return dist, arg
    cand = torch.cat(
        [
            nearest_candidates(a_canon[:, mask], b_canon[:, mask], refine, exclude_self),
            nearest_candidates(a_raw[:, mask], b_raw[:, mask], 1, exclude_self),
        ],
        1,
    )
    d2, arg2 = matched_l2(layout, a_canon, b_canon, cand, seed)
    better = d2 < dist
    return torch.where(better, d2, dist), torch.where(better, arg2, arg)


def align_to(layout: Layout, reference: torch.Tensor, weights: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Flat weights [n, P] aligned to one flat reference [P] by Git Re-Basin weight matching (same functions)."""
    if weights.shape[0] == 0:
        return weights
    return align_flat(layout, reference, weights, seed=seed)[0]
