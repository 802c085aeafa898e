"""D2NWG's weight VAE: standardized weight vectors [n, P] <-> token latents [n, T * z], started at PCA.

Fitted once before the diffusion (``D2NWG.fit_vae``) and then frozen: a fixed coordinate system for the
denoiser, like DeepWeightFlow's PCA.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class WeightVAE(nn.Module):
    """Token-wise VAE over standardized weight vectors: [n, P] <-> latent [n, T * z] (T = ceil(P / chunk)).

    Encoder and decoder are a linear map plus a residual MLP (``hidden`` 0: linear only, probabilistic PCA):
    with a few hundred training nets a deep decoder memorizes them and reconstructs unseen tasks' weights
    badly, while the linear path reaches the span of the training weights. Tokens share the maps and carry
    a learned position embedding (in the latent and in the output).
    """

    def __init__(self, params: int, chunk: int, latent: int, hidden: int):
        super().__init__()
        self.params, self.chunk, self.latent = int(params), int(chunk), int(latent)
        self.tokens = math.ceil(self.params / self.chunk)
        self.enc = nn.Linear(chunk, 2 * latent)
        self.dec = nn.Linear(latent, chunk)
        self.pos_enc = nn.Parameter(torch.zeros(self.tokens, 2 * latent))
        self.pos_dec = nn.Parameter(torch.zeros(self.tokens, chunk))
        self.enc_mlp = (
            nn.Sequential(nn.Linear(chunk, hidden), nn.GELU(), nn.Linear(hidden, 2 * latent)) if hidden > 0 else None
        )
        self.dec_mlp = (
            nn.Sequential(nn.Linear(latent, hidden), nn.GELU(), nn.Linear(hidden, chunk)) if hidden > 0 else None
        )
        for mlp in (self.enc_mlp, self.dec_mlp):
            if mlp is not None:  # start linear: the MLP adds only what the linear path cannot fit
                nn.init.zeros_(mlp[-1].weight)
                nn.init.zeros_(mlp[-1].bias)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[n, P] -> [n, T, chunk] (zero-padded)."""
        return F.pad(x, (0, self.tokens * self.chunk - self.params)).reshape(x.shape[0], self.tokens, self.chunk)

    @torch.no_grad()
    def init_pca(self, x: torch.Tensor) -> None:
        """Start the linear paths at PCA of the training tokens [n, P] (the linear VAE's optimum for a tiny KL
        weight, up to rotation): training then only refines, and needs few steps."""
        tok = self._tokens(x)  # [n, T, chunk]
        mean = tok.mean(0)  # [T, chunk]
        centered = (tok - mean).reshape(-1, self.chunk)
        _, s, vh = torch.linalg.svd(centered, full_matrices=False)
        k = min(self.latent, vh.shape[0])
        scale = (s[:k] / math.sqrt(max(centered.shape[0] - 1, 1))).clamp_min(1e-6)  # latents of unit variance
        self.dec.weight.zero_()
        self.dec.bias.zero_()
        self.dec.weight[:, :k] = (vh[:k] * scale[:, None]).T
        self.pos_dec.copy_(mean)
        self.enc.weight.zero_()
        self.enc.bias.zero_()
        self.enc.weight[:k] = vh[:k] / scale[:, None]
        self.pos_enc.zero_()
        self.pos_enc[:, : self.latent] = -(mean @ self.enc.weight[: self.latent].T)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [n, P] -> (mean, log-variance), each [n, T * z]."""
        tok = self._tokens(x)
        h = self.enc(tok) + self.pos_enc
        if self.enc_mlp is not None:
            h = h + self.enc_mlp(tok)
        mu, logvar = h.chunk(2, dim=-1)
        return mu.flatten(1), (logvar - 4.0).clamp(-12, 6).flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latent [n, T * z] -> x [n, P]."""
        tok = z.reshape(z.shape[0], self.tokens, self.latent)
        out = self.dec(tok) + self.pos_dec
        if self.dec_mlp is not None:
            out = out + self.dec_mlp(tok)
        return out.flatten(1)[:, : self.params]
