"""Alignment quality: L2 distance, linear-path loss barrier (BatchNorm statistics recomputed on the
training split, via ``zoo.evaluate``) and agreement of top singular vectors, computed before and after
permuting a model onto a reference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from zoo.datasets import Dataset
from zoo.errors import ZooError
from zoo.evaluate import evaluate, recalibrate_bn
from zoo.layout import Layout
from zoo.rebasin.repair import repair as repair_units
from zoo.rebasin.repair import unit_stats


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


def _flat(layout: Layout, w: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A state dict or a flat vector ``[P]`` of ``layout`` as float32 ``[P]``."""
    return layout.flatten(w) if isinstance(w, Mapping) else w.to(torch.float32)


def loss_barriers(
    layout: Layout,
    a: torch.Tensor,
    b: torch.Tensor,
    dataset: Dataset,
    steps: int = 11,
    split: str = "train",
    repair: bool = False,
    repair_outputs: bool = True,
) -> dict[str, torch.Tensor]:
    """Loss barriers of m straight paths at once: flat endpoints ``a, b [m, P]`` -> barrier ``[m]``, t_max ``[m]``,
    losses ``[m, steps]`` (and ts ``[steps]``).

    The loss on the line minus the chord between the endpoint losses, maximized over ``t`` in
    ``linspace(0, 1, steps)``. All m * steps nets go through one ``zoo.evaluate`` on ``split`` (the
    training loss by default); BatchNorm nets get their statistics recomputed on the training split at
    every ``t``, endpoints included, so all points are measured the same way. ``repair=True``: every interior
    point is then REPAIRed (zoo.rebasin.repair) to the interpolation of the endpoints' unit statistics, all
    measured on the training split (``repair_outputs=False``: the output units, the logits, are left out).
    """
    if steps < 3:
        raise ZooError(f"a loss barrier needs at least 3 points on the path, got steps={steps}")
    if a.shape != b.shape or a.ndim != 2:
        raise ZooError(f"endpoints must both be [m, P], got {tuple(a.shape)} and {tuple(b.shape)}")
    ts = np.linspace(0.0, 1.0, steps)
    a, b = a.to(torch.float32), b.to(torch.float32)
    path = torch.stack([(1 - float(t)) * a + float(t) * b for t in ts], dim=1)  # [m, steps, P]
    flat = path.reshape(-1, a.shape[1])
    if repair:
        path = recalibrate_bn(layout, flat, dataset).view_as(path).clone()
        ma, sa = unit_stats(layout, path[:, 0], dataset, recalibrate=False, outputs=repair_outputs)
        mb, sb = unit_stats(layout, path[:, -1], dataset, recalibrate=False, outputs=repair_outputs)
        for j in range(1, steps - 1):
            t = float(ts[j])
            path[:, j] = repair_units(
                layout,
                path[:, j],
                (1 - t) * ma + t * mb,
                (1 - t) * sa + t * sb,
                dataset,
                recalibrate=False,
                outputs=repair_outputs,
            )
        flat = path.reshape(-1, a.shape[1])
    losses = evaluate(layout, flat, dataset, split, recalibrate_bn=not repair)["loss"]
    losses = losses.view(a.shape[0], steps)
    t = torch.from_numpy(ts).to(losses.device)  # the endpoints' device (a GPU's with zoo align --device)
    excess = losses - ((1 - t) * losses[:, :1] + t * losses[:, -1:])
    return {"barrier": excess.max(1).values, "t_max": t[excess.argmax(1)], "losses": losses, "ts": t}


def loss_barrier(
    layout: Layout,
    a: torch.Tensor | Mapping[str, torch.Tensor],
    b: torch.Tensor | Mapping[str, torch.Tensor],
    dataset: Dataset,
    steps: int = 11,
    split: str = "train",
    repair: bool = False,
    repair_outputs: bool = True,
) -> dict:
    """``loss_barriers`` of one pair (state dicts or flat ``[P]`` vectors): barrier, t_max, losses and ts as
    Python numbers and lists."""
    r = loss_barriers(
        layout, _flat(layout, a)[None], _flat(layout, b)[None], dataset, steps, split, repair, repair_outputs
    )
    return {
        "barrier": float(r["barrier"][0]),
        "t_max": float(r["t_max"][0]),
        "losses": r["losses"][0].tolist(),
        "ts": r["ts"].tolist(),
    }


def batched_l2(ref: Mapping[str, torch.Tensor], states: Mapping[str, torch.Tensor], names: Sequence[str]) -> np.ndarray:
    """[n] L2 distances of stacked states (tensors ``[n, *shape]``) to one reference over ``names``."""
    n = next(iter(states.values())).shape[0]
    total = torch.zeros(n, dtype=torch.float64)
    for k in names:
        total += ((states[k].double() - ref[k].double().unsqueeze(0)) ** 2).reshape(n, -1).sum(1)
    return total.sqrt().numpy()


def batched_singular_agreement(
    ref: Mapping[str, torch.Tensor], states: Mapping[str, torch.Tensor], names: Sequence[str]
) -> np.ndarray:
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
