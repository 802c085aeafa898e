"""The rules of ``conf/generator/dwf.yaml``: a type and range per key, checked by ``zoo fit`` before it writes."""

from __future__ import annotations

from generators.config import DATA, NON_NEGATIVE, OPTIM, POSITIVE, PROBABILITY, TEXT, name_rule
from zoo.app.checks import Rule, number, one_of

CHECKS: dict[str, Rule] = {
    "name": name_rule("dwf"),
    **DATA,
    "condition": TEXT,  # a models-table column
    "normalize": one_of("coordinate", "none"),
    "source_scale": POSITIVE,
    "pca": one_of("auto", True, False),
    "pca_min_params": number(int, 0),
    "pca_variance": number(float, 0, 1, low_open=True),  # 1: every component
    "sigma": NON_NEGATIVE,  # 0: the straight conditional path (rectified flow)
    "hidden": number(int, 1),
    "time_dim": number(int, 1),
    "dropout": PROBABILITY,
    **OPTIM,
    "ode_method": one_of("euler", "midpoint", "rk4"),
    "ode_steps": number(int, 1),
}
