"""Linear centered kernel alignment (Kornblith et al. 2019) between two models' representations.

CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with columns centred: 1 for identical
representations, invariant to orthogonal transforms and isotropic scaling of either side.
"""

from __future__ import annotations

import torch


def linear_cka(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Linear CKA of features ``x [N, d1]`` and ``y [N, d2]`` (same N examples); batched over leading dims."""
    x = x.double()
    y = y.double()
    x = x - x.mean(dim=-2, keepdim=True)
    y = y - y.mean(dim=-2, keepdim=True)
    xy = (y.transpose(-1, -2) @ x).square().sum(dim=(-1, -2))
    xx = (x.transpose(-1, -2) @ x).square().sum(dim=(-1, -2)).sqrt()
    yy = (y.transpose(-1, -2) @ y).square().sum(dim=(-1, -2)).sqrt()
    return (xy / (xx * yy).clamp_min(eps)).float()
