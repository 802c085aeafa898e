"""Lazy public names for a package (PEP 562): ``import zoo`` or ``import generators`` stays cheap, and a name's
module (torch, pandas, zarr, ...) is imported when the name is first read.

One subtlety: ``zoo.evaluate`` is both a function and a module (as ``generators.fit`` and ``generators.diagnose``).
When Python first imports such a submodule it sets the package's attribute to the module; an eager
``from zoo.evaluate import evaluate`` in the package rebound it to the function right after. The package's
class below does that rebinding for the lazy names, so ``zoo.evaluate(...)`` stays the function in any order.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any


class _LazyPackage(types.ModuleType):
    """A package module whose public names that share a submodule's name stay the names, not the submodule."""

    _lazy_exports: Mapping[str, str] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and self._lazy_exports.get(name) == value.__name__:
            value = getattr(value, name)  # the import system binding the submodule: keep the public name
        super().__setattr__(name, value)


def lazy_exports(
    package: str, exports: Mapping[str, str], submodules: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(``__getattr__``, ``__dir__``) for ``package``: ``exports`` maps a public name to its defining module,
    ``submodules`` are reachable as attributes without an import; the package's class keeps shadowed names."""
    module = sys.modules[package]
    subs = set(submodules)
    module.__class__ = _LazyPackage
    object.__setattr__(module, "_lazy_exports", dict(exports))

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
        elif name in subs:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(module), *exports, *subs})

    return __getattr__, __dir__
