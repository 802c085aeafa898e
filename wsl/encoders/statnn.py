"""StatNN: per-tensor statistics (mean, variance, quantiles 0/.25/.5/.75/1) of each real tensor, then an MLP.

The statistics ignore the order of a tensor's entries, so the encoder is invariant to hidden-unit
permutations by construction. Padded entries are excluded (each layout's real shapes are sliced out).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from wsl.encoders.base import WeightEncoder, mlp
from wsl.encoders.config import StatNNConfig
from wsl.space import WeightSpace

QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


def tensor_statistics(space: WeightSpace, w: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
    """[n, P] padded weights -> [n, tensors * 7] statistics over each tensor's real entries."""
    n = w.shape[0]
    q = torch.tensor(QUANTILES, dtype=w.dtype, device=w.device)
    out = w.new_zeros(n, len(space.slots), 2 + len(QUANTILES))
    for k in layout.unique().tolist():
        rows = (layout == k).nonzero().flatten()
        shapes = {e.name: e.shape for e in space.layouts[k].entries}
        wk = w[rows]
        for j, s in enumerate(space.slots):
            t = space.view(wk, s.name)[(slice(None), *[slice(0, d) for d in shapes[s.name]])].reshape(len(rows), -1)
            var, mean = torch.var_mean(t, dim=1, correction=0)
            quant = torch.quantile(t, q, dim=1).T
            out[rows, j] = torch.cat([mean[:, None], var[:, None], quant], dim=1)
    return out.reshape(n, -1)


class StatFeatures(torch.nn.Module):
    """Per-tensor statistics, batch-normalized (means and variances differ in scale): StatNN's input, and the
    ``stats`` features the invariant encoders (nfn, graph) may append to their pooled features before the head,
    as the NFN code's ``append_stats`` option does (AllanYangZhou/nfn, experiments/models.py, InvariantNFN)."""

    def __init__(self, space: WeightSpace):
        super().__init__()
        self.space = space
        self.dim = len(space.slots) * (2 + len(QUANTILES))
        self.norm = torch.nn.BatchNorm1d(self.dim)

    def forward(self, w: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        stats = tensor_statistics(self.space, w, layout)
        if self.training and stats.shape[0] == 1:  # one model: no batch statistics, normalize with running ones
            self.norm.eval()
            normed = self.norm(stats)
            self.norm.train()
            return normed
        return self.norm(stats)


def _rename_old_norm(state_dict: dict, prefix: str, *args) -> None:
    """Runs saved before StatFeatures existed name the BatchNorm ``norm.*``: read them as ``stats.norm.*``."""
    for key in [k for k in state_dict if k.startswith(prefix + "norm.")]:
        state_dict[prefix + "stats." + key[len(prefix) :]] = state_dict.pop(key)


class StatNN(WeightEncoder):
    """MLP over per-tensor statistics (Unterthiner et al.'s StatNN)."""

    CONFIG = StatNNConfig

    def __init__(self, space: WeightSpace, out_dim: int, hidden: Sequence[int] = (256, 256), dropout: float = 0.1):
        super().__init__(space, out_dim)
        self.stats = StatFeatures(space)
        self.net = mlp([self.stats.dim, *[int(h) for h in hidden], out_dim], dropout)
        self._register_load_state_dict_pre_hook(_rename_old_norm)

    def forward(self, w: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        return self.net(self.stats(w, layout))
