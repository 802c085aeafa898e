"""Conditional flow matching on the straight path: the velocity MLP, its training loss and the ODE sampler.

The probability path comes from Meta's ``flow_matching`` package (``CondOTProbPath``: x_t = (1 - t) x0 + t x1,
target velocity x1 - x0). The sampler is the three fixed-step rules of torchdiffeq's fixed grid (Euler, midpoint, and
its "rk4", the 3/8 rule) written out here with torchdiffeq's exact arithmetic, so samples keep the bits of
``flow_matching``'s ``ODESolver`` (a test compares them) while sampling never imports torchdiffeq, which imports
scipy.integrate: ~0.7 s of CPU of a fresh process's ``generators.load(run).sample(100)`` (docs/startup.md).
Shapes: x ``[n, D]``, t ``[n]``, condition ``[n]`` int64 class indices (or None for an unconditional flow).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from flow_matching.path import CondOTProbPath
from torch import nn

from zoo.errors import ZooError

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (t, x) -> dx/dt


# One fixed step each, (field, t0, dt, t1, y0) -> the increment, as torchdiffeq's fixed_grid.py and rk_common.py
# compute it (the same operations in the same order: the same bits).
def _euler(f: Field, t0: torch.Tensor, dt: torch.Tensor, t1: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    return dt * f(t0, y0)


def _midpoint(f: Field, t0: torch.Tensor, dt: torch.Tensor, t1: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    half_dt = 0.5 * dt
    y_mid = y0 + f(t0, y0) * half_dt
    return dt * f(t0 + half_dt, y_mid)


def _rk4(f: Field, t0: torch.Tensor, dt: torch.Tensor, t1: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    """torchdiffeq's "rk4": the 3/8 rule (``rk4_alt_step_func``)."""
    k1 = f(t0, y0)
    k2 = f(t0 + dt * (1 / 3), y0 + dt * k1 * (1 / 3))
    k3 = f(t0 + dt * (2 / 3), y0 + dt * (k2 - k1 * (1 / 3)))
    k4 = f(t1, y0 + dt * (k1 - k2 + k3))
    return (k1 + 3 * (k2 + k3) + k4) * dt * 0.125


STEPS = {"euler": _euler, "midpoint": _midpoint, "rk4": _rk4}
METHODS = tuple(STEPS)


class VelocityMLP(nn.Module):
    """DeepWeightFlow's velocity field: time MLP embedding, [x, t_emb, c_emb] -> h -> h/2 -> h -> D (zero-init out)."""

    def __init__(self, dim: int, hidden: int = 512, time_dim: int = 64, dropout: float = 0.1, num_conditions: int = 0):
        super().__init__()
        self.time = nn.Sequential(nn.Linear(1, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim))
        self.cond = nn.Embedding(num_conditions, time_dim) if num_conditions > 0 else None
        d_in = dim + time_dim * (2 if self.cond is not None else 1)
        half = max(hidden // 2, 1)
        self.net = nn.Sequential(
            nn.Linear(d_in, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, half),
            nn.LayerNorm(half),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(half, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, dim),
        )
        nn.init.zeros_(self.net[-1].weight)  # the flow starts as the identity map: no velocity
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity ``[n, D]`` at points x ``[n, D]`` and times t (scalar or ``[n]``)."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(x.shape[0])
        parts = [x, self.time(t[:, None])]
        if self.cond is not None:
            if condition is None:
                raise ZooError("this flow is conditional: give a condition")
            parts.append(self.cond(condition))
        return self.net(torch.cat(parts, dim=1))


_PATH = CondOTProbPath()


def cfm_loss(
    model: nn.Module,
    x1: torch.Tensor,
    source_std: float,
    sigma: float = 0.0,
    condition: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Flow-matching MSE for targets x1 ``[n, D]``: x0 ~ N(0, source_std^2), t ~ U(0, 1), target x1 - x0.

    ``sigma`` adds N(0, sigma^2) to x_t (DeepWeightFlow's 0.001 smoothing); ``generator`` fixes the draws
    (validation uses a fixed one so its loss is comparable across epochs).
    """
    n = x1.shape[0]
    x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype) * source_std
    t = torch.rand(n, generator=generator, dtype=x1.dtype)
    path = _PATH.sample(x_0=x0, x_1=x1, t=t)
    xt = path.x_t
    if sigma > 0:
        xt = xt + sigma * torch.randn(x1.shape, generator=generator, dtype=x1.dtype)
    return torch.mean((model(xt, path.t, condition) - path.dx_t) ** 2)


@torch.no_grad()
def solve(
    model: nn.Module, x0: torch.Tensor, steps: int = 20, method: str = "rk4", condition: torch.Tensor | None = None
) -> torch.Tensor:
    """Integrate dx/dt = v(x, t) from t=0 to 1 with ``steps`` fixed steps; returns x(1) ``[n, D]``."""
    if method not in METHODS:
        raise ZooError(f"unknown ODE method {method!r}; choose one of {list(METHODS)}")
    if steps < 1:
        raise ZooError(f"ODE steps must be >= 1, got {steps}")
    # the grid is the steps (no float-rounded extra step), on x0's device
    grid = torch.linspace(0.0, 1.0, steps + 1, dtype=x0.dtype, device=x0.device)
    step = STEPS[method]

    def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return model(x, t, condition)

    y = x0
    for t0, t1 in zip(grid[:-1], grid[1:]):
        y = y + step(field, t0, t1 - t0, t1, y)
    return y
