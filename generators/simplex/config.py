"""The rules of ``conf/generator/simplex.yaml``: a type and range per key, checked by ``zoo fit`` before it writes."""

from __future__ import annotations

from generators.config import DATA, NON_NEGATIVE, POSITIVE, PROBABILITY, name_rule
from zoo.app.checks import Rule, number, one_of, optional

CHECKS: dict[str, Rule] = {
    "name": name_rule("simplex"),
    **DATA,
    "vertices": optional(number(int, 1)),  # training models used as vertices (null: all of them)
    "k": number(int, 1),  # training models (vertices) per sample
    "alpha": POSITIVE,  # Dirichlet concentration of the convex weights
    "noise": NON_NEGATIVE,  # Gaussian noise x each coordinate's std across the vertices, added to a sample
    "repair": one_of(True, False),  # REPAIR: hidden units' statistics reset to their parents' mix (MLPs)
    "repair_points": number(int, 1),  # training-split inputs REPAIR measures on
    "bn_points": optional(number(int, 1)),  # training-split inputs BatchNorm recalibration reads (null: all)
    "steps": number(int, 0),  # optimizer steps of the simplex on the training data (0: the raw aligned models)
    "lr": POSITIVE,
    "momentum": PROBABILITY,
    "batch_models": number(int, 1),
    "batch_size": number(int, 1),
    "data_val_fraction": number(float, 0, 1, high_open=True),
    "val_every": number(int, 1),
    "val_samples": number(int, 1),
}
