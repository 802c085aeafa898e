"""Flat MLP over the whole padded weight vector: the naive baseline (not permutation-invariant)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from wsl.encoders.base import WeightEncoder, mlp
from wsl.encoders.config import MlpConfig
from wsl.space import WeightSpace


class FlatMLP(WeightEncoder):
    """MLP(P -> hidden... -> out_dim) on the normalized padded vector."""

    CONFIG = MlpConfig

    def __init__(self, space: WeightSpace, out_dim: int, hidden: Sequence[int] = (256, 128), dropout: float = 0.1):
        super().__init__(space, out_dim)
        self.net = mlp([space.size, *[int(h) for h in hidden], out_dim], dropout)

    def forward(self, w: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        return self.net(w)
