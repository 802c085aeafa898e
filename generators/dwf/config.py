"""The typed config of ``conf/generator/dwf.yaml`` (``zoo.app.schema``): each key's type, default, rule and doc,
checked by ``zoo fit`` before it writes; ``zoo fit --help`` lists it."""

from __future__ import annotations

from dataclasses import dataclass

from generators.config import FRACTION, NON_NEGATIVE, POSITIVE, PROBABILITY, TEXT, name_rule
from zoo.app.checks import list_of, number, one_of
from zoo.app.schema import Schema, key


@dataclass(frozen=True)
class DwfConfig(Schema, group="generator", name="dwf"):
    """conf/generator/dwf.yaml."""

    WHERE = "generator."

    name: str = key("dwf", name_rule("dwf"), "the generator (generator=NAME chooses the config)")
    layout: str | None = key(None, TEXT, "layout key; required when the zoo holds several")
    query: str | None = key(None, TEXT, 'filter over the models table that runs no code, e.g. "learning_rate >= 0.05"')
    checkpoint: int = key(-1, number(int), "which checkpoint of each model (-1: its last)")
    canonical: str | bool = key(
        "auto",
        one_of("auto", True, False),
        "auto: the store's canonical weights (`zoo align`), else aligned here to the training model with the best "
        "train accuracy (Git Re-Basin); false: raw weights (the ablation)",
    )
    condition: str | None = key(
        None, TEXT, "a models-table column with several values to condition on, e.g. learning_rate"
    )
    val_fraction: float = key(0.1, FRACTION, "of the selected models' ids, held out for early stopping")
    normalize: str = key(
        "coordinate",
        one_of("coordinate", "none"),
        "coordinate: per-coordinate standardization (training split); none: raw weights",
    )
    source_scale: float = key(
        0.05,
        POSITIVE,
        "s = source_scale x the scale of the flow coordinates (1 after normalization and whitened PCA; the weights' "
        "std with normalize=none): matched to the weights' scale",
    )
    pca: str = key(
        "auto",
        one_of("auto", True, False),
        "auto: PCA when the net has more than pca_min_params parameters; true | false",
    )
    pca_min_params: int = key(
        1000, number(int, 0), "on dwf-mlp-digits (3,466 parameters) PCA learned ~3x faster per step and far better"
    )
    pca_variance: float = key(
        0.99,
        number(float, 0, 1, low_open=True),
        "components kept: smallest count explaining this share of the training variance",
    )
    sigma: float = key(0.001, NON_NEGATIVE, "noise added to x_t (as published)")
    hidden: int = key(512, number(int, 1), "")
    time_dim: int = key(64, number(int, 1), "")
    dropout: float = key(0.0, PROBABILITY, "published 0.1; 0 reached higher sample accuracy in 3k steps")
    lr: float = key(0.002, POSITIVE, "")
    weight_decay: float = key(1e-05, NON_NEGATIVE, "")
    betas: list[float] = key([0.9, 0.95], list_of(number(float, 0, 1, high_open=True), length=2), "")
    batch_size: int = key(128, number(int, 1), "")
    ema_decay: float = key(
        0.99,
        number(float, 0, 1),
        "per step, from step 1; on dwf-mlp-digits (seed 0) 0.999 kept the near-init weights in the average past the "
        "early stop (1100 steps, samples near the mean: test 0.9345, good&novel 2%); 0.99: 3600 steps, test 0.9567, "
        "good&novel 32% (raw weights: 0.9560, 26%)",
    )
    val_samples: int = key(
        64, number(int, 0), "samples drawn at each validation to log their training-split accuracy (0: none)"
    )
    ode_method: str = key("rk4", one_of("euler", "midpoint", "rk4"), "euler | midpoint | rk4")
    ode_steps: int = key(20, number(int, 1), "")
