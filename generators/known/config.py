"""The rules of ``conf/generator/known.yaml``: a type and range per key, checked by ``zoo fit`` before it writes."""

from __future__ import annotations

from generators.config import FRACTION, POSITIVE, TEXT, name_rule
from zoo.app.checks import Rule, number, one_of

CHECKS: dict[str, Rule] = {
    "name": name_rule("known"),
    "query": TEXT,
    "val_fraction": FRACTION,
    "history": number(int, 2),  # values per window: at least one difference
    "max_windows": number(int, 1),
    "max_val_windows": number(int, 1),
    "hidden": number(int, 1),
    "out": number(int, 1),
    "bound_quantile": number(float, 0, 1, low_open=True),
    "bound_factor": POSITIVE,
    "loss": one_of("mae", "mse"),
    "lr": POSITIVE,
    "batch_size": number(int, 1),
    "max_epochs": number(int, 1),
}
