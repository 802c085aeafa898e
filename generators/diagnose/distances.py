"""Distances between flat weight vectors up to hidden-unit permutations, and overlaps of error sets.

Everything is batched and nothing is quadratic in Python: IoUs are boolean matrix products; nearest
neighbours come from one float32 matrix product per block of ROW_CHUNK rows (``|b|^2 - 2 a.b`` on vectors
centred on b's mean), whose RERANK extra candidates are then re-ranked by their distances recomputed in
float64, so the neighbours and distances returned are those of a float64 computation unless float32
rounding moves a row's true nearest out of its k + RERANK closest (a near-tie). Direct weight matchings
run as one ``zoo.rebasin.match_pairs`` per chunk of PAIR_CHUNK (sample, candidate) pairs, and a candidate
is matched only when a permutation-invariant lower bound of its distance (:func:`invariant_signature`)
is below the best distance known so far: one it skips could not have won, so the result is the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.rebasin import align_flat, match_pairs, permute_flat, spec_for_layout

ROW_CHUNK = 1024  # rows of a distance or IoU block computed at once (bounds memory on big zoos)
RERANK_CHUNK = 256  # rows whose candidate distances are recomputed in float64 at once
RERANK = 2  # candidates beyond the k asked for, re-ranked in float64 (absorbs float32 near-ties)
PAIR_CHUNK = 4096  # (sample, candidate) pairs weight-matched at once


def iou_matrix(errors_a: torch.Tensor, errors_b: torch.Tensor) -> torch.Tensor:
    """IoU [n, m] of boolean error sets errors_a [n, N] and errors_b [m, N]; two empty sets have IoU 1."""
    a, b = errors_a.to(torch.float32), errors_b.to(torch.float32)
    inter = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))


def max_iou(
    errors_a: torch.Tensor,
    errors_b: torch.Tensor,
    exclude_self: bool = False,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(max IoU [n], argmax [n]) of each error set of errors_a [n, N] over the sets of errors_b [m, N], on the CPU.

    ``exclude_self``: a and b are the same models (row i of a is row i of b) and the pair (i, i) is skipped.
    ``device``: where the products run (None: where errors_b is).
    """
    if errors_a.shape[1] != errors_b.shape[1]:
        raise ZooError(f"error sets over {errors_a.shape[1]} and {errors_b.shape[1]} test points cannot be compared")
    if exclude_self and errors_b.shape[0] < 2:
        raise ZooError("max_iou with self excluded needs at least 2 models")
    dev = errors_b.device if device is None else device
    best = torch.empty(errors_a.shape[0], device=dev)
    arg = torch.empty(errors_a.shape[0], dtype=torch.int64, device=dev)
    b = errors_b.to(dev, torch.float32)  # counts are exact in float32 below 2**24 test points
    b_count = b.sum(1)[None, :]
    for lo in range(0, errors_a.shape[0], ROW_CHUNK):
        a = errors_a[lo : lo + ROW_CHUNK].to(dev, torch.float32)
        inter = a @ b.T
        union = a.sum(1, keepdim=True) + b_count - inter
        m = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))
        if exclude_self:
            rows = torch.arange(m.shape[0], device=dev)
            m[rows, rows + lo] = -1.0
        best[lo : lo + ROW_CHUNK], arg[lo : lo + ROW_CHUNK] = m.max(1)
    return best.cpu(), arg.cpu()


def knn(
    a: torch.Tensor, b: torch.Tensor, k: int = 1, exclude_self: bool = False, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance [n, k] float64, index [n, k]) on the CPU of the k nearest rows of b [m, P] to each row of a [n, P]
    (L2), searched on ``device`` (None: where b is).

    A float32 matrix product per block of rows ranks b (``|b|^2 - 2 a.b`` on vectors centred on b's mean,
    which keeps that form accurate); the k + RERANK closest are re-ranked by their distances recomputed
    directly in float64, so an exact copy gives 0. ``exclude_self``: a and b are the same rows and the pair
    (i, i) is skipped.
    """
    if a.shape[1] != b.shape[1]:
        raise ZooError(f"vectors of {a.shape[1]} and {b.shape[1]} coordinates cannot be compared")
    if exclude_self and b.shape[0] < 2:
        raise ZooError("nearest-neighbour distances with self excluded need at least 2 models")
    n, m = a.shape[0], b.shape[0] - int(exclude_self)
    k = max(1, min(int(k), m))
    kk = min(k + RERANK, m)
    dev = b.device if device is None else device
    a, b = a.to(dev), b.to(dev)
    centre = b.to(torch.float64).mean(0)
    B = (b.to(torch.float64) - centre).to(torch.float32)
    b_sq = B.square().sum(1)
    dist = torch.empty(n, k, dtype=torch.float64, device=dev)
    out = torch.empty(n, k, dtype=torch.int64, device=dev)
    for lo in range(0, n, ROW_CHUNK):
        A = (a[lo : lo + ROW_CHUNK].to(torch.float64) - centre).to(torch.float32)
        d = torch.addmm(b_sq[None, :], A, B.T, alpha=-2.0)  # |a - b|^2 - |a|^2: the same order along a row
        if exclude_self:
            rows = torch.arange(d.shape[0], device=dev)
            d[rows, rows + lo] = float("inf")
        cand = d.topk(kk, dim=1, largest=False).indices if kk < d.shape[1] else d.argsort(1)[:, :kk]
        for r0 in range(0, len(cand), RERANK_CHUNK):
            c = cand[r0 : r0 + RERANK_CHUNK]
            rows_a = a[lo + r0 : lo + r0 + len(c)].to(torch.float64)
            exact = (rows_a[:, None, :] - b[c].to(torch.float64)).norm(dim=2)  # [r, kk]
            order = exact.argsort(dim=1, stable=True)[:, :k]  # ties keep the matrix product's order
            dist[lo + r0 : lo + r0 + len(c)] = exact.gather(1, order)
            out[lo + r0 : lo + r0 + len(c)] = c.gather(1, order)
    return dist.cpu(), out.cpu()


def nearest_candidates(a: torch.Tensor, b: torch.Tensor, k: int = 1, exclude_self: bool = False) -> torch.Tensor:
    """Indices [n, k] of the k nearest rows of b [m, P] to each row of a [n, P], nearest first (:func:`knn`)."""
    return knn(a, b, k, exclude_self)[1]


def nearest_l2(a: torch.Tensor, b: torch.Tensor, exclude_self: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance [n] float64, index [n]) of each row of a [n, P] to its nearest row of b [m, P] (L2, :func:`knn`);
    an exact copy gives 0. ``exclude_self``: a and b are the same rows and the pair (i, i) is skipped."""
    dist, arg = knn(a, b, 1, exclude_self)
    return dist[:, 0], arg[:, 0]


def invariant_signature(layout: Layout, weights: torch.Tensor) -> torch.Tensor:
    """[n, Q] float64 vectors s with ||s(a) - s(b)|| <= ||a - pi(b)|| for every hidden-unit permutation (and sign
    flip) pi, over trainable parameters: a lower bound of the distance up to permutations, cheap to compare.

    Per trainable tensor: the sorted norms of its slices along its first permuted axis (a slice's norm does
    not change when its other axes are permuted or sign-flipped, and sorting both sides is the best pairing
    of two sets of numbers); the sorted values themselves for a permuted vector without sign flips (biases);
    the tensor as it is when no axis is permuted.
    """
    spec = spec_for_layout(layout)
    states = layout.unflatten_batch(weights)
    n = weights.shape[0]
    parts = []
    for e in layout.entries:
        if e.kind != "parameter":
            continue
        t = states[e.name].to(torch.float64)
        axes = spec.axes.get(e.name, (None,) * len(e.shape))
        axis = next((i for i, g in enumerate(axes) if g is not None), None)
        if axis is None:
            parts.append(t.reshape(n, -1))
        elif t.ndim == 2 and axes[axis] not in spec.signs:  # a permuted vector: its values, sorted
            parts.append(t.sort(1).values)
        else:
            parts.append(t.movedim(axis + 1, 1).reshape(n, t.shape[axis + 1], -1).norm(dim=2).sort(1).values)
    return torch.cat(parts, 1) if parts else torch.zeros(n, 0, dtype=torch.float64)


def matched_l2(
    layout: Layout,
    a: torch.Tensor,
    b: torch.Tensor,
    candidates: torch.Tensor,
    seed: int = 0,
    upper: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance [n], index into b [n]): each row of a [n, P] weight-matched directly to each of its candidate
    rows of b (``candidates`` [n, c]; a repeated candidate is matched once) and the closest kept; L2 over
    trainable parameters, float64.

    Aligning two models to each other (``zoo.rebasin.match_pairs``, batched) finds the permutation between
    them far more reliably than aligning both to a third model: weight matching is a local search, and two
    copies of one network started from different frames can stop in different optima of the one-reference
    problem. Each distance is the distance under some permutation: an upper bound of the distance up to
    permutations, like the one-reference distance, and usually a much tighter one.

    ``upper`` [n]: a distance each row already has (e.g. its one-reference distance). Candidates are then
    matched column by column, and one whose lower bound (:func:`invariant_signature`) is not below the best
    distance known for its row is skipped (it counts as inf): it could not have given less, so a caller
    keeping the smaller of ``upper`` and the result gets what matching every candidate gives.
    """
    spec = spec_for_layout(layout)
    mask = layout.parameter_mask()
    n, c = candidates.shape
    earlier = (candidates[:, :, None] == candidates[:, None, :]).tril(-1).any(2)  # [n, c] repeats an earlier one
    d = torch.full((n, c), float("inf"), dtype=torch.float64)
    best = None if upper is None else upper.to(torch.float64).clone()
    if best is not None:
        sig_a, sig_b = invariant_signature(layout, a), invariant_signature(layout, b)
    for j in range(c):  # a pair's matching does not depend on the pairs batched with it: columns change nothing
        keep = ~earlier[:, j]
        if best is not None:
            keep &= (sig_a - sig_b[candidates[:, j]]).norm(dim=1) < best
        rows = torch.nonzero(keep).flatten()
        cols = candidates[rows, j]
        for lo in range(0, len(rows), PAIR_CHUNK):
            r, refs, models = rows[lo : lo + PAIR_CHUNK], b[cols[lo : lo + PAIR_CHUNK]], a[rows[lo : lo + PAIR_CHUNK]]
            res = match_pairs(spec, layout.unflatten_batch(refs), layout.unflatten_batch(models), seed=seed)
            moved = permute_flat(spec, layout, models, res.perms)
            d[r, j] = (moved[:, mask].to(torch.float64) - refs[:, mask].to(torch.float64)).norm(dim=1)
        if best is not None:
            best = torch.minimum(best, d[:, j])
    pick = d.argmin(1)
    return d.gather(1, pick[:, None])[:, 0], candidates.gather(1, pick[:, None])[:, 0]


@dataclass
class Neighbours:
    """Nearest training rows of each row, three ways (distances [n] float64, indices [n] into the training rows)."""

    l2: torch.Tensor  # up to permutations: the canonical distance, lowered by direct matchings (permutation_nn)
    index: torch.Tensor
    canonical: torch.Tensor  # both in the one-reference canonical frame
    canonical_index: torch.Tensor
    raw: torch.Tensor  # as trained, no alignment
    raw_index: torch.Tensor


def neighbours(
    layout: Layout,
    a_canon: torch.Tensor,
    a_raw: torch.Tensor,
    b_canon: torch.Tensor,
    b_raw: torch.Tensor,
    refine: int = 4,
    exclude_self: bool = False,
    seed: int = 0,
    device: torch.device | None = None,
) -> Neighbours:
    """Nearest-neighbour L2 of a's rows against b's: up to hidden-unit permutations, in the canonical frame
    and raw, from one nearest-neighbour search per frame.

    Up to permutations: the distance in the one-reference canonical frame, lowered where matching a row
    directly to one of its ``refine`` nearest canonical rows or its nearest raw row gives less (``refine=0``:
    canonical frame only). ``device``: where the nearest-neighbour searches run (None: where b is); the direct
    weight matchings run on the CPU.
    """
    mask = layout.parameter_mask()
    cd, ci = knn(a_canon[:, mask], b_canon[:, mask], max(1, refine), exclude_self, device)
    rd, ri = knn(a_raw[:, mask], b_raw[:, mask], 1, exclude_self, device)
    dist, arg = cd[:, 0], ci[:, 0]
    if refine > 0 and len(a_canon):
        cand = torch.cat([ci[:, :refine], ri], 1)
        d2, arg2 = matched_l2(layout, a_canon, b_canon, cand, seed, upper=dist)
        better = d2 < dist
        l2, index = torch.where(better, d2, dist), torch.where(better, arg2, arg)
    else:
        l2, index = dist, arg
    return Neighbours(l2, index, dist, arg, rd[:, 0], ri[:, 0])


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
    nb = neighbours(layout, a_canon, a_raw, b_canon, b_raw, refine, exclude_self, seed)
    return nb.l2, nb.index


def align_to(layout: Layout, reference: torch.Tensor, weights: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Flat weights [n, P] aligned to one flat reference [P] by Git Re-Basin weight matching (same functions)."""
    if weights.shape[0] == 0:
        return weights
    return align_flat(layout, reference, weights, seed=seed)[0]
