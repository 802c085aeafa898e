"""D2NWG's denoiser over weight latents (a FiLM-conditioned residual MLP) and its diffusers noise schedulers
(DDPM for training, DDIM for sampling; linear betas as published, ``clip_sample=False``)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """LN -> FiLM by the (time + condition) vector -> Linear-SiLU-Linear, residual."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.film = nn.Linear(hidden, 2 * hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden))
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(c).chunk(2, dim=-1)
        return h + self.mlp(self.norm(h) * (1 + scale) + shift)


class Denoiser(nn.Module):
    """eps(z_t, t, dataset embedding): a residual MLP over the latent, FiLM-conditioned on time and dataset."""

    def __init__(self, dim: int, cond_dim: int, hidden: int, blocks: int, time_dim: int, dropout: float = 0.0):
        super().__init__()
        self.time_dim = int(time_dim)
        self.time = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.cond = nn.Sequential(nn.Linear(cond_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim + cond_dim, hidden)  # the condition enters here too: gradient from step one
        self.blocks = nn.ModuleList(ResBlock(hidden, dropout) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, dim))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """z [n, D], t [n] integer timesteps, cond [n, E] -> predicted noise [n, D]."""
        from diffusers.models.embeddings import get_timestep_embedding

        c = self.time(
            get_timestep_embedding(t.reshape(-1), self.time_dim, flip_sin_to_cos=True, downscale_freq_shift=0).to(
                z.dtype
            )
        ) + self.cond(cond)
        c = F.silu(c)
        h = self.inp(torch.cat([z, cond], dim=1))
        for block in self.blocks:
            h = block(h, c)
        return self.out(h)


def _schedulers(config: Mapping):
    from diffusers import DDIMScheduler, DDPMScheduler

    kw = dict(
        num_train_timesteps=int(config["timesteps"]),
        beta_start=float(config["beta_start"]),
        beta_end=float(config["beta_end"]),
        beta_schedule=str(config["beta_schedule"]),
        prediction_type="epsilon",
        clip_sample=False,
    )
    ddim = DDIMScheduler(**kw, set_alpha_to_one=True)
    ddim.set_timesteps(int(config["ddim_steps"]))
    return DDPMScheduler(**kw), ddim
