"""The one interface every weight encoder implements, and the small MLP they share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from torch import nn

from wsl.space import WeightSpace
from zoo.app.checks import Rule, number

# rules the encoders share (zoo.app.checks): checked on the composed config, before a run folder is touched
SIZE = number(int, 1)
DROPOUT = number(float, 0, 1, high_open=True)


def sizes(v: Any) -> str | None:
    """A rule: a list of layer widths (integers >= 1; empty: no hidden layer)."""
    ok = isinstance(v, (list, tuple)) and all(SIZE(x) is None for x in v)
    return None if ok else "a list of integers >= 1, e.g. [256,128]"


def names(*choices: str) -> Rule:
    """A rule: a non-empty list of some of ``choices`` (a lone name is refused: it is not a list)."""

    def rule(v: Any) -> str | None:
        ok = isinstance(v, (list, tuple)) and len(v) > 0 and all(x in choices for x in v)
        return None if ok else f"a non-empty list of {', '.join(choices)}"

    return rule


class WeightEncoder(nn.Module):
    """Maps a batch of normalized padded weights to predictions.

    ``forward(w [n, P], layout [n] long) -> [n, out_dim]``; ``layout`` indexes ``space.layouts`` so the
    encoder knows each network's real units. Constructor: ``(space, out_dim, **hyperparameters)``.
    """

    # one rule per key of conf/encoder/<name>.yaml but ``name`` (zoo.app.checks): a wrong type or range is a one-line
    # error naming the key before anything is read or written
    CONFIG: ClassVar[Mapping[str, Rule]] = {}

    @classmethod
    def check_relations(cls, cfg: Mapping[str, Any]) -> str | None:
        """What is wrong between keys that each pass their rule (e.g. a width not divisible by a head count)."""
        return None

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
