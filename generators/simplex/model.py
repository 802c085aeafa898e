"""Simplex: a new network is a random convex combination of k vertices, the zoo's training models aligned into one
frame (Git Re-Basin) and fitted so that their combinations have a low loss on the TRAINING split (``fit.py``).

A sample draws k distinct vertices uniformly, convex weights lambda ~ Dirichlet(alpha), and returns
sum_i lambda_i v_i (+ ``noise`` x each coordinate's std across the vertices x N(0, 1)). Invariant: with
``noise: 0`` every sample lies in the convex hull of the vertices, and it is a vertex only when one weight is 1.
Sampling is one gather and one weighted sum: no network, no ODE.

``repair: true`` (MLPs) then corrects the variance collapse of averaged networks (REPAIR, Jordan et al. 2022): on
``repair_points`` fixed TRAINING-split inputs, each hidden unit's pre-activation mean and std are set, layer by layer,
to the same convex combination of its parent vertices' (folded into that unit's weights and bias), as BatchNorm
recalibration does for BN nets. The samples then leave the hull (each unit rescaled), still one function of the
same draws.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from generators.base import Generator
from zoo.arch import MLP
from zoo.errors import ZooError

REPAIR_SEED = 4321  # the fixed training-split inputs REPAIR measures statistics on


def draw_combinations(
    m: int, n: int, k: int, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """([n, k] vertex indices, distinct per row; [n, k] float64 convex weights ~ Dirichlet(alpha)), seeded."""
    if not 1 <= k <= m:
        raise ZooError(f"generator.k={k} must be between 1 and the {m} training models")
    pick = torch.rand(n, m, generator=generator).argsort(1)[:, :k]
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))  # numpy's Dirichlet, seeded by the draw
    lam = np.random.default_rng(seed).dirichlet(np.full(k, float(alpha)), size=n)
    return pick, torch.from_numpy(lam)


def combine(vertices: torch.Tensor, pick: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """[n, P]: sum_i lam[:, i] * vertices[pick[:, i]] (differentiable in ``vertices``)."""
    lam, pick = lam.to(vertices.device, vertices.dtype), pick.to(vertices.device)  # drawn on the CPU
    return torch.einsum("nk,nkp->np", lam, vertices[pick])


class Simplex(Generator):
    """Random convex combinations of k aligned (and fitted) training models."""

    name = "simplex"
    default_monitor = "val/loss"  # unused: the simplex has its own fitting (generators.simplex.fit)

    def __init__(self, config: dict, origin: dict, dims: dict):
        super().__init__(config, origin, dims)
        m, p = int(dims["vertices"]), int(dims["params"])
        self.register_buffer("vertices", torch.zeros(m, p))  # [m, P_params] in the aligned frame
        self.register_buffer("spread", torch.zeros(p))  # [P_params] each coordinate's std across the vertices

    @classmethod
    def from_data(cls, config: dict, origin: dict, train: torch.Tensor, buffers: torch.Tensor) -> Simplex:
        """The simplex whose vertices are the aligned training models' parameters [m, P_params] (before fitting)."""
        m, p = train.shape
        if m < int(config["k"]):
            raise ZooError(f"generator.k={config['k']} needs at least that many training models, found {m}")
        g = cls(config, origin, {"vertices": m, "params": p})
        g.vertices.copy_(train)
        g.refresh_spread()
        g.buffer_fill.copy_(buffers)
        return g

    def refresh_spread(self) -> None:
        """Recompute each coordinate's std across the vertices (the scale of the optional noise)."""
        self.spread.copy_(self.vertices.std(0, unbiased=self.vertices.shape[0] > 1))

    def generate(self, n: int, generator: torch.Generator, condition: torch.Tensor | None) -> torch.Tensor:
        """[n, P_params]: combinations of k distinct vertices with Dirichlet(alpha) weights, plus the optional noise."""
        if condition is not None:
            raise ZooError("the simplex generator is unconditional; sample it without a condition")
        pick, lam = draw_combinations(
            self.vertices.shape[0], n, int(self.config["k"]), float(self.config["alpha"]), generator
        )
        out = combine(self.vertices, pick, lam)
        if self.config.get("repair"):
            out = self.repair(out, pick, lam)
        noise = float(self.config["noise"])
        if noise > 0:
            out = out + noise * self.spread * torch.randn(out.shape, generator=generator).to(out.device)
        return out

    def _repair_inputs(self) -> torch.Tensor:
        """The fixed TRAINING-split inputs REPAIR measures pre-activation statistics on."""
        x = self.dataset().X_train
        k = min(int(self.config.get("repair_points", 1000)), len(x))
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(REPAIR_SEED))[:k]
        return x[idx].flatten(1)

    def repair(self, params: torch.Tensor, pick: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """[n, P_params] combinations whose hidden units' pre-activation mean/std on training inputs are set to the
        lam-weighted mean of their parents' (REPAIR); MLPs only."""
        template = self.layout.build()
        if type(template) is not MLP:
            raise ZooError("generator.repair works on MLPs; set generator.repair=false for this layout")
        layers: nn.Sequential = template.layers
        x = self._repair_inputs().to(params.device)
        names = [name for name, _ in template.named_parameters()]
        sizes = [p.numel() for _, p in template.named_parameters()]
        if sum(sizes) != params.shape[1]:
            raise ZooError("generator.repair: the layout's parameters are not the MLP's")
        n = params.shape[0]
        out = params.clone()
        offsets = dict(zip(names, torch.tensor([0, *sizes]).cumsum(0).tolist()))
        lam, pick = lam.to(params.device, params.dtype), pick.to(params.device)

        def view(t: torch.Tensor, name: str) -> torch.Tensor:
            p = dict(template.named_parameters())[name]
            return t[:, offsets[name] : offsets[name] + p.numel()].view(t.shape[0], *p.shape)

        h_s = x.expand(n, *x.shape)  # the samples' activations [n, b, d]
        h_v = x.expand(self.vertices.shape[0], *x.shape)  # the vertices' [m, b, d]
        linear = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Linear)]
        for i, layer in enumerate(layers):
            if not isinstance(layer, nn.Linear):
                h_s, h_v = layer(h_s), layer(h_v)
                continue
            w, b = view(out, f"layers.{i}.weight"), view(out, f"layers.{i}.bias")
            z_v = torch.baddbmm(
                view(self.vertices, f"layers.{i}.bias").unsqueeze(1),
                h_v,
                view(self.vertices, f"layers.{i}.weight").transpose(1, 2),
            )
            z_s = torch.baddbmm(b.unsqueeze(1), h_s, w.transpose(1, 2))
            if i != linear[-1]:  # hidden units only: the head's outputs are the logits
                mu_t = torch.einsum("nk,nku->nu", lam, z_v.mean(1)[pick])
                sd_t = torch.einsum("nk,nku->nu", lam, z_v.std(1)[pick])
                mu_s, sd_s = z_s.mean(1), z_s.std(1)
                scale = sd_t / sd_s.clamp_min(1e-8)
                w.mul_(scale.unsqueeze(-1))
                b.copy_((b - mu_s) * scale + mu_t)
                z_s = (z_s - mu_s.unsqueeze(1)) * scale.unsqueeze(1) + mu_t.unsqueeze(1)
            h_s, h_v = z_s, z_v
        return out

    # the generic Lightning fitting does not apply: the simplex registers its own fit (generators.simplex.fit)
    def training_loss(self, batch: Any) -> torch.Tensor:
        raise ZooError("the simplex generator is fitted by its own loop (zoo fit generator=simplex)")

    def validation_loss(self, batch: Any, batch_idx: int) -> tuple[torch.Tensor, int]:
        raise ZooError("the simplex generator is fitted by its own loop (zoo fit generator=simplex)")

    def optimizers(self, total_steps: int) -> Any:
        raise ZooError("the simplex generator is fitted by its own loop (zoo fit generator=simplex)")
