"""The typed config of ``conf/generator/known.yaml`` (``zoo.app.schema``): each key's type, default, rule and doc,
checked by ``zoo fit`` before it writes; ``zoo fit --help`` lists it."""

from __future__ import annotations

from dataclasses import dataclass

from generators.config import FRACTION, POSITIVE, TEXT, name_rule
from zoo.app.checks import number, one_of
from zoo.app.schema import Schema, key


@dataclass(frozen=True)
class KnownConfig(Schema, group="generator", name="known"):
    """conf/generator/known.yaml."""

    WHERE = "generator."

    name: str = key("known", name_rule("known"), "the generator (generator=NAME chooses the config)")
    query: str | None = key(
        None, TEXT, "filter over the models table that runs no code: the models to learn from (e.g. \"arch == 'mlp'\")"
    )
    val_fraction: float = key(
        0.2, FRACTION, "of each layout's selected model ids, held out for validation and early stopping"
    )
    history: int = key(
        5,
        number(int, 2),
        "values per window (and history - 1 differences); needs trajectories of >= history+1 checkpoints",
    )
    max_windows: int = key(2000000, number(int, 1), "training (weight, position) windows kept (seeded random subset)")
    max_val_windows: int = key(200000, number(int, 1), "")
    hidden: int = key(64, number(int, 1), "units of each stream's gated activation")
    out: int = key(32, number(int, 1), "units of each stream's output")
    bound_quantile: float = key(
        0.999,
        number(float, 0, 1, low_open=True),
        "bound on the predicted change, per kind: bound_factor x this quantile of |next change|",
    )
    bound_factor: float = key(1.5, POSITIVE, "over the training windows")
    loss: str = key(
        "mae", one_of("mae", "mse"), "mae (as published: the conditional median of the next change) | mse (its mean)"
    )
    lr: float = key(0.001, POSITIVE, "Adam, as published")
    batch_size: int = key(4096, number(int, 1), "")
    max_epochs: int = key(
        30, number(int, 1), "x steps_per_epoch (fit.yaml) steps at most; early stopping usually ends sooner"
    )
