"""Mode connectivity between two trained models: a quadratic Bezier curve fitted between the endpoints.

theta(t) = (1-t)^2 w0 + 2t(1-t) c + t^2 w1. The control point ``c`` starts at the midpoint (the straight
line) and is trained to minimise the loss expected over t ~ U(0, 1) (Garipov et al. 2018). Then
mc = (L(0)+L(1))/2 - L(t*), with t* the t maximizing |L(t) - (L(0)+L(1))/2|: mc < 0 is a barrier between
the ends, mc > 0 means the curve found lower loss than the ends (under-trained ends), mc ~ 0: connected.
All functions batch over pairs: ``w0, w1, c`` are ``[m, P]`` and ``loss(theta, x, y)`` is one model's loss.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.func import grad, vmap


def bezier(w0: torch.Tensor, c: torch.Tensor, w1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points of the quadratic Bezier curves at ``t`` (``[m]`` or scalar): ``[m, P]``."""
    t = torch.as_tensor(t, dtype=w0.dtype)
    if t.ndim == 1:
        t = t[:, None]
    return (1 - t) ** 2 * w0 + 2 * t * (1 - t) * c + t ** 2 * w1


def fit_bezier(loss: Callable, w0: torch.Tensor, w1: torch.Tensor, x: torch.Tensor, y: torch.Tensor, steps: int = 200,
               lr: float = 0.01, batch_size: int = 128, generator: torch.Generator | None = None) -> torch.Tensor:
    """Train the control points ``[m, P]`` (Adam, one t and one minibatch of (x, y) per step, per pair)."""
    g = generator or torch.Generator().manual_seed(0)
    c = ((w0 + w1) / 2).clone()
    if steps <= 0:
        return c
    m = w0.shape[0]

    def point_loss(w0_, c_, w1_, t, xb, yb):
        return loss(bezier(w0_[None], c_[None], w1_[None], t[None])[0], xb, yb)

    g_c = vmap(grad(point_loss, argnums=1), in_dims=(0, 0, 0, 0, None, None))
    c = c.requires_grad_(True)
    opt = torch.optim.Adam([c], lr=lr)
    bs = min(batch_size, len(x))
    for _ in range(steps):
        t = torch.rand(m, generator=g)
        idx = torch.randperm(len(x), generator=g)[:bs]
        with torch.no_grad():
            gr = g_c(w0, c.detach(), w1, t, x[idx], y[idx])
        c.grad = torch.nan_to_num(gr, nan=0.0, posinf=0.0, neginf=0.0)
        opt.step()
    c = c.detach()
    return c


def curve_losses(loss: Callable, w0: torch.Tensor, c: torch.Tensor, w1: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                 ts: torch.Tensor) -> torch.Tensor:
    """Loss on (x, y) at every t of ``ts`` along each curve: ``[m, k]``."""
    f = vmap(loss, in_dims=(0, None, None))
    with torch.no_grad():
        return torch.stack([f(bezier(w0, c, w1, t), x, y) for t in ts], dim=1)


def mc_from_losses(losses: torch.Tensor) -> torch.Tensor:
    """mc per curve from losses ``[m, k]`` sampled on t in linspace(0, 1, k) (endpoints included)."""
    ends = (losses[:, 0] + losses[:, -1]) / 2
    dev = losses - ends[:, None]
    star = dev.abs().argmax(dim=1)
    return ends - losses.gather(1, star[:, None])[:, 0]


def mode_connectivity(loss: Callable, w0: torch.Tensor, w1: torch.Tensor, x_fit: torch.Tensor, y_fit: torch.Tensor,
                      x_eval: torch.Tensor, y_eval: torch.Tensor, k: int = 11, steps: int = 200, lr: float = 0.01,
                      batch_size: int = 128, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Fit Bezier curves between pairs and return mc, the straight-line mc and both loss profiles."""
    ts = torch.linspace(0, 1, k)
    c = fit_bezier(loss, w0, w1, x_fit, y_fit, steps, lr, batch_size, generator)
    curve = curve_losses(loss, w0, c, w1, x_eval, y_eval, ts)
    line = curve_losses(loss, w0, (w0 + w1) / 2, w1, x_eval, y_eval, ts)
    return {"mc": mc_from_losses(curve), "mc_linear": mc_from_losses(line), "curve": curve, "line": line, "t": ts,
            "control": c}
