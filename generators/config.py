"""Rules the generators' typed configs share (``zoo.app.checks``). Each method's own ``config.py`` declares its
config as a ``zoo.app.schema.Schema`` dataclass and registers it with its class, so ``zoo fit`` checks every key
before anything is written."""

from __future__ import annotations

from zoo.app.checks import Rule, number, one_of, optional, typed

# (0, 1): a share of models or tasks held out; both sides must keep some
FRACTION = number(float, 0, 1, low_open=True, high_open=True)
POSITIVE = number(float, 0, low_open=True)  # a finite number > 0: learning rates, scales
NON_NEGATIVE = number(float, 0)  # weight decays, loss weights, noise levels
PROBABILITY = number(float, 0, 1, high_open=True)  # dropout: 1 would drop everything
TEXT = optional(typed(str, "a string"))


def name_rule(name: str) -> Rule:
    """The ``name`` key: the generator's own name (``generator=NAME`` chooses the config)."""
    return one_of(name)
