"""Mode connectivity between two trained models: a quadratic Bezier curve fitted between the endpoints.

theta(t) = (1-t)^2 w0 + 2t(1-t) c + t^2 w1. The control point ``c`` starts at the midpoint (the straight
line) and is trained to minimise the loss expected over t ~ U(0, 1) (Garipov et al. 2018). Then
mc = (L(0)+L(1))/2 - L(t*), with t* the t maximizing |L(t) - (L(0)+L(1))/2|: mc < 0 is a barrier between
the ends, mc > 0 means the curve found lower loss than the ends (under-trained ends), mc ~ 0: connected.
All functions batch over pairs: ``w0, w1, c`` are ``[m, P]`` and ``loss(theta, x, y)`` is one model's loss.
The profiles are evaluated per example, so the evaluation data can be bootstrapped (``mc_boot``): the spread
of mc that comes from which examples were used, next to the spread between seed pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.func import grad, vmap


def bezier(w0: torch.Tensor, c: torch.Tensor, w1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points of the quadratic Bezier curves at ``t`` (``[m]`` or scalar): ``[m, P]``."""
    t = torch.as_tensor(t, dtype=w0.dtype)
    if t.ndim == 1:
        t = t[:, None]
    return (1 - t) ** 2 * w0 + 2 * t * (1 - t) * c + t**2 * w1


def fit_bezier(
    loss: Callable,
    w0: torch.Tensor,
    w1: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int = 200,
    lr: float = 0.01,
    batch_size: int = 128,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """Train the control points ``[m, P]`` (Adam, one t and one minibatch of (x, y) per step, per pair).

    ``generator`` may be one per pair: then each pair's t and minibatches come from its own stream, and its
    curve does not depend on which other pairs share the population.
    """
    per_pair = isinstance(generator, (list, tuple))
    g = generator or torch.Generator().manual_seed(0)
    c = ((w0 + w1) / 2).clone()
    if steps <= 0:
        return c
    m = w0.shape[0]

    def point_loss(w0_, c_, w1_, t, xb, yb):
        return loss(bezier(w0_[None], c_[None], w1_[None], t[None])[0], xb, yb)

    data_dim = 0 if per_pair else None
    g_c = vmap(grad(point_loss, argnums=1), in_dims=(0, 0, 0, 0, data_dim, data_dim))
    c = c.requires_grad_(True)
    opt = torch.optim.Adam([c], lr=lr)
    bs = min(batch_size, len(x))
    for _ in range(steps):
        if per_pair:
            t = torch.cat([torch.rand(1, generator=gi) for gi in g])
            idx = torch.stack([torch.randperm(len(x), generator=gi)[:bs] for gi in g])  # [m, bs]
        else:
            t = torch.rand(m, generator=g)
            idx = torch.randperm(len(x), generator=g)[:bs]
        with torch.no_grad():
            gr = g_c(w0, c.detach(), w1, t, x[idx], y[idx])
        c.grad = torch.nan_to_num(gr, nan=0.0, posinf=0.0, neginf=0.0)
        opt.step()
    c = c.detach()
    return c


def curve_losses(
    loss: Callable,
    w0: torch.Tensor,
    c: torch.Tensor,
    w1: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    ts: torch.Tensor,
) -> torch.Tensor:
    """Loss on (x, y) at every t of ``ts`` along each curve: ``[m, k]``."""
    f = vmap(loss, in_dims=(0, None, None))
    with torch.no_grad():
        return torch.stack([f(bezier(w0, c, w1, t), x, y) for t in ts], dim=1)


def curve_losses_per_example(
    loss_per_example: Callable,
    w0: torch.Tensor,
    c: torch.Tensor,
    w1: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    ts: torch.Tensor,
    chunk: int = 4096,
) -> torch.Tensor:
    """Per-example loss at every t of ``ts`` along each curve: ``[m, k, N]`` (``chunk`` examples per call)."""
    f = vmap(loss_per_example, in_dims=(0, None, None))
    with torch.no_grad():
        return torch.stack(
            [
                torch.cat(
                    [f(bezier(w0, c, w1, t), x[i : i + chunk], y[i : i + chunk]) for i in range(0, len(x), chunk)],
                    dim=1,
                )
                for t in ts
            ],
            dim=1,
        )


def bootstrap_mc(per_example: torch.Tensor, replicates: int, generator: torch.Generator) -> torch.Tensor:
    """mc of every curve on ``replicates`` resamples (with replacement) of the evaluation examples: ``[m, B]``.

    One index set per replicate, shared by all curves, so replicates of a cell's pairs can be averaged.
    """
    m, k, n = per_example.shape
    out = torch.empty(m, replicates, dtype=per_example.dtype)
    for b in range(replicates):
        idx = torch.randint(0, n, (n,), generator=generator)
        out[:, b] = mc_from_losses(per_example[:, :, idx].mean(dim=2))
    return out


def mc_from_losses(losses: torch.Tensor) -> torch.Tensor:
    """mc per curve from losses ``[m, k]`` sampled on t in linspace(0, 1, k) (endpoints included)."""
    ends = (losses[:, 0] + losses[:, -1]) / 2
    dev = losses - ends[:, None]
    star = dev.abs().argmax(dim=1)
    return ends - losses.gather(1, star[:, None])[:, 0]


def mode_connectivity(
    loss: Callable,
    w0: torch.Tensor,
    w1: torch.Tensor,
    x_fit: torch.Tensor,
    y_fit: torch.Tensor,
    x_eval: torch.Tensor,
    y_eval: torch.Tensor,
    k: int = 11,
    steps: int = 200,
    lr: float = 0.01,
    batch_size: int = 128,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    loss_per_example: Callable | None = None,
    bootstrap: int = 0,
    boot_generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Fit Bezier curves between pairs and return mc, the straight-line mc and both loss profiles.

    With ``loss_per_example`` (``theta, x, y -> [N]``) and ``bootstrap`` > 0, ``mc_boot [m, B]`` holds mc on
    bootstrap resamples of the evaluation data (``boot_generator`` draws them).
    """
    ts = torch.linspace(0, 1, k)
    c = fit_bezier(loss, w0, w1, x_fit, y_fit, steps, lr, batch_size, generator)
    out: dict[str, torch.Tensor] = {"t": ts, "control": c}
    if loss_per_example is None:
        curve = curve_losses(loss, w0, c, w1, x_eval, y_eval, ts)
        out["mc_boot"] = torch.empty(w0.shape[0], 0)
    else:
        per = curve_losses_per_example(loss_per_example, w0, c, w1, x_eval, y_eval, ts)
        curve = per.mean(dim=2)
        g = boot_generator or torch.Generator().manual_seed(0)
        out["mc_boot"] = bootstrap_mc(per, bootstrap, g) if bootstrap > 0 else torch.empty(w0.shape[0], 0)
    line = curve_losses(loss, w0, (w0 + w1) / 2, w1, x_eval, y_eval, ts)
    out.update(mc=mc_from_losses(curve), mc_linear=mc_from_losses(line), curve=curve, line=line)
    return out
