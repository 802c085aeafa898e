"""Rules the generators' configs share (``zoo.app.checks``): the data keys every zoo-reading generator has and the
optimization keys of the generic Lightning fitting (``generators.fit``). Each method's own ``config.py`` adds its
keys and registers the whole table with its class, so ``zoo fit`` checks every key before anything is written."""

from __future__ import annotations

from zoo.app.checks import Rule, list_of, number, one_of, optional, typed

# (0, 1): a share of models or tasks held out; both sides must keep some
FRACTION = number(float, 0, 1, low_open=True, high_open=True)
POSITIVE = number(float, 0, low_open=True)  # a finite number > 0: learning rates, scales
NON_NEGATIVE = number(float, 0)  # weight decays, loss weights, noise levels
PROBABILITY = number(float, 0, 1, high_open=True)  # dropout: 1 would drop everything
TEXT = optional(typed(str, "a string"))

# generators.training_models: which models of the zoo, which checkpoint, which weights
DATA: dict[str, Rule] = {
    "layout": TEXT,
    "query": TEXT,
    "checkpoint": number(int),  # -1: each model's last; negatives count from the end
    "canonical": one_of("auto", True, False),
    "val_fraction": FRACTION,
}

# generators.fit: AdamW, EMA of the weights, samples at each validation
OPTIM: dict[str, Rule] = {
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "betas": list_of(number(float, 0, 1, high_open=True), length=2),
    "batch_size": number(int, 1),
    "ema_decay": number(float, 0, 1),
    "val_samples": number(int, 0),
}


def name_rule(name: str) -> Rule:
    """The ``name`` key: the generator's own name (``generator=NAME`` chooses the config)."""
    return one_of(name)
