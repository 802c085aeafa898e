"""The one interface every weight encoder implements, and the small MLP they share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import nn

from wsl.space import WeightSpace
from zoo.app.schema import Schema


class WeightEncoder(nn.Module):
    """Maps a batch of normalized padded weights to predictions.

    ``forward(w [n, P], layout [n] long) -> [n, out_dim]``; ``layout`` indexes ``space.layouts`` so the
    encoder knows each network's real units. Constructor: ``(space, out_dim, **hyperparameters)``.
    """

    # the typed config of conf/encoder/<name>.yaml (wsl.encoders.config): a wrong type or range is a one-line
    # error naming the key before anything is read or written
    CONFIG: ClassVar[type[Schema]]

    def __init__(self, space: WeightSpace, out_dim: int):
        super().__init__()
        self.space = space
        self.out_dim = int(out_dim)

    def cost_note(self, batch_size: int) -> str | None:
        """A one-line warning when training on batches of ``batch_size`` models would be unusually costly."""
        return None


def mlp(
    dims: Sequence[int], dropout: float = 0.0, act: type[nn.Module] = nn.GELU, last_act: bool = False
) -> nn.Sequential:
    """Linear layers through ``dims`` with activations (and dropout) between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2 or last_act:
            layers.append(act())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)
