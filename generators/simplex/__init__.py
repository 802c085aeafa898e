"""Simplex (``generator=simplex``): new networks as random convex combinations of k aligned training models, on a
low-loss simplex fitted to the zoo's training data (``model.py``; its own fitting in ``fit.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from generators.registry import register
from generators.simplex.config import CHECKS
from generators.simplex.model import Simplex

__all__ = ["Simplex"]


def _fit(cfg: Mapping) -> Any:
    """The simplex's own fitting (``generators.simplex.fit``), imported when a fit starts: loading needs none of it."""
    from generators.simplex.fit import fit_run

    return fit_run(cfg)


register(Simplex, fit=_fit, checks=CHECKS)
