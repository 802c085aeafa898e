"""REPAIR (Jordan et al., ICLR 2023): give an interpolated or averaged network its endpoints' unit statistics.

Interpolating two aligned networks shrinks the variance of every unit's pre-activation (the matched units are
only partly correlated), and the collapse compounds layer by layer. REPAIR measures, on TRAINING data, each
unit's pre-activation mean and standard deviation in the endpoint networks, and rescales and shifts the
interpolated network's units, in forward order, so that each has the interpolation of the endpoints' values
(the weighted mean of the members' values for an average of many). The affine correction ``a * z + c`` is
folded into the weights, so the result is an ordinary network of the same layout:

- a unit followed by BatchNorm is corrected at the BatchNorm's output (``weight <- a * weight``,
  ``bias <- a * bias + c``); its running statistics are first recomputed on the training split
  (``zoo.evaluate.recalibrate_bn``), so for hidden BatchNorm units REPAIR and that reset agree to float
  noise (measured: docs/bench-rebasin.md) and the gain comes from units no BatchNorm follows;
- any other Linear/Conv unit is corrected at its output (its weight row and bias; a layer without a bias
  gets the scale only);
- ``outputs=True`` (the default) includes the network's output units (the logits: the softmax's
  pre-activations). Their variance collapses like any other unit's; on the BatchNorm CNNs of
  bench/rebasin.py they carry most of what REPAIR adds to the BatchNorm reset.

Statistics are population mean and variance over samples and positions (float64 sums, eval-mode forward
after the BatchNorm reset); a unit's scale is ``std_target / std`` (1 for a unit constant on the data). The test
split is never read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from zoo.datasets import Dataset
from zoo.errors import ZooError
from zoo.evaluate import CPU_FORWARD_FLOATS, recalibrate_bn
from zoo.forward import activation_floats_per_sample
from zoo.layout import Layout
from zoo.rebasin.spec import PermutationSpec, spec_for_layout

ONE_PASS_FLOATS = 32_000_000  # activations (128 MB) up to which a network is REPAIRed in one forward over all data
DEAD = 1e-12  # a unit whose variance is below this is constant on the data: shifted, never scaled


@dataclass(frozen=True)
class RepairPoint:
    """Where one layer's units are corrected: the module whose output is read, the tensors the correction is
    folded into (``weight`` axis 0 and ``bias``), and the channel axis of that output."""

    module: str
    weight: str
    bias: str | None
    axis: int
    size: int


def repair_points(spec: PermutationSpec, outputs: bool = True) -> list[RepairPoint]:
    """The correction points of a traced spec, in forward order (module docstring)."""
    g = spec.graph
    if g is None:
        raise ZooError("REPAIR needs a traced permutation spec (a neuron graph); this spec was built by hand")
    if spec.heads or any("running_mean" not in dict(n.tensors) for n in g.norms):
        raise ZooError(
            "REPAIR here covers MLP, CNN and ResNet layouts; this one has LayerNorm or attention (a transformer)"
        )
    norms = {n.nodeset: dict(n.tensors) for n in g.norms}
    points = []
    for layer in g.layers:
        ns = g.nodesets[layer.dst]
        if ns.role == "output" and not outputs:
            continue
        if layer.dst in norms:
            t = norms[layer.dst]
            if "weight" not in t or "bias" not in t:
                raise ZooError(f"REPAIR needs an affine BatchNorm after {ns.name!r} to fold its correction into")
            points.append(RepairPoint(t["weight"].removesuffix(".weight"), t["weight"], t["bias"], 1, ns.size))
        else:
            axis = 1 if layer.kernel else -1
            points.append(RepairPoint(layer.weight.removesuffix(".weight"), layer.weight, layer.bias, axis, ns.size))
    modules = [p.module for p in points]
    if len(set(modules)) != len(modules):
        raise ZooError("REPAIR: a layer is called more than once in the forward pass; its units have no one statistic")
    return points


class _Stop(Exception):
    """Raised by a hook once the statistics a pass needs are gathered (the rest of the forward is skipped)."""


def _moments(o: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(sum, sum of squares) per channel of ``o`` over every other axis (one chunk's float32 sums, accumulated in
    float64 across chunks), and the count per channel."""
    dims = [d for d in range(o.ndim) if d != axis % o.ndim]
    return o.sum(dims).double(), o.square().sum(dims).double(), o.numel() // o.shape[axis]


def _scale(target_std: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """A unit's REPAIR scale: target std over its std (1 for a unit constant on the data)."""
    return torch.where(var > DEAD, target_std / var.clamp_min(DEAD).sqrt(), torch.ones_like(var))


def _one_pass(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    X: torch.Tensor,
    points: list[RepairPoint],
    mean: list[torch.Tensor],
    std: list[torch.Tensor],
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The corrections of every point from ONE forward over all of X: each hook measures its point on the whole
    data, corrects it in flight, and the next points see the corrected activations (the same corrections as one
    pass per point, in fewer layer evaluations)."""
    corrections: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    mods = dict(module.named_modules())

    def hook_for(k: int) -> Callable:
        p = points[k]

        def hook(_m: nn.Module, _i: object, o: torch.Tensor) -> torch.Tensor:
            dims = [d for d in range(o.ndim) if d != p.axis % o.ndim]
            var, mu = torch.var_mean(o.double(), dim=dims, correction=0)
            a = _scale(std[k], var)
            corrections[p.module] = (a, mean[k] - a * mu)
            view = [1] * o.ndim
            view[p.axis] = -1
            return o * a.view(view).to(o.dtype) + (mean[k] - a * mu).view(view).to(o.dtype)

        return hook

    handles = [mods[p.module].register_forward_hook(hook_for(k)) for k, p in enumerate(points)]
    try:
        with torch.no_grad():
            functional_call(module, state, (X,))
    finally:
        for h in handles:
            h.remove()
    return corrections


def _measure(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    X: torch.Tensor,
    chunk: int,
    points: list[RepairPoint],
    corrections: dict[str, tuple[torch.Tensor, torch.Tensor]],
    measure: list[int],
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mean, var) of the points ``measure`` over X, with ``corrections`` applied in flight at their points."""
    acc: dict[int, list] = {k: [0.0, 0.0, 0] for k in measure}
    last = max(measure)
    mods = dict(module.named_modules())

    def hook_for(k: int) -> Callable:
        p = points[k]

        def hook(_m: nn.Module, _i: object, o: torch.Tensor) -> torch.Tensor | None:
            if k in acc:
                s, q, c = _moments(o, p.axis)
                acc[k][0] += s
                acc[k][1] += q
                acc[k][2] += c
                if k == last:
                    raise _Stop
            if p.module in corrections:
                a, c0 = corrections[p.module]
                view = [1] * o.ndim
                view[p.axis] = -1
                return o * a.view(view).to(o.dtype) + c0.view(view).to(o.dtype)
            return None

        return hook

    handles = [mods[p.module].register_forward_hook(hook_for(k)) for k, p in enumerate(points)]
    try:
        with torch.no_grad():
            for i in range(0, len(X), chunk):
                try:
                    functional_call(module, state, (X[i : i + chunk],))
                except _Stop:
                    pass
    finally:
        for h in handles:
            h.remove()
    out = []
    for k in measure:
        s, q, c = acc[k]
        mean = s / c
        out.append((mean, (q / c - mean.square()).clamp_min(0.0)))
    return out


def _setup(layout: Layout, dataset: Dataset, spec: PermutationSpec | None, outputs: bool):
    spec = spec_for_layout(layout) if spec is None else spec
    points = repair_points(spec, outputs)
    module = layout.build().eval()
    X = dataset.X_train
    act = activation_floats_per_sample(module, X[:1]) if len(X) else 1
    one_pass = len(X) * act <= ONE_PASS_FLOATS
    return points, module, X, len(X) if one_pass else max(1, min(len(X), CPU_FORWARD_FLOATS // act))


def unit_stats(
    layout: Layout,
    weights: torch.Tensor,
    dataset: Dataset,
    *,
    recalibrate: bool = True,
    outputs: bool = True,
    spec: PermutationSpec | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std), each ``[n, U]`` float64: every REPAIR unit's pre-activation statistics on the training split
    (``U`` units of all points in forward order), after a BatchNorm reset unless ``recalibrate=False``."""
    points, module, X, chunk = _setup(layout, dataset, spec, outputs)
    if recalibrate:
        weights = recalibrate_bn(layout, weights, dataset)
    means, stds = [], []
    for i in range(weights.shape[0]):
        stats = _measure(module, layout.unflatten(weights[i]), X, chunk, points, {}, list(range(len(points))))
        means.append(torch.cat([m for m, _ in stats]))
        stds.append(torch.cat([v.sqrt() for _, v in stats]))
    u = sum(p.size for p in points)
    if not means:
        return torch.empty(0, u, dtype=torch.float64), torch.empty(0, u, dtype=torch.float64)
    return torch.stack(means), torch.stack(stds)


def repair(
    layout: Layout,
    weights: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    dataset: Dataset,
    *,
    recalibrate: bool = True,
    outputs: bool = True,
    spec: PermutationSpec | None = None,
) -> torch.Tensor:
    """Weights ``[n, P]`` whose units, corrected in forward order on the training split, have the target
    statistics ``mean``/``std`` ``[n, U]`` (``unit_stats`` order); BatchNorm reset first unless told not to."""
    points, module, X, chunk = _setup(layout, dataset, spec, outputs)
    u = sum(p.size for p in points)
    if mean.shape != (weights.shape[0], u) or std.shape != mean.shape:
        raise ZooError(f"REPAIR targets must be [{weights.shape[0]}, {u}], got {tuple(mean.shape)}, {tuple(std.shape)}")
    if recalibrate:
        weights = recalibrate_bn(layout, weights, dataset)
    out = weights.clone()
    offsets = [0]
    for p in points:
        offsets.append(offsets[-1] + p.size)
    for i in range(weights.shape[0]):
        state = layout.unflatten(weights[i])
        corrections: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if chunk >= len(X):  # all data in one forward: every point measured and corrected in flight
            ranges = list(zip(offsets[:-1], offsets[1:]))
            m_i = [mean[i, lo:hi] for lo, hi in ranges]
            corrections = _one_pass(module, state, X, points, m_i, [std[i, lo:hi] for lo, hi in ranges])
        else:  # one pass per point over chunks, earlier points' corrections applied in flight
            for k, p in enumerate(points):
                ((mu, var),) = _measure(module, state, X, chunk, points, corrections, [k])
                lo, hi = offsets[k], offsets[k + 1]
                a = _scale(std[i, lo:hi], var)
                corrections[p.module] = (a, mean[i, lo:hi] - a * mu)
        new = dict(state)
        for p in points:
            a, c = corrections[p.module]
            w = new[p.weight]
            new[p.weight] = (w.double() * a.view(-1, *([1] * (w.ndim - 1)))).to(w.dtype)
            if p.bias is not None:
                b = new[p.bias]
                new[p.bias] = (b.double() * a + c).to(b.dtype)
        out[i] = layout.flatten(new)
    return out


def repair_mix(
    layout: Layout,
    members: torch.Tensor,
    coefficients: torch.Tensor,
    dataset: Dataset,
    *,
    outputs: bool = True,
    spec: PermutationSpec | None = None,
) -> torch.Tensor:
    """``[n, P]``: the weighted sums ``sum_j coefficients[i, j] * members[i, j]`` (members ``[n, k, P]``,
    coefficients ``[n, k]`` summing to 1: an interpolation or an average of aligned networks), REPAIRed to the
    same weighted sums of the members' unit statistics on the training split."""
    if members.ndim != 3 or coefficients.shape != members.shape[:2]:
        raise ZooError(
            f"repair_mix takes members [n, k, P] and coefficients [n, k], got {tuple(members.shape)} and "
            f"{tuple(coefficients.shape)}"
        )
    spec = spec_for_layout(layout) if spec is None else spec
    n, k, p = members.shape
    flat = members.reshape(n * k, p).to(torch.float32)
    uniq, inverse = torch.unique(flat, dim=0, return_inverse=True)  # an average often repeats a member
    m, s = unit_stats(layout, uniq, dataset, outputs=outputs, spec=spec)
    w = coefficients.to(torch.float64)
    mean = (m[inverse].view(n, k, -1) * w[..., None]).sum(1)
    std = (s[inverse].view(n, k, -1) * w[..., None]).sum(1)
    mixed = (members.to(torch.float64) * w[..., None]).sum(1).to(torch.float32)
    return repair(layout, mixed, mean, std, dataset, outputs=outputs, spec=spec)
