"""The rules of typed configs: each returns what was expected when a value breaks it, else None.

Hydra composes YAML and overrides into plain values without types, so ``recipe.widths=abc`` or
``threads=-1`` would otherwise surface as a traceback deep in training, or as a zoo of diverged models.
Each config's schema (``zoo.app.schema``: ``zoo.training.build.BuildConfig``, ``generators.fit.FitConfig``, ...)
gives every field one of these rules; :func:`check` is the same check over a plain table (unknown keys refused).
Each failure is one ZooError naming the key, the value and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from zoo.errors import ZooError

Rule = Callable[[Any], str | None]  # returns what was expected when the value breaks the rule


def number(
    kind: type, low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False
) -> Rule:
    """An int (``kind=int``, bools refused) or a finite number, within ``low``/``high`` (open ends on request)."""

    def rule(v: Any) -> str | None:
        ok = (
            isinstance(v, kind) and not isinstance(v, bool)
            if kind is int
            else isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        )
        if ok and low is not None:
            ok = v > low if low_open else v >= low
        if ok and high is not None:
            ok = v < high if high_open else v <= high
        if ok:
            return None
        bounds = "" if low is None else f" {'>' if low_open else '>='} {low}"
        bounds += "" if high is None else f"{' and' if bounds else ''} {'<' if high_open else '<='} {high}"
        return f"{'an integer' if kind is int else 'a finite number'}{bounds}"

    return rule


def list_of(item: Rule, sorted_unique: bool = False, length: int | None = None) -> Rule:
    """A non-empty list of values each passing ``item`` (a lone value counts as a list of one unless ``length``)."""

    def rule(v: Any) -> str | None:
        if length is not None:
            if not isinstance(v, (list, tuple)) or len(v) != length or any(item(x) for x in v):
                return f"a list of {length} values, each {item(object()) or 'a value'}"
            return None
        items = v if isinstance(v, (list, tuple)) else [v]
        if not items or any(item(x) for x in items):
            return f"a non-empty list of {item(object()) or 'values'}"
        if sorted_unique and list(items) != sorted(set(items)):
            return "a strictly increasing list"
        return None

    return rule


def one_of(*choices: Any) -> Rule:
    """One of ``choices``, type included: ``1`` is not ``true`` and ``0`` not ``false``."""
    shown = ", ".join("true" if c is True else "false" if c is False else repr(c) for c in choices)
    return lambda v: None if any(v == c and type(v) is type(c) for c in choices) else f"one of [{shown}]"


def typed(kind: type, name: str) -> Rule:
    return lambda v: None if isinstance(v, kind) else name


def optional(rule: Rule) -> Rule:
    """``rule``, or null (the key's default behaviour)."""

    def checked(v: Any) -> str | None:
        expected = None if v is None else rule(v)
        return f"{expected} or null" if expected else None

    return checked


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
