"""Typed checks of composed configs, run before anything is written.

Hydra composes YAML and overrides into plain values without types, so ``recipe.widths=abc`` or
``threads=-1`` would otherwise surface as a traceback deep in training, or as a zoo of diverged models.
Each config's owner lists a rule per key (``zoo.training.build.BUILD``, ``zoo.landscape.compute.LANDSCAPE``,
``wsl.train``); :func:`check` refuses unknown keys (``+recipe.nope=1``) too. Each failure is one ZooError
naming the key, the value and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from zoo.errors import ZooError

Rule = Callable[[Any], str | None]  # returns what was expected when the value breaks the rule


def number(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False) -> Rule:
    def rule(v: Any) -> str | None:
        ok = (
            isinstance(v, kind) and not isinstance(v, bool)
            if kind is int
            else isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        )
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


def list_of(item: Rule, sorted_unique: bool = False) -> Rule:
    def rule(v: Any) -> str | None:
        items = v if isinstance(v, (list, tuple)) else [v]
        if not items or any(item(x) for x in items):
            return f"a non-empty list of {item(object()) or 'values'}"
        if sorted_unique and list(items) != sorted(set(items)):
            return "a strictly increasing list"
        return None

    return rule


def one_of(*choices: Any) -> Rule:
    return lambda v: None if v in choices else f"one of {list(choices)}"


def typed(kind: type, name: str) -> Rule:
    return lambda v: None if isinstance(v, kind) else name


def optional(rule: Rule) -> Rule:
    return lambda v: None if v is None else rule(v)


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
