"""Weight matching (Git Re-Basin): permute a network's hidden units to maximize its inner product with a reference.

Coordinate descent over permutation groups: in a seeded random order, build each group's similarity
matrix over every axis it touches (other groups' permutations applied) and solve the assignment with
``scipy.optimize.linear_sum_assignment(maximize=True)``; stop after a full pass with no improvement.
The objective ``sum_params <ref, permuted>`` equals ``(|ref|^2 + |x|^2 - |ref - x|^2) / 2``, so it rises
exactly when the L2 distance falls. ``weight_matching`` is the plain one-pair implementation;
``match_population`` runs the same descent for a stacked population with one GEMM per group and
pass building every model's similarity matrix, and ``merge_many`` aligns models to each other.
Groups an attention ties (``PermutationSpec.heads``) are one coordinate: every pair of heads (ref a, current b)
gets its best within-head assignment in each tied group, the head assignment maximizes the sum of those, so the
step is exact over permutations that move heads as wholes and dims within heads.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from zoo.errors import ZooError
from zoo.rebasin.apply import (
    Perms,
    head_perm,
    identity_perms,
    permute_present,
    permute_states,
    random_perms,
    take_axis,
)
from zoo.rebasin.spec import PermutationSpec

RTOL = 1e-6  # a step must raise the objective by this fraction of its size (float32 similarity noise is ~1e-7)


@dataclass
class MatchResult:
    """Permutations ``[n, size]`` per group (``[size]`` from ``weight_matching``) and the objective's course.

    ``objective``/``initial``: [n] float64 objective after / before matching. ``history``: [passes + 1, n],
    the objective after each full pass of restart 0 (models that converged keep their last value).
    ``passes``: [n] full passes run by restart 0, the converged pass included.
    """

    perms: Perms
    objective: torch.Tensor
    initial: torch.Tensor
    history: np.ndarray
    passes: np.ndarray


def check_finite(states: Mapping[str, torch.Tensor], what: str = "model", batched: bool = False) -> None:
    """Raise ZooError if any floating tensor holds NaN or inf (matching such weights is meaningless)."""
    bad: set[int] = set()
    for name, t in states.items():
        if t.is_floating_point():
            ok = torch.isfinite(t.reshape(t.shape[0], -1)).all(1) if batched else torch.isfinite(t).all()
            if batched:
                bad |= set((~ok).nonzero().flatten().tolist())
            elif not bool(ok):
                raise ZooError(f"{what} has non-finite weights (NaN or inf) in {name!r}; cannot align it")
    if bad:
        raise ZooError(f"{what}: models at positions {sorted(bad)[:10]} have non-finite weights (NaN or inf)")


def _objective(
    spec: PermutationSpec, ref: Mapping[str, torch.Tensor], cur: Mapping[str, torch.Tensor], names=None
) -> torch.Tensor:
    """[n] float64 sum over matched params of <ref, cur>; ref tensors [1 or n, ...], cur [n, ...]."""
    names = spec.matched if names is None else names
    n = next(iter(cur.values())).shape[0]
    total = torch.zeros(n, dtype=torch.float64)
    for k in names:
        r = ref[k].double().reshape(ref[k].shape[0], -1)
        c = cur[k].double().reshape(n, -1)
        total += (c * r).sum(1) if r.shape[0] == n else c @ r[0]
    return total


def _similarity(
    spec: PermutationSpec, group: str, ref: Mapping[str, torch.Tensor], cur: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """[n, s, s]: A[m, i, j] = sum over axes of ``group`` of <ref unit i, current unit j>."""
    s = spec.sizes[group]
    n = next(iter(cur.values())).shape[0]
    A = None
    for name, axis in spec.touches(group):
        if name not in cur:
            continue
        r, b = ref[name], cur[name]
        if r.shape[0] == 1 and b.ndim == 3 and axis == 1:  # a matrix's input axis: no transposed copy needed
            term = torch.matmul(r[0].T, b)
            A = term if A is None else A.add_(term)
            continue
        b = b.movedim(axis + 1, 1).reshape(n, s, -1)
        if r.shape[0] == 1:  # one reference for all: one broadcast GEMM over the whole population
            term = torch.matmul(r[0].movedim(axis, 0).reshape(s, -1), b.transpose(1, 2))
        else:
            term = torch.bmm(r.movedim(axis + 1, 1).reshape(n, s, -1), b.transpose(1, 2))
        A = term if A is None else A.add_(term)
    return A if A is not None else torch.zeros(n, s, s)


def _neighbours(spec: PermutationSpec) -> dict[str, set[str]]:
    """Groups whose similarity matrix changes when ``g`` changes: those sharing a matched tensor with it."""
    out: dict[str, set[str]] = {g: set() for g in spec.groups}
    for k in spec.matched:
        gs = {g for g in spec.axes[k] if g is not None}
        for g in gs:
            out[g] |= gs - {g}
    return out


def _solve(A: np.ndarray, q: np.ndarray, todo: np.ndarray, pool: ThreadPoolExecutor | None) -> None:
    """Fill ``q[j]`` with the optimal assignment of ``A[j]`` for j in ``todo`` (scipy releases the GIL, so a
    thread pool solves several models' assignments at once).

    Where every row's largest entry sits in a different column, that row-wise argmax is the optimal
    assignment (no assignment can sum more than each row's maximum) and scipy is not called: near
    convergence, and between near-copies, most problems are of this kind (the same optimum scipy returns
    unless a row has tied maxima)."""
    if len(todo):
        arg = A[todo].argmax(2)
        is_perm = (np.sort(arg, 1) == np.arange(A.shape[2])).all(1)
        q[todo[is_perm]] = arg[is_perm]
        todo = todo[~is_perm]

    def run(js):
        for j in js:
            q[j] = linear_sum_assignment(A[j], maximize=True)[1]

    if pool is None or len(todo) < 8:
        run(todo)
        return
    list(pool.map(run, np.array_split(todo, max(1, len(todo) // 16))))


def _solve_heads(As: list[np.ndarray], heads: int) -> list[np.ndarray]:
    """Joint assignment of tied groups (similarities ``As``, each [m, H*d, H*d]): per model, the best
    within-head assignment of every (ref head, current head) pair summed over the groups, then the head
    assignment maximizing that sum. Returns one [m, H*d] permutation per group (block-structured)."""
    m = As[0].shape[0]
    value = np.zeros((m, heads, heads))
    inner = []
    for A in As:
        d = A.shape[1] // heads
        blocks = A.reshape(m, heads, d, heads, d)
        best = np.empty((m, heads, heads, d), dtype=np.int64)
        for j in range(m):
            for a in range(heads):
                for b in range(heads):
                    cols = linear_sum_assignment(blocks[j, a, :, b, :], maximize=True)[1]
                    best[j, a, b] = cols
                    value[j, a, b] += blocks[j, a, np.arange(d), b, cols].astype(np.float64).sum()
        inner.append(best)
    pi = np.stack([linear_sum_assignment(value[j], maximize=True)[1] for j in range(m)])  # [m, H]
    rows = np.arange(heads)
    out = []
    for best in inner:
        chosen = torch.from_numpy(best[np.arange(m)[:, None], rows, pi])  # [m, H, d]
        out.append(head_perm(torch.from_numpy(pi), chosen).numpy())
    return out


def _coordinates(spec: PermutationSpec) -> dict[str, list[str]]:
    """Group -> the groups solved together with it: its attention tie, or itself alone."""
    out = {g: [g] for g in spec.groups}
    for groups in spec.ties().values():
        for g in groups:
            out[g] = groups
    return out


def _descent(
    spec: PermutationSpec,
    ref: dict,
    cur: dict,
    perms: Perms,
    seed: int,
    max_iter: int,
    pool: ThreadPoolExecutor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Coordinate descent in place on ``cur`` (matched params, already permuted by ``perms``) and ``perms``.

    Similarity matrices are built from the current permuted weights, so the assignment found is a relative
    permutation ``q`` (identity = keep) and the linear gain is exact. A group is re-solved for a model only
    when a neighbouring group changed since its last solve (otherwise identity is still optimal, so the
    skipped solve is the one the plain algorithm would do and reject); a model stops when a full pass
    leaves nothing to re-solve, which is the plain stopping rule. Returns (history [passes + 1, n], passes [n]);
    history is the initial objective plus accepted gains.
    """
    rng = np.random.default_rng(seed)
    groups = spec.groups
    nb = _neighbours(spec)
    gidx = {g: i for i, g in enumerate(groups)}
    n = next(iter(cur.values())).shape[0]
    dirty = np.ones((len(groups), n), dtype=bool)
    passes = np.zeros(n, dtype=np.int64)
    gained = np.zeros(n, dtype=np.float64)
    history = [np.zeros(n)]
    single_ref = all(v.shape[0] == 1 for v in ref.values())
    coords = _coordinates(spec)
    for _ in range(max_iter):
        active = dirty.any(0)
        if not active.any():
            break
        passes[active] += 1
        for gi in rng.permutation(len(groups)):
            coord = coords[groups[gi]]  # the group, or every group of its attention tie
            cidx = [gidx[c] for c in coord]
            sel = np.flatnonzero(dirty[cidx].any(0))
            if sel.size == 0:
                continue
            full = sel.size == n
            selt = torch.from_numpy(sel)
            touched = [(k, a, c) for c in coord for k, a in spec.touches(c) if k in cur]
            names = list(dict.fromkeys(k for k, _, _ in touched))
            sub = {k: cur[k] if full else cur[k].index_select(0, selt) for k in names}
            sref = ref if single_ref or full else {k: ref[k].index_select(0, selt) for k in names}
            As = [_similarity(spec, c, sref, sub).numpy() for c in coord]
            m = As[0].shape[0]
            if len(coord) == 1:
                qs = [np.empty((m, As[0].shape[1]), dtype=np.int64)]
                _solve(As[0], qs[0], np.arange(m), pool)
            else:
                qs = _solve_heads(As, spec.heads[coord[0]][1])
            old = sum(np.einsum("mii->mi", A).astype(np.float64).sum(1) for A in As)
            picked = [A[np.arange(m)[:, None], np.arange(A.shape[1]), q] for A, q in zip(As, qs)]
            gain = sum(v.astype(np.float64).sum(1) for v in picked) - old
            accept = gain > RTOL * np.maximum(np.abs(old), 1e-12)
            for c in cidx:
                dirty[c, sel] = False
            if not accept.any():
                continue
            acc = np.flatnonzero(accept)
            acct = torch.from_numpy(acc)
            qt = {c: torch.from_numpy(q[acc]) for c, q in zip(coord, qs)}
            new = {}
            for k in names:
                t = sub[k].index_select(0, acct)
                for kk, a, c in touched:
                    if kk == k:
                        t = take_axis(t, a, qt[c])
                new[k] = t
            coupled = any(spec.self_coupled(c) for c in coord)
            if coupled:  # the linear gain is not the true gain: keep only real improvements
                before = _objective(
                    spec,
                    sref if single_ref else {k: sref[k][acct] for k in names},
                    {k: sub[k].index_select(0, acct) for k in names},
                    names,
                )
                after = _objective(spec, sref if single_ref else {k: sref[k][acct] for k in names}, new, names)
                ok = ((after - before) > RTOL * before.abs().clamp_min(1e-12)).numpy()
                gain[acc] = (after - before).numpy()
                acc = acc[ok]
                qt = {c: v[torch.from_numpy(ok)] for c, v in qt.items()}
                new = {k: v[torch.from_numpy(ok)] for k, v in new.items()}
                if acc.size == 0:
                    continue
                acct = torch.from_numpy(acc)
            rows_t = torch.from_numpy(sel[acc])
            for k in names:
                cur[k].index_copy_(0, rows_t, new[k])
            for c in coord:
                perms[c].index_copy_(0, rows_t, torch.gather(perms[c].index_select(0, rows_t), 1, qt[c]))
            gained[sel[acc]] += gain[acc]
            for c in coord:
                for h in nb[c]:
                    dirty[gidx[h], sel[acc]] = True
            if coupled:
                for c in cidx:
                    dirty[c, sel[acc]] = True
        history.append(gained.copy())
    return np.stack(history), passes


def _matched(spec: PermutationSpec, states: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: states[k].detach().to(torch.float32) for k in spec.matched}


def match_population(
    spec: PermutationSpec,
    reference: Mapping[str, torch.Tensor],
    states: Mapping[str, torch.Tensor],
    *,
    seed: int = 0,
    max_iter: int = 100,
    restarts: int = 0,
    chunk_size: int = 256,
    workers: int | None = None,
) -> MatchResult:
    """Match every model of a stack (tensors ``[n, *shape]``) to one reference state dict, batched.

    Restart 0 starts from the identity, restart r > 0 from random permutations seeded by ``seed + r``;
    each model keeps its best restart. Models are processed in chunks of ``chunk_size`` to bound memory;
    ``workers`` threads (default: torch's thread count) solve the assignment problems in parallel.
    """
    spec.check_state(reference, what="reference")
    spec.check_state(states, batched=True, what="models")
    check_finite(reference, "reference")
    check_finite(states, "models", batched=True)
    ref = {k: v.unsqueeze(0) for k, v in _matched(spec, reference).items()}
    return _match_stack(spec, ref, states, seed, max_iter, restarts, chunk_size, workers)


def match_pairs(
    spec: PermutationSpec,
    references: Mapping[str, torch.Tensor],
    states: Mapping[str, torch.Tensor],
    *,
    seed: int = 0,
    max_iter: int = 100,
    restarts: int = 0,
    chunk_size: int = 256,
    workers: int | None = None,
) -> MatchResult:
    """Match model i of a stack to reference i of another stack (both ``[n, *shape]``), batched like
    ``match_population`` (one batched GEMM per group and pass); e.g. to align MixUp partners pairwise."""
    spec.check_state(references, batched=True, what="references")
    spec.check_state(states, batched=True, what="models")
    n_ref, n = (next(iter(x.values())).shape[0] for x in (references, states))
    if n_ref != n:
        raise ZooError(f"match_pairs needs one reference per model, got {n_ref} references for {n} models")
    check_finite(references, "references", batched=True)
    check_finite(states, "models", batched=True)
    return _match_stack(spec, _matched(spec, references), states, seed, max_iter, restarts, chunk_size, workers)


def _match_stack(
    spec: PermutationSpec,
    ref: dict[str, torch.Tensor],
    states: Mapping[str, torch.Tensor],
    seed: int,
    max_iter: int,
    restarts: int,
    chunk_size: int,
    workers: int | None,
) -> MatchResult:
    """Match a stack in chunks to ``ref`` (matched params ``[1, ...]`` for all, or ``[n, ...]`` one per model)."""
    n = next(iter(states.values())).shape[0]
    results = []
    workers = torch.get_num_threads() if workers is None else int(workers)
    with ThreadPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        for lo in range(0, n, chunk_size):
            chunk = {k: v[lo : lo + chunk_size] for k, v in states.items()}
            single = all(v.shape[0] == 1 for v in ref.values())
            sref = ref if single else {k: v[lo : lo + chunk_size] for k, v in ref.items()}
            results.append(_match_chunk(spec, sref, chunk, seed, max_iter, restarts, pool))
    if len(results) == 1:
        return results[0]
    width = max(r.history.shape[0] for r in results)
    hist = [np.concatenate([r.history, np.repeat(r.history[-1:], width - len(r.history), 0)]) for r in results]
    return MatchResult(
        {g: torch.cat([r.perms[g] for r in results]) for g in spec.groups},
        torch.cat([r.objective for r in results]),
        torch.cat([r.initial for r in results]),
        np.concatenate(hist, 1),
        np.concatenate([r.passes for r in results]),
    )


def _match_chunk(spec, ref, states, seed, max_iter, restarts, pool=None) -> MatchResult:
    n = next(iter(states.values())).shape[0]
    base = _matched(spec, states)
    initial = _objective(spec, ref, base)
    best = None
    for r in range(restarts + 1):
        perms = identity_perms(spec, n) if r == 0 else random_perms(spec, torch.Generator().manual_seed(seed + r), n)
        cur = base if r == 0 else permute_states_matched(spec, base, perms)
        cur = {k: v.clone() for k, v in cur.items()}
        start = initial if r == 0 else _objective(spec, ref, cur)
        history, passes = _descent(spec, ref, cur, perms, seed + r, max_iter, pool)
        history = history + start.numpy()[None]
        obj = _objective(spec, ref, cur)
        if best is None:
            best = MatchResult(perms, obj, initial, history, passes)
            continue
        better = obj > best.objective
        for g in spec.groups:
            best.perms[g][better] = perms[g][better]
        best.objective = torch.where(better, obj, best.objective)
    return best


def permute_states_matched(spec: PermutationSpec, states: Mapping[str, torch.Tensor], perms: Perms) -> dict:
    """``permute_states`` restricted to the tensors present in ``states`` (e.g. only the matched parameters)."""
    return permute_present(spec, states, perms)


def weight_matching(
    spec: PermutationSpec,
    reference: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    *,
    seed: int = 0,
    max_iter: int = 100,
    restarts: int = 0,
    init: Mapping[str, torch.Tensor] | None = None,
    dtype: torch.dtype = torch.float64,
) -> MatchResult:
    """Plain one-pair weight matching of ``state`` to ``reference`` (``dtype`` arithmetic, default float64).

    This is the straightforward formulation (and the baseline the benchmark compares the batched path to):
    per group and touched tensor, the tensor's other axes are permuted from the original weights, the
    similarity matrix is summed over every axis the group touches, and the new permutation is kept if it
    raises the objective.
    """
    spec.check_state(reference, what="reference")
    spec.check_state(state, what="model")
    check_finite(reference, "reference")
    check_finite(state, "model")
    ref = {k: reference[k].to(dtype) for k in spec.matched}
    w = {k: state[k].to(dtype) for k in spec.matched}

    def permuted(k, perms, except_axis=None):
        t = w[k]
        for a, g in enumerate(spec.axes[k]):
            if g is not None and a != except_axis:
                t = t.index_select(a, perms[g])
        return t

    def objective(perms) -> float:
        return float(sum((ref[k].double() * permuted(k, perms).double()).sum() for k in spec.matched))

    initial = objective(identity_perms(spec))
    coords = _coordinates(spec)
    best, best_obj, first_hist = None, -np.inf, None
    for r in range(restarts + 1):
        if r == 0:
            perms = {g: p.clone() for g, p in (init or identity_perms(spec)).items()}
        else:
            perms = random_perms(spec, torch.Generator().manual_seed(seed + r))
        rng = np.random.default_rng(seed + r)
        hist = [objective(perms)]
        for _ in range(max_iter):
            improved = False
            for gi in rng.permutation(len(spec.groups)):
                coord = coords[spec.groups[gi]]
                As = []
                for g in coord:
                    s = spec.sizes[g]
                    A = torch.zeros(s, s, dtype=dtype)
                    for k, a in spec.touches(g):
                        if k not in w:
                            continue
                        wa = ref[k].movedim(a, 0).reshape(s, -1)
                        wb = permuted(k, perms, a).movedim(a, 0).reshape(s, -1)
                        A += wa @ wb.T
                    As.append(A)
                if len(coord) == 1:
                    cis = [torch.from_numpy(linear_sum_assignment(As[0].numpy(), maximize=True)[1])]
                else:
                    heads = spec.heads[coord[0]][1]
                    cis = [torch.from_numpy(q[0]) for q in _solve_heads([A.numpy()[None] for A in As], heads)]
                old = sum(float(A[torch.arange(len(A)), perms[g]].double().sum()) for A, g in zip(As, coord))
                new = sum(float(A[torch.arange(len(A)), ci].double().sum()) for A, ci in zip(As, cis))
                if new - old > RTOL * max(abs(old), 1e-12):
                    trial = dict(perms, **dict(zip(coord, cis)))
                    coupled = any(spec.self_coupled(g) for g in coord)
                    if coupled and objective(trial) - objective(perms) <= RTOL * abs(objective(perms)):
                        continue
                    perms = trial
                    improved = True
            hist.append(objective(perms))
            if not improved:
                break
        obj = hist[-1]
        if first_hist is None:
            first_hist = hist
        if obj > best_obj:
            best, best_obj = perms, obj
    return MatchResult(
        best,
        torch.tensor([best_obj], dtype=torch.float64),
        torch.tensor([initial], dtype=torch.float64),
        np.array(first_hist)[:, None],
        np.array([len(first_hist) - 1]),
    )


def merge_many(
    spec: PermutationSpec,
    states: Mapping[str, torch.Tensor],
    *,
    seed: int = 0,
    max_rounds: int = 50,
    max_iter: int = 100,
) -> tuple[Perms, dict[str, torch.Tensor], list[float]]:
    """MergeMany: repeatedly match each model (seeded random order) to the mean of the others.

    Stops when a round no longer lowers the mean squared distance of the models to their mean (each
    step lowers it, so it cannot rise). Returns per-model permutations ``[n, size]``, the merged (mean)
    state dict of the permuted models and the distance after each round. BatchNorm running statistics of
    the merged net are averages, not statistics of the merged net: recompute them on the training split
    (``zoo.recalibrate_bn``) before using it.
    """
    spec.check_state(states, batched=True, what="models")
    check_finite(states, "models", batched=True)
    n = next(iter(states.values())).shape[0]
    if n < 2:
        raise ZooError(f"MergeMany needs at least 2 models, got {n}")
    cur = {k: v.clone() for k, v in _matched(spec, states).items()}
    total = {k: v.sum(0) for k, v in cur.items()}
    perms = identity_perms(spec, n)
    rng = np.random.default_rng(seed)

    def spread() -> float:
        return float(sum(((v - v.mean(0, keepdim=True)) ** 2).sum() for v in cur.values())) / n

    history = [spread()]
    for _ in range(max_rounds):
        for i in rng.permutation(n):
            ref = {k: ((total[k] - cur[k][i]) / (n - 1)).unsqueeze(0) for k in cur}
            mine = {k: cur[k][i : i + 1].clone() for k in cur}
            q = identity_perms(spec, 1)
            _descent(spec, ref, mine, q, int(rng.integers(2**31)), max_iter)
            for k in cur:
                total[k] += mine[k][0] - cur[k][i]
                cur[k][i] = mine[k][0]
            for g in spec.groups:
                perms[g][i] = perms[g][i][q[g][0]]
        history.append(spread())
        if history[-1] >= history[-2] * (1 - RTOL):
            break
    permuted = permute_states(spec, states, perms)
    merged = {}
    for k, v in permuted.items():
        merged[k] = v.float().mean(0).to(v.dtype) if v.is_floating_point() else v[0]
    return perms, merged, history


__all__ = ["MatchResult", "match_population", "match_pairs", "weight_matching", "merge_many", "check_finite"]
