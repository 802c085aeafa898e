"""Typed checks of a composed build config, run before anything is written.

Hydra composes YAML and overrides into plain values without types, so ``recipe.widths=abc`` or
``threads=-1`` would otherwise surface as a traceback deep in training, or as a zoo of diverged models.
Every key of the build config and of a recipe has a rule here; unknown keys (``+recipe.nope=1``) are
refused too. Each failure is one ZooError naming the key, the value and what was expected.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from zoo.errors import ZooError
from zoo.training.trajectory import check_trajectory_recipe

Rule = Callable[[Any], str | None]  # returns what was expected when the value breaks the rule


def _number(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False) -> Rule:
    def rule(v: Any) -> str | None:
        ok = isinstance(v, kind) and not isinstance(v, bool) if kind is int else \
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        if ok and low is not None:
            ok = v > low if low_open else v >= low
        if ok and high is not None:
            ok = v <= high
        if ok:
            return None
        bounds = "" if low is None else f" {'>' if low_open else '>='} {low}"
        bounds += "" if high is None else f" and <= {high}"
        return f"{'an integer' if kind is int else 'a finite number'}{bounds}"
    return rule


def _list_of(item: Rule, sorted_unique: bool = False) -> Rule:
    def rule(v: Any) -> str | None:
        items = v if isinstance(v, (list, tuple)) else [v]
        if not items or any(item(x) for x in items):
            return f"a non-empty list of {item(object()) or 'values'}"
        if sorted_unique and list(items) != sorted(set(items)):
            return "a strictly increasing list"
        return None
    return rule


def _one_of(*choices: Any) -> Rule:
    return lambda v: None if v in choices else f"one of {list(choices)}"


def _typed(kind: type, name: str) -> Rule:
    return lambda v: None if isinstance(v, kind) else name


def _optional(rule: Rule) -> Rule:
    return lambda v: None if v is None else rule(v)


def _names(v: Any) -> str | None:
    """A list (possibly empty) of dataset names: tasks a recipe keeps out of its zoo."""
    ok = isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)
    return None if ok else "a list of dataset names (possibly empty)"


RECIPE: dict[str, Rule] = {
    "name": _typed(str, "a string"),
    "dataset": _optional(_typed(str, "a dataset name or a path to a .npz file")),
    "datasets": _optional(_list_of(_typed(str, "dataset names or patterns"))),
    "held_out": _optional(_names),
    "task_seed": _number(int),
    "arch": _one_of("mlp", "cnn", "resnet"),
    "activation": _typed(str, "an activation name"),
    "batchnorm": _typed(bool, "true or false"),
    "kernel_size": _number(int, 1),
    "widths": _list_of(_number(int, 1)),
    "depths": _list_of(_number(int, 0)),
    "learning_rates": _list_of(_number(float, 0, low_open=True)),
    "batch_sizes": _list_of(_number(int, 1)),
    "weight_decays": _list_of(_number(float, 0)),
    "seeds": _number(int, 1),
    "seed_offset": _number(int, 0),
    "optimizer": _one_of("sgd", "adam", "adamw"),
    "momentum": _number(float, 0, 1),
    "schedule": _one_of("constant", "cosine"),
    "epochs": _number(int, 0),
    "checkpoint_epochs": _list_of(_number(int, 0), sorted_unique=True),
    "landscape": _optional(_typed(Mapping, "a mapping of landscape settings")),
    "kind": _optional(_one_of("grid", "trajectory")),  # zoo.trajectory: full-data training, then nested stages
    "stages": _optional(_number(int, 1)),
    "stage_epochs": _optional(_number(int, 1)),
    "sample_hparams": _optional(_typed(bool, "true or false")),  # draw lr and batch size per model (zoo.recipe)
    "stage_rates": _optional(lambda v: None if isinstance(v, (int, float, list, tuple)) and not isinstance(v, bool)
                             else "a rate or a range [low, high] with 0 < low <= high <= 1"),
}

BUILD: dict[str, Rule] = {
    "out": _typed(str, "a path or fsspec URL"),
    "overwrite": _typed(bool, "true or false"),
    "population_size": _number(int, 1),
    "block_size": _number(int, 1),
    "memory_floats": _number(int, 1),
    "retain_memory": _typed(bool, "true or false"),
    "threads": _optional(_number(int, 1)),
    "device": _one_of("cpu", "cuda", "auto"),
    "progress": _typed(bool, "true or false"),
    "executor": _typed(Mapping, "an executor config"),
    "recipe": _typed(Mapping, "a recipe"),
}


def check(values: Mapping, rules: Mapping[str, Rule], where: str) -> None:
    """Raise a one-line ZooError for the first unknown key or value breaking its rule."""
    unknown = sorted(set(values) - set(rules))
    if unknown:
        raise ZooError(f"unknown key {where}{unknown[0]} (known: {', '.join(sorted(rules))})")
    for key, rule in rules.items():
        if key in values:
            expected = rule(values[key])
            if expected:
                raise ZooError(f"{where}{key}={values[key]!r} is invalid: expected {expected}")


def check_build_config(cfg: Mapping) -> None:
    """Every key and value of a composed ``zoo build`` config, recipe included."""
    check(cfg, BUILD, "")
    check(cfg["recipe"], RECIPE, "recipe.")
    recipe = cfg["recipe"]
    check_trajectory_recipe(recipe)
    if (recipe.get("dataset") is None) == (recipe.get("datasets") is None):
        raise ZooError("recipe.dataset and recipe.datasets are both given; keep one (recipe.dataset=null to use the"
                       " list)" if recipe.get("dataset") is not None else
                       "recipe.dataset (one name) or recipe.datasets (a list of names) is missing")
    ckpts = recipe["checkpoint_epochs"] if isinstance(recipe["checkpoint_epochs"], list) else [recipe["checkpoint_epochs"]]
    if ckpts[-1] > recipe["epochs"]:
        raise ZooError(f"recipe.checkpoint_epochs={ckpts} is invalid: checkpoints must lie within 0..{recipe['epochs']}"
                       " (recipe.epochs)")


LANDSCAPE: dict[str, Rule] = {
    "checkpoint": _number(int), "seed": _number(int, 0), "batches": _number(int, 1), "batch_size": _number(int, 1),
    "probes": _number(int, 1), "probe_chunk": _number(int, 1), "power_iters": _number(int, 1),
    "power_tol": _number(float, 0, low_open=True), "pairs": _one_of("all", "consecutive"),
    "max_pairs": _number(int, 1), "bezier_steps": _number(int, 0), "bezier_lr": _number(float, 0, low_open=True),
    "bezier_batch_size": _number(int, 1), "curve_points": _number(int, 3), "threads": _optional(_number(int, 1)),
    "retain_memory": _typed(bool, "true or false"), "chunk": _number(int, 1),
    "curve_eval": _one_of("train", "analysis"), "bootstrap": _number(int, 0),
    "phases": _typed(Mapping, "a mapping of phase cut-offs"),
}

PHASES: dict[str, Rule] = {
    "train_loss_high": _number(float, 0, low_open=True),
    "hessian_metric": _one_of("hessian_trace", "hessian_top_eigenvalue"),
    "hessian_cut_kind": _one_of("quantile", "absolute"), "hessian_cut": _number(float),
    "mc_tol": _number(float, 0), "cka_high": _number(float, 0, 1), "interval_z": _number(float, 0),
}


def check_landscape_config(cfg: Mapping) -> None:
    """Every key and value of a resolved landscape config, phase cut-offs included."""
    check(cfg, LANDSCAPE, "landscape.")
    check(cfg["phases"], PHASES, "landscape.phases.")


def check_train_config(cfg: Mapping) -> None:
    """The values of a composed ``zoo train`` config that would otherwise fail deep inside training."""
    data = cfg.get("data") or {}
    split = data.get("split")
    if not (isinstance(split, (list, tuple)) and len(split) == 3 and all(_number(float, 0)(x) is None for x in split)
            and all(x > 0 for x in split) and abs(sum(split) - 1) < 1e-6):
        raise ZooError(f"data.split={split!r} is invalid: expected three positive fractions (train, val, test)"
                       " summing to 1")
    check({k: data[k] for k in ("batch_size",) if k in data}, {"batch_size": _number(int, 1)}, "data.")
    top = {k: cfg[k] for k in ("seed", "threads") if k in cfg}
    check(top, {"seed": _number(int, 0), "threads": _optional(_number(int, 1))}, "")
    optim = cfg.get("optim") or {}
    check(optim, {"lr": _number(float, 0, low_open=True), "weight_decay": _number(float, 0)}, "optim.")
    epochs = (cfg.get("trainer") or {}).get("max_epochs")
    if epochs is not None and _number(int, -1)(epochs):
        raise ZooError(f"trainer.max_epochs={epochs!r} is invalid: expected an integer >= 1 (or -1)")
