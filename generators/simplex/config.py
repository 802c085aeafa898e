"""The typed config of ``conf/generator/simplex.yaml`` (``zoo.app.schema``): each key's type, default, rule and doc,
checked by ``zoo fit`` before it writes; ``zoo fit --help`` lists it."""

from __future__ import annotations

from dataclasses import dataclass

from generators.config import FRACTION, NON_NEGATIVE, POSITIVE, PROBABILITY, TEXT, name_rule
from zoo.app.checks import number, one_of, optional
from zoo.app.schema import Schema, key


@dataclass(frozen=True)
class SimplexConfig(Schema, group="generator", name="simplex"):
    """conf/generator/simplex.yaml."""

    WHERE = "generator."

    name: str = key("simplex", name_rule("simplex"), "the generator (generator=NAME chooses the config)")
    layout: str | None = key(None, TEXT, "layout key; required when the zoo holds several")
    query: str | None = key(None, TEXT, "filter over the models table that runs no code")
    checkpoint: int = key(-1, number(int), "which checkpoint of each model (-1: its last)")
    canonical: str | bool = key(
        "auto",
        one_of("auto", True, False),
        "auto: the store's canonical weights (`zoo align`), else aligned here to the training model with the best "
        "train accuracy (Git Re-Basin); false: raw weights (combinations then fail)",
    )
    val_fraction: float = key(
        0.1, FRACTION, "of the models' ids, held out (not vertices): the novelty yardstick of the validation"
    )
    vertices: int | None = key(
        16,
        optional(number(int, 1)),
        "how many training models (a seeded subset) are vertices; null: all of them. Fewer vertices get more steps "
        "each: on dwf-mlp-mnist, k=2, 16 vertices x 1,000 steps: held-out training accuracy 0.988 (test 0.9266); all "
        "115 x 1,500 steps: 0.981 (test 0.9214)",
    )
    k: int = key(2, number(int, 1), "vertices per sample, drawn without replacement among the training models")
    alpha: float = key(1.0, POSITIVE, "Dirichlet(alpha) convex weights: 1 is uniform over the k-simplex")
    repair: bool = key(
        False,
        one_of(True, False),
        "REPAIR (Jordan et al. 2022): each hidden unit's pre-activation mean/std on training inputs set to the mix of"
        " its parents' (MLPs; undoes the variance collapse of averaged nets)",
    )
    repair_points: int = key(1000, number(int, 1), "training-split inputs REPAIR measures on (fixed, seeded)")
    bn_points: int | None = key(
        None,
        optional(number(int, 1)),
        "BatchNorm nets: training-split inputs the samples' running statistics are re-estimated on (a fixed seeded"
        " subset; null: the whole split)",
    )
    noise: float = key(
        0.0, NON_NEGATIVE, "Gaussian noise x each coordinate's std across the vertices, added to every sample"
    )
    steps: int = key(
        1500,
        number(int, 0),
        "SGD steps on the training split (0: the raw aligned models); each draws batch_models combinations and a batch",
    )
    lr: float = key(0.05, POSITIVE, "")
    momentum: float = key(0.9, PROBABILITY, "")
    batch_models: int = key(32, number(int, 1), "")
    batch_size: int = key(128, number(int, 1), "")
    data_val_fraction: float = key(
        0.1,
        number(float, 0, 1, high_open=True),
        "of the training split held out from fitting: the validation accuracy that picks the step",
    )
    val_every: int = key(100, number(int, 1), "steps between validations (the vertices of the best one are kept)")
    val_samples: int = key(64, number(int, 1), "fixed combinations scored at each validation")
