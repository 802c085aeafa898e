"""Hessian top eigenvalue (power iteration) and trace (Hutchinson) from Hessian-vector products.

Hessian-vector products are forward-over-reverse (``jvp`` of ``grad``) in ``torch.func``: one product costs
about two gradient evaluations and never forms the Hessian. Every function is batched over a population:
``loss(theta, *args)`` is one model's scalar loss, and ``theta``, ``args`` and probe vectors carry a
leading model axis that ``vmap`` maps over.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.func import grad, jvp, vmap


def hvp_fn(loss: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``hvp(theta, v, *args) = H(theta) v`` for one model, by forward-over-reverse differentiation."""

    def hvp(theta: torch.Tensor, v: torch.Tensor, *args) -> torch.Tensor:
        return jvp(lambda t: grad(loss)(t, *args), (theta,), (v,))[1]

    return hvp


def batched_hvp(loss: Callable[..., torch.Tensor], in_dims: Sequence) -> Callable[..., torch.Tensor]:
    """Population HVP: ``theta [n, P]``, ``v [n, P]``, ``args`` mapped per ``in_dims`` (0 or None each)."""
    return vmap(hvp_fn(loss), in_dims=(0, 0, *in_dims))


def _rademacher(shape, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator).float().mul_(2).sub_(1)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1)


def top_eigenvalue(hvp: Callable[..., torch.Tensor], theta: torch.Tensor, args: Sequence = (), iters: int = 20,
                   tol: float = 1e-3, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """Power iteration per model: (Rayleigh quotient ``[n]`` of the dominant eigenvector, iterations run).

    The dominant eigenvalue is the largest in magnitude (signed); at trained points it is the largest
    positive one. Stops when every model's estimate changes by less than ``tol`` relative, or after ``iters``.
    """
    g = generator or torch.Generator().manual_seed(0)
    v = torch.randn(theta.shape, generator=g)
    v = v / v.norm(dim=-1, keepdim=True)
    lam = torch.full(theta.shape[:1], float("nan"))
    it = 0
    for it in range(1, iters + 1):
        w = hvp(theta, v, *args).detach()
        new = _dot(v, w)
        norm = w.norm(dim=-1, keepdim=True)
        v = torch.where(norm > 0, w / norm.clamp_min(1e-30), v)
        done = ((new - lam).abs() <= tol * new.abs().clamp_min(1e-12)).all()
        lam = new
        if bool(done):
            break
    return lam, it


def hutchinson_trace(hvp: Callable[..., torch.Tensor], theta: torch.Tensor, args: Sequence = (), probes: int = 32,
                     generator: torch.Generator | None = None, return_samples: bool = False,
                     chunk: int = 8) -> torch.Tensor:
    """Hutchinson's estimate ``mean_z z^T H z`` over Rademacher probes ``z``, per model: ``[n]``.

    ``chunk`` probes go through one vmapped call (fewer, larger kernels). With ``return_samples`` the
    per-probe values ``[probes, n]`` come back instead (for error studies).
    """
    g = generator or torch.Generator().manual_seed(0)
    many = vmap(hvp, in_dims=(None, 0, *([None] * len(args))))
    samples = []
    done = 0
    while done < probes:
        k = min(chunk, probes - done)
        z = _rademacher((k, *theta.shape), g)
        samples.append(_dot(z, many(theta, z, *args).detach()))
        done += k
    s = torch.cat(samples)
    return s if return_samples else s.mean(0)


def exact_trace(hvp: Callable[..., torch.Tensor], theta: torch.Tensor, args: Sequence = (), chunk: int = 128) -> torch.Tensor:
    """Trace from all basis vectors (``P`` products per model, ``chunk`` per vmapped call): exact, for tests."""
    n, p = theta.shape
    many = vmap(hvp, in_dims=(None, 0, *([None] * len(args))))
    total = torch.zeros(n)
    for i in range(0, p, chunk):
        j = torch.arange(i, min(i + chunk, p))
        e = torch.zeros(len(j), n, p)
        e[torch.arange(len(j)), :, j] = 1.0
        total += many(theta, e, *args).detach()[torch.arange(len(j)), :, j].sum(0)
    return total
