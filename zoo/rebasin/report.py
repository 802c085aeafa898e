"""Alignment quality: L2 distance, linear-path loss barrier (BatchNorm statistics recomputed) and
agreement of top singular vectors, computed before and after permuting a model onto a reference."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ZooError

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def l2_distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], names: Sequence[str]) -> float:
    """Euclidean distance between two state dicts over the tensors ``names`` (the trainable parameters)."""
    return float(sum(((a[k].double() - b[k].double()) ** 2).sum() for k in names)) ** 0.5


def top_singular_agreement(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], names: Sequence[str]) -> float:
    """Mean over weight matrices (conv kernels as ``[out, in*k*k]``) of ``(|<u_a, u_b>| + |<v_a, v_b>|) / 2``
    for the top left/right singular vectors: 1 when the dominant directions coincide, ~0 when unrelated.
    Permuting hidden units permutes these vectors' entries, so alignment raises agreement."""
    scores = []
    for k in names:
        if a[k].ndim < 2:
            continue
        ma = a[k].double().reshape(a[k].shape[0], -1)
        mb = b[k].double().reshape(b[k].shape[0], -1)
        ua, _, vha = torch.linalg.svd(ma, full_matrices=False)
        ub, _, vhb = torch.linalg.svd(mb, full_matrices=False)
        scores.append(0.5 * (abs(float(ua[:, 0] @ ub[:, 0])) + abs(float(vha[0] @ vhb[0]))))
    if not scores:
        raise ZooError("no weight matrices to compare singular vectors of")
    return float(np.mean(scores))


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, _BN) for m in module.modules())


@torch.no_grad()
def recompute_bn_stats(module: nn.Module, X: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """Reset every BatchNorm's running statistics and re-estimate them (cumulative average) on ``X``.

    Needed after averaging or interpolating BN nets: their stored statistics belong to the endpoints,
    not to the new weights. Leaves the module in eval mode."""
    bns = [m for m in module.modules() if isinstance(m, _BN)]
    if not bns:
        return module.eval()
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: exact mean over the batches seen
    module.train()
    for i in range(0, len(X), batch_size):
        module(X[i:i + batch_size])
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return module.eval()


@torch.no_grad()
def evaluate_loss(module: nn.Module, X: torch.Tensor, y: torch.Tensor, kind: str = "classification",
                  batch_size: int = 1024) -> float:
    """Mean loss of ``module`` (eval mode): cross-entropy for classification, MSE for regression."""
    module.eval()
    total = 0.0
    for i in range(0, len(X), batch_size):
        out = module(X[i:i + batch_size])
        yy = y[i:i + batch_size]
        loss = F.cross_entropy(out, yy, reduction="sum") if kind == "classification" else \
            F.mse_loss(out, yy.reshape(out.shape), reduction="sum") / max(out.shape[1], 1)
        total += float(loss)
    return total / len(X)


def interpolate(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], t: float) -> dict[str, torch.Tensor]:
    """``(1 - t) a + t b`` for floating tensors; integer buffers (num_batches_tracked) are taken from ``a``."""
    return {k: (1 - t) * a[k] + t * b[k] if a[k].is_floating_point() else a[k].clone() for k in a}


def loss_barrier(module: nn.Module, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                 X: torch.Tensor, y: torch.Tensor, kind: str = "classification", steps: int = 11,
                 bn_data: torch.Tensor | None = None) -> dict:
    """Loss on the straight line between two nets, minus the line between the endpoint losses; its maximum
    over ``t`` in ``linspace(0, 1, steps)`` is the barrier. ``module`` is a template of the architecture
    (its weights are overwritten). BN nets get their statistics recomputed on ``bn_data`` (default ``X``)
    at every ``t``, endpoints included, so all points are measured the same way."""
    if steps < 3:
        raise ZooError(f"a loss barrier needs at least 3 points on the path, got steps={steps}")
    bn = has_batchnorm(module)
    ts = np.linspace(0.0, 1.0, steps)
    losses = []
    for t in ts:
        module.load_state_dict(interpolate(a, b, float(t)))
        if bn:
            recompute_bn_stats(module, X if bn_data is None else bn_data)
        losses.append(evaluate_loss(module, X, y, kind))
    losses = np.array(losses)
    excess = losses - ((1 - ts) * losses[0] + ts * losses[-1])
    return {"barrier": float(excess.max()), "t_max": float(ts[int(excess.argmax())]), "losses": losses.tolist(),
            "ts": ts.tolist()}


def batched_l2(ref: Mapping[str, torch.Tensor], states: Mapping[str, torch.Tensor], names: Sequence[str]) -> np.ndarray:
    """[n] L2 distances of stacked states (tensors ``[n, *shape]``) to one reference over ``names``."""
    n = next(iter(states.values())).shape[0]
    total = torch.zeros(n, dtype=torch.float64)
    for k in names:
        total += ((states[k].double() - ref[k].double().unsqueeze(0)) ** 2).reshape(n, -1).sum(1)
    return total.sqrt().numpy()


def batched_singular_agreement(ref: Mapping[str, torch.Tensor], states: Mapping[str, torch.Tensor],
                               names: Sequence[str]) -> np.ndarray:
    """[n] ``top_singular_agreement`` of every stacked model with one reference (one batched SVD per tensor)."""
    n = next(iter(states.values())).shape[0]
    scores = []
    for k in names:
        if ref[k].ndim < 2:
            continue
        r = ref[k].double().reshape(ref[k].shape[0], -1)
        s = states[k].double().reshape(n, ref[k].shape[0], -1)
        ur, _, vr = torch.linalg.svd(r, full_matrices=False)
        us, _, vs = torch.linalg.svd(s, full_matrices=False)
        scores.append(0.5 * ((us[:, :, 0] @ ur[:, 0]).abs() + (vs[:, 0, :] @ vr[0]).abs()))
    if not scores:
        raise ZooError("no weight matrices to compare singular vectors of")
    return torch.stack(scores).mean(0).numpy()
