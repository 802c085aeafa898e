"""DeepWeightFlow: flow matching on (re-based) flattened weights, sampling many networks with one ODE solve.

Coordinates: trainable parameters w [n, P_params] are standardized per coordinate with training-split
statistics (``normalize: coordinate``), optionally projected on the principal components that explain
``pca_variance`` of the training variance (each component scaled to unit variance), and the flow runs in
those coordinates from N(0, s^2) with s = ``source_scale`` x their scale (1 there; the weights' standard
deviation with ``normalize: none`` and no PCA), i.e. matched to the weights' own scale. The published
s = 0.01 on raw weights is about 0.05 of the per-coordinate spread of the dwf digits MLPs.
"""

from __future__ import annotations

import math

import torch

from generators.base import Generator
from generators.dwf.flow import VelocityMLP, cfm_loss, solve
from zoo.errors import ZooError

VAL_REPEATS = 8  # draws of (x0, t) per validation model: a steadier early-stopping signal


class DeepWeightFlow(Generator):
    """Conditional flow matching from Gaussian noise to canonical weights, MLP velocity field, ODE sampling."""

    name = "dwf"

    def __init__(self, config: dict, origin: dict, dims: dict):
        super().__init__(config, origin, dims)
        p, d, k = int(dims["params"]), int(dims["flow_dim"]), int(dims["pca_components"])
        self.register_buffer("mean", torch.zeros(p))
        self.register_buffer("scale", torch.ones(p))
        self.register_buffer("components", torch.zeros(k, p))  # [k, P_params] orthonormal rows (k=0: no PCA)
        self.register_buffer("component_scale", torch.ones(k))
        cond = origin.get("condition")
        self.velocity = VelocityMLP(
            d,
            hidden=int(config["hidden"]),
            time_dim=int(config["time_dim"]),
            dropout=float(config["dropout"]),
            num_conditions=len(cond["values"]) if cond else 0,
        )

    # ------------------------------------------------------------------ construction from data
    @classmethod
    def from_data(cls, config: dict, origin: dict, train: torch.Tensor, buffers: torch.Tensor) -> DeepWeightFlow:
        """Fit the coordinate statistics (and PCA) on the training models' parameters [n, P_params]."""
        n, p = train.shape
        if config["normalize"] == "coordinate":
            mean, scale = train.mean(0), train.std(0, unbiased=n > 1)
            scale = torch.where(scale > 1e-8, scale, torch.ones_like(scale))
            unit = 1.0
        elif config["normalize"] == "none":
            mean, scale = torch.zeros(p), torch.ones(p)
            unit = float(train.std())
        else:
            raise ZooError(f"generator.normalize must be coordinate or none, got {config['normalize']!r}")
        if config["pca"] not in ("auto", True, False):
            raise ZooError(f"generator.pca must be auto, true or false, got {config['pca']!r}")
        x = (train - mean) / scale
        use_pca = config["pca"] == "auto" and p > int(config["pca_min_params"]) or config["pca"] is True
        components, comp_scale, explained = torch.zeros(0, p), torch.ones(0), None
        if use_pca:
            centered = x - x.mean(0)
            _, s, vh = torch.linalg.svd(centered, full_matrices=False)
            var = s.double() ** 2
            ratio = torch.cumsum(var, 0) / var.sum()
            k = int(torch.searchsorted(ratio, torch.tensor(float(config["pca_variance"]), dtype=torch.float64))) + 1
            k = max(1, min(k, int((s > 1e-6 * s[0]).sum())))
            components = vh[:k].contiguous()
            x_mean = x.mean(0)
            mean = mean + scale * x_mean  # PCA is centered: fold its mean into the coordinate mean
            comp_scale = (s[:k] / math.sqrt(max(n - 1, 1))).clamp_min(1e-8)
            explained = float(ratio[k - 1])
            unit = 1.0  # whitened components
        source_std = float(config["source_scale"]) * unit
        dims = {
            "params": p,
            "flow_dim": components.shape[0] if use_pca else p,
            "pca_components": components.shape[0] if use_pca else 0,
            "pca_explained": explained,
            "source_std": source_std,
        }
        g = cls(config, origin, dims)
        g.mean.copy_(mean)
        g.scale.copy_(scale)
        g.components.copy_(components)
        g.component_scale.copy_(comp_scale)
        g.buffer_fill.copy_(buffers)
        return g

    # ------------------------------------------------------------------ coordinates
    def encode(self, w: torch.Tensor) -> torch.Tensor:
        """Parameters [n, P_params] -> flow coordinates [n, D]."""
        x = (w - self.mean) / self.scale
        return x @ self.components.T / self.component_scale if self.dims["pca_components"] else x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Flow coordinates [n, D] -> parameters [n, P_params]."""
        x = (z * self.component_scale) @ self.components if self.dims["pca_components"] else z
        return x * self.scale + self.mean

    # ------------------------------------------------------------------ fitting (generators.lit wraps these)
    def training_loss(self, batch):
        x1, cond = batch if len(batch) == 2 else (batch[0], None)
        return cfm_loss(self.velocity, x1, float(self.dims["source_std"]), float(self.config["sigma"]), cond)

    def validation_loss(self, batch, batch_idx):
        x1, cond = batch if len(batch) == 2 else (batch[0], None)
        gen = torch.Generator().manual_seed(1000 + batch_idx)  # the same draws every epoch: comparable losses
        x1 = x1.repeat(VAL_REPEATS, 1)
        cond = cond.repeat(VAL_REPEATS) if cond is not None else None
        loss = cfm_loss(self.velocity, x1, float(self.dims["source_std"]), float(self.config["sigma"]), cond, gen)
        return loss, x1.shape[0]

    def optimizers(self, total_steps):
        c = self.config
        opt = torch.optim.AdamW(
            self.velocity.parameters(),
            lr=float(c["lr"]),
            weight_decay=float(c["weight_decay"]),
            betas=tuple(float(b) for b in c["betas"]),
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(int(total_steps), 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ sampling
    def generate(self, n: int, generator: torch.Generator, condition: torch.Tensor | None) -> torch.Tensor:
        """Solve the flow ODE from n Gaussian draws at once; decode to parameters [n, P_params]."""
        # drawn on the CPU (the seeded generator's bits on every device), then moved to the flow's device
        x0 = torch.randn(n, int(self.dims["flow_dim"]), generator=generator).to(self.device)
        x0 = x0 * float(self.dims["source_std"])
        z = solve(
            self.velocity,
            x0,
            steps=int(self.config["ode_steps"]),
            method=str(self.config["ode_method"]),
            condition=condition,
        )
        return self.decode(z)
