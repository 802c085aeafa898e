"""Activation matching (Git Re-Basin's first method; for transformers, Verma & Elbayad 2024): permute a network's
hidden units to maximize the correlation of their activations with a reference's on the same TRAINING inputs.

Feature sites come from the traced spec: the input and the output of every Linear, Conv and LayerNorm whose
axis is in a permutation group (a Linear reads its input's group and writes its weight's row group; a Conv
likewise on axis 1; a LayerNorm reads and writes its parameters' group). On a pre-norm transformer the residual
stream is thus seen at every LayerNorm's input (the stream after each block) and output, at the embedding's,
attention output projections' and MLP outputs' writes and at the head's input; queries and keys at q's and k's
outputs, values at v's output and the attention output (o's input), MLP units at their pre- and
post-activations. A tensor read by several layers (q, k and v read one LayerNorm output) counts once.

Per site, the Pearson correlation of every (reference unit, model unit) pair over samples and positions (tokens,
pixels) is computed from float64 moments accumulated over data chunks; a group's similarity is the mean of its
sites' correlation matrices and one assignment per group maximizes it (no coordinate descent: activations do not
depend on the other groups' permutations). Groups an attention ties (``PermutationSpec.heads``) are solved
jointly like weight matching's: best within-head assignment per (reference head, model head) pair, then heads.
A unit constant on the data correlates 0 with everything. The caller passes training inputs only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.func import functional_call

from zoo.errors import ZooError
from zoo.rebasin.matching import MatchResult, _coordinates, _solve_heads, check_finite
from zoo.rebasin.spec import PermutationSpec

DEAD = 1e-12  # a unit whose variance is below this is constant on the data: correlation 0


@dataclass(frozen=True)
class Site:
    """One place activations are read: ``module``'s input (``where="in"``) or output, channels on ``axis``."""

    module: str
    where: str
    group: str
    axis: int


def feature_sites(spec: PermutationSpec, module: nn.Module) -> list[Site]:
    """The feature sites of ``module`` under ``spec`` (module docstring), in module order."""
    sites = []
    for name, m in module.named_modules():
        w = f"{name}.weight"
        if w not in spec.axes:
            continue
        ax = spec.axes[w]
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            axis = -1 if isinstance(m, nn.Linear) else 1
            for where, g in (("in", ax[1]), ("out", ax[0])):
                if g is not None:
                    sites.append(Site(name, where, g, axis))
        elif isinstance(m, nn.LayerNorm) and ax[0] is not None:
            sites += [Site(name, "in", ax[0], -1), Site(name, "out", ax[0], -1)]
    return sites


class _Moments:
    """float64 sums over points of one site's reference features r, model features m, their squares and r m^T."""

    def __init__(self, s: int):
        z = torch.zeros(s, dtype=torch.float64)
        self.n, self.r, self.m, self.rr, self.mm = 0, z, z.clone(), z.clone(), z.clone()
        self.rm = torch.zeros(s, s, dtype=torch.float64)

    def add(self, r: torch.Tensor, m: torch.Tensor) -> None:
        r, m = r.double(), m.double()
        self.n += r.shape[0]
        self.r += r.sum(0)
        self.m += m.sum(0)
        self.rr += r.square().sum(0)
        self.mm += m.square().sum(0)
        self.rm += r.T @ m

    def correlation(self) -> torch.Tensor:
        n = max(self.n, 1)
        mr, mm = self.r / n, self.m / n
        vr = (self.rr / n - mr.square()).clamp_min(0.0)
        vm = (self.mm / n - mm.square()).clamp_min(0.0)
        cov = self.rm / n - torch.outer(mr, mm)
        sd = torch.outer(vr.sqrt(), vm.sqrt())
        ok = torch.outer(vr > DEAD, vm > DEAD)
        return torch.where(ok, cov / sd.clamp_min(DEAD), torch.zeros_like(cov))


def _features(module: nn.Module, state: Mapping[str, torch.Tensor], X: torch.Tensor, sites: list[Site]) -> list:
    """Per site, its features ``[points, units]`` on ``X`` (None for a repeat of a tensor already read)."""
    mods = dict(module.named_modules())
    got: list = [None] * len(sites)
    seen: set[int] = set()
    alive: list[torch.Tensor] = []  # the tensors seen stay referenced, so no new tensor reuses their id

    def hook_for(k: int) -> Callable:
        site = sites[k]

        def hook(_m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            t = inp[0] if site.where == "in" else out
            if id(t) in seen:
                return
            seen.add(id(t))
            alive.append(t)
            got[k] = t.detach().movedim(site.axis, -1).reshape(-1, t.shape[site.axis])

        return hook

    handles = [mods[s.module].register_forward_hook(hook_for(k)) for k, s in enumerate(sites)]
    try:
        with torch.no_grad():
            functional_call(module, dict(state), (X,))
    finally:
        for h in handles:
            h.remove()
    return got


def activation_similarity(
    spec: PermutationSpec,
    module: nn.Module,
    reference: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    X: torch.Tensor,
    chunk: int = 256,
) -> dict[str, torch.Tensor]:
    """Group -> ``[s, s]`` float64: the mean over the group's sites of corr(reference unit i, model unit j) on ``X``
    (zeros for a group no site reads)."""
    sites = feature_sites(spec, module)
    moments: dict[int, _Moments] = {}
    for lo in range(0, len(X), chunk):
        xr = _features(module, reference, X[lo : lo + chunk], sites)
        xm = _features(module, state, X[lo : lo + chunk], sites)
        for k, (r, m) in enumerate(zip(xr, xm)):
            if r is None or m is None:
                continue
            moments.setdefault(k, _Moments(r.shape[1])).add(r, m)
    out = {g: torch.zeros(s, s, dtype=torch.float64) for g, s in spec.sizes.items()}
    count = dict.fromkeys(spec.sizes, 0)
    for k, mo in moments.items():
        out[sites[k].group] += mo.correlation()
        count[sites[k].group] += 1
    return {g: A / max(count[g], 1) for g, A in out.items()}


def activation_matching(
    spec: PermutationSpec,
    module: nn.Module,
    reference: Mapping[str, torch.Tensor],
    states: Mapping[str, torch.Tensor],
    X: torch.Tensor,
    *,
    chunk: int = 256,
) -> MatchResult:
    """Match every model of a stack (tensors ``[n, *shape]``) to ``reference`` by activation correlations on the
    inputs ``X`` (training data only); ``module`` is the layout's module (its own weights are not used).

    Returns permutations ``[n, size]`` per group; ``objective``/``initial``: the sum over groups of the summed
    (site-averaged) correlation of matched / identically indexed units; ``history`` [2, n]; ``passes``: ones (one
    solve per group)."""
    spec.check_state(reference, what="reference")
    spec.check_state(states, batched=True, what="models")
    check_finite(reference, "reference")
    check_finite(states, "models", batched=True)
    if len(X) == 0:
        raise ZooError("activation matching needs training inputs; got none")
    n = next(iter(states.values())).shape[0]
    perms = {g: torch.empty(n, s, dtype=torch.long) for g, s in spec.sizes.items()}
    initial = np.zeros(n)
    final = np.zeros(n)
    coords = _coordinates(spec)
    module = module.eval()
    for i in range(n):
        sim = activation_similarity(spec, module, reference, {k: v[i] for k, v in states.items()}, X, chunk)
        done: set[str] = set()
        for g in spec.groups:
            if g in done:
                continue
            coord = coords[g]
            done.update(coord)
            As = [sim[c].numpy() for c in coord]
            if len(coord) == 1:
                qs = [linear_sum_assignment(As[0], maximize=True)[1]]
            else:
                qs = [q[0] for q in _solve_heads([A[None] for A in As], spec.heads[coord[0]][1])]
            for c, A, q in zip(coord, As, qs):
                perms[c][i] = torch.from_numpy(np.asarray(q, dtype=np.int64))
                initial[i] += float(np.trace(A))
                final[i] += float(A[np.arange(len(q)), q].sum())
    return MatchResult(
        perms,
        torch.from_numpy(final),
        torch.from_numpy(initial),
        np.stack([initial, final]),
        np.ones(n, dtype=np.int64),
    )


__all__ = ["Site", "feature_sites", "activation_similarity", "activation_matching"]
