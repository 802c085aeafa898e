"""Simplex (``generator=simplex``): new networks as random convex combinations of k aligned training models, on a
low-loss simplex fitted to the zoo's training data (``model.py``; its own fitting in ``fit.py``)."""

from __future__ import annotations

from generators.registry import register
from generators.simplex.config import SimplexConfig
from generators.simplex.fit import fit_run  # plain torch over the zoo's training split: no heavy import
from generators.simplex.model import Simplex

__all__ = ["Simplex", "fit_run"]

register(Simplex, fit=fit_run, schema=SimplexConfig)
