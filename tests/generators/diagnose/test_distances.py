"""The scaled distance engine against plain computations: k nearest rows (float32 matrix product, float64
re-rank) against float64 brute force, the permutation-invariant lower bound, pruned direct matchings against
matching every candidate, and the row-argmax shortcut of the assignment solver against scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import zoo.rebasin.matching as matching
from generators.diagnose import distances
from generators.diagnose.distances import invariant_signature, knn, matched_l2, neighbours
from zoo.arch import arch_spec, build_model
from zoo.layout import layout_of
from zoo.rebasin import permute_flat, random_perms, spec_for_layout
from zoo.rebasin.signs import flip_flat, random_signs


def layout_for(name: str, width: int = 12, depth: int = 2):
    arch = arch_spec(name, [5], 3, width, depth)
    return layout_of(build_model(arch), arch)


def random_models(layout, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, layout.size, generator=g)


def test_knn_matches_float64_brute_force_far_from_the_origin():
    g = torch.Generator().manual_seed(0)
    b = torch.randn(300, 200, generator=g) * 2 + 50  # far from the origin: a plain |a|^2+|b|^2-2ab loses digits
    a = torch.cat([b[[5, 9]], b[:40] + 0.05 * torch.randn(40, 200, generator=g), torch.randn(20, 200) + 50])
    d, idx = knn(a, b, 3)
    brute = (a.double()[:, None] - b.double()[None]).norm(dim=2)  # direct differences (cdist uses |a|^2 too)
    ref_d, ref_i = brute.topk(3, dim=1, largest=False)
    assert torch.equal(idx, ref_i) and torch.allclose(d, ref_d, rtol=1e-12, atol=1e-12)
    assert d[:2, 0].tolist() == [0.0, 0.0]  # exact copies: exactly 0 (distances recomputed in float64)
    d_self, i_self = knn(b, b, 2, exclude_self=True)
    brute = (b.double()[:, None] - b.double()[None]).norm(dim=2).fill_diagonal_(float("inf"))
    ref_d, ref_i = brute.topk(2, dim=1, largest=False)
    assert torch.equal(i_self, ref_i) and torch.allclose(d_self, ref_d)
    old_rows = distances.ROW_CHUNK
    try:  # blocks of rows change nothing
        distances.ROW_CHUNK = 7
        assert torch.equal(knn(b, b, 2, exclude_self=True)[1], i_self)
    finally:
        distances.ROW_CHUNK = old_rows


@pytest.mark.parametrize("name", ["mlp", "siren"])
def test_invariant_signature_is_a_lower_bound_under_every_symmetry(name):
    layout = layout_for(name)
    spec = spec_for_layout(layout)
    mask = layout.parameter_mask()
    a = random_models(layout, 16, 1)
    g = torch.Generator().manual_seed(2)
    moved = permute_flat(spec, layout, a, random_perms(spec, g, n=16))
    if spec.signs:
        moved = flip_flat(spec, layout, moved, random_signs(spec, g, n=16))
    sa, sm = invariant_signature(layout, a), invariant_signature(layout, moved)
    assert torch.allclose(sa, sm, atol=1e-5)  # the same network in another frame has the same signature
    b = random_models(layout, 16, 3)
    sb = invariant_signature(layout, b)
    bound = (sa - sb).norm(dim=1)
    for r in range(20):  # every permutation of b is at least as far from a as the bound
        pb = permute_flat(spec, layout, b, random_perms(spec, torch.Generator().manual_seed(10 + r), n=16))
        assert ((a - pb)[:, mask].double().norm(dim=1) >= bound - 1e-9).all()
    # and a tight one where it can be: a permuted copy at twice the scale is exactly |a| away, and so is the bound
    tight = (sa - invariant_signature(layout, 2 * moved)).norm(dim=1)
    assert torch.allclose(tight, a[:, mask].double().norm(dim=1), rtol=1e-5)


def test_pruned_matching_gives_what_matching_every_candidate_gives(monkeypatch):
    layout = layout_for("mlp", width=10)
    spec = spec_for_layout(layout)
    b = random_models(layout, 40, 4)
    g = torch.Generator().manual_seed(5)
    src = torch.randint(40, (30,), generator=g)
    a = permute_flat(
        spec, layout, b[src] + 0.01 * torch.randn(30, layout.size, generator=g), random_perms(spec, g, n=30)
    )
    a[25:] = random_models(layout, 5, 6)  # a few that are copies of nothing
    mask = layout.parameter_mask()
    cd, ci = knn(a[:, mask], b[:, mask], 3)
    cand = torch.cat([src[:, None], ci], 1)  # the source first, as the canonical nearest usually is
    pairs = []
    real = distances.match_pairs

    def counted(spec, refs, models, **kw):
        pairs.append(len(next(iter(models.values()))))
        return real(spec, refs, models, **kw)

    monkeypatch.setattr(distances, "match_pairs", counted)
    full_d, full_i = matched_l2(layout, a, b, cand)
    n_full, pairs[:] = sum(pairs), []
    pruned_d, pruned_i = matched_l2(layout, a, b, cand, upper=cd[:, 0])
    assert sum(pairs) < n_full / 2  # the bound skipped most candidates of the copies
    keep_full = torch.minimum(full_d, cd[:, 0])
    assert torch.equal(torch.minimum(pruned_d, cd[:, 0]), keep_full)
    win = full_d < cd[:, 0]
    assert torch.equal(pruned_i[win], full_i[win])
    # most copies found (noise 0.01 per coordinate; matching is a local search and random nets have no structure)
    assert (keep_full[:25] < 0.05 * cd[25:, 0].min()).float().mean() >= 0.8
    nb = neighbours(layout, a, a, b, b, refine=3)  # canonical and raw frames the same here: candidates ci, ci[:, 0]
    plain, _ = matched_l2(layout, a, b, ci)
    assert torch.equal(nb.l2, torch.minimum(plain, cd[:, 0])) and torch.equal(nb.canonical, cd[:, 0])


def test_row_argmax_shortcut_is_an_optimal_assignment():
    g = np.random.default_rng(0)
    A = np.concatenate([g.random((50, 16, 16)), np.eye(16)[None] * 3 + g.random((50, 16, 16))])  # random, easy
    A = A[:, :, g.permutation(16)].astype(np.float32)
    q = np.empty((100, 16), dtype=np.int64)
    matching._solve(A, q, np.arange(100), None)
    for j in range(100):
        best = linear_sum_assignment(A[j], maximize=True)[1]
        assert sorted(q[j]) == list(range(16))
        assert A[j][np.arange(16), q[j]].sum() == pytest.approx(A[j][np.arange(16), best].sum(), rel=1e-6)
