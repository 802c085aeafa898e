"""A zoo member as a pure function of its flat trainable parameters, batched over a population.

Landscape metrics differentiate the loss with respect to the trainable parameters only: buffers
(BatchNorm running statistics) are held fixed, and with the module in eval mode the loss is a function of
the weights alone. ``FunctionalNet`` maps the store's flat layout vectors ``[n, P]`` to the parameter part
``[n, Pp]`` plus stacked buffers, and runs the module with ``torch.func.functional_call`` under ``vmap``.
Plain evaluation (loss and accuracy without derivatives) is ``zoo.evaluate``'s job, not this module's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, replace_all_batch_norm_modules_

from zoo.errors import ZooError
from zoo.layout import Layout


def has_batchnorm(module: nn.Module) -> bool:
    """True if the module holds any BatchNorm layer (its eval-mode loss depends on running stats)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error written out: F.mse_loss's backward breaks under forward-mode AD (jvp of grad)."""
    return (out - y).square().mean()


def task_loss(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Mean loss the zoo trains with: cross-entropy for classification, MSE for regression."""
    if kind == "classification":
        return F.cross_entropy
    if kind == "regression":
        return _mse
    raise ZooError(f"unknown dataset kind {kind!r}; expected 'classification' or 'regression'")


def task_loss_per_example(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-example loss ``[N]`` whose mean is ``task_loss(kind)``: lets evaluation data be bootstrapped."""
    if kind == "classification":
        return lambda out, y: F.cross_entropy(out, y, reduction="none")
    if kind == "regression":
        return lambda out, y: (out - y).square().reshape(len(out), -1).mean(dim=1)
    raise ZooError(f"unknown dataset kind {kind!r}; expected 'classification' or 'regression'")


@dataclass
class FunctionalNet:
    """One architecture as ``f(theta, buffers, x)`` with ``theta`` the flat trainable parameters.

    ``batch_stats=True`` swaps every BatchNorm to normalize with the batch's own statistics (no running
    buffers): used along connectivity curves, where interpolated running statistics would be meaningless.
    """

    module: nn.Module
    names: list[str]
    shapes: list[tuple[int, ...]]
    buffer_names: list[str]
    layout: Layout | None = None
    batch_stats: bool = False

    @classmethod
    def from_module(cls, module: nn.Module, layout: Layout | None = None, batch_stats: bool = False) -> FunctionalNet:
        module = copy.deepcopy(module)
        if batch_stats:
            replace_all_batch_norm_modules_(module)
            module.train()
        else:
            module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        names = [n for n, _ in module.named_parameters()]
        shapes = [tuple(p.shape) for _, p in module.named_parameters()]
        buffers = [n for n, b in module.named_buffers() if b.is_floating_point()] if not batch_stats else []
        return cls(module, names, shapes, buffers, layout, batch_stats)

    @classmethod
    def from_layout(cls, layout: Layout, batch_stats: bool = False) -> FunctionalNet:
        return cls.from_module(layout.build(), layout, batch_stats)

    @property
    def num_params(self) -> int:
        return sum(int(torch.Size(s).numel()) for s in self.shapes)

    # ------------------------------------------------------------------ conversion
    def split(self, weights: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Store vectors ``[n, P]`` (whole layout) -> (theta ``[n, Pp]``, stacked float buffers)."""
        if self.layout is None:
            raise ZooError("this functional net was built without a layout; pass parameters directly")
        if weights.ndim != 2 or weights.shape[1] != self.layout.size:
            raise ZooError(
                f"weights of shape {tuple(weights.shape)} do not fit the layout: expected [n, {self.layout.size}]"
            )
        state = self.layout.unflatten_batch(weights.to(torch.float32))
        n = weights.shape[0]
        theta = torch.cat([state[k].reshape(n, -1) for k in self.names], dim=1)
        return theta.contiguous(), {k: state[k].contiguous() for k in self.buffer_names}

    def theta_of(self, module: nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(theta ``[Pp]``, buffers) of a module with this architecture."""
        params = dict(module.named_parameters())
        bufs = dict(module.named_buffers())
        theta = torch.cat([params[k].detach().reshape(-1) for k in self.names])
        return theta, {k: bufs[k].detach() for k in self.buffer_names}

    def unflat(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[Pp]`` -> parameter dict (views; differentiable)."""
        sizes = [int(torch.Size(s).numel()) for s in self.shapes]
        return {k: t.view(s) for k, t, s in zip(self.names, torch.split(theta, sizes), self.shapes)}

    # ------------------------------------------------------------------ functions
    def forward(self, theta: torch.Tensor, buffers: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Outputs of one model (``theta [Pp]``) on inputs ``x``."""
        return functional_call(self.module, {**self.unflat(theta), **dict(buffers)}, (x,))

    def loss_fn(self, kind: str) -> Callable:
        """``loss(theta, buffers, x, y) -> scalar``: the training loss as a pure function of theta."""
        crit = task_loss(kind)

        def loss(theta, buffers, x, y):
            return crit(self.forward(theta, buffers, x), y)

        return loss
