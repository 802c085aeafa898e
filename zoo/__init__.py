"""wszoo's zoo package: the vocabulary (architectures, layouts, datasets), the Zarr store (``zoo.store``), the
stacked forward and batched evaluator, population training (``zoo.training``), Git Re-Basin (``zoo.rebasin``),
loss landscapes (``zoo.landscape``), and the ``zoo`` command's shell (``zoo.app``, ``zoo.commands``).

The public names below are imported on first use (module ``__getattr__``, PEP 562): ``import zoo`` loads
neither torch nor pandas nor zarr, so ``zoo --help`` and ``zoo --version`` answer at once.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from zoo.errors import ZooError
from zoo.lazy import lazy_exports

try:
    __version__: str = version("wszoo")  # the version in pyproject.toml, as installed
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from zoo.arch import arch_spec, build_model
    from zoo.datasets import Dataset, load_dataset
    from zoo.evaluate import evaluate, predict, recalibrate_bn
    from zoo.inr import render
    from zoo.layout import Layout, layout_of
    from zoo.store import Zoo, ZooWriter, create, open, open_writer
    from zoo.training.build import build

# public name -> the module that defines it (imported when the name is first read)
_LAZY = {
    "arch_spec": "zoo.arch",
    "build_model": "zoo.arch",
    "Dataset": "zoo.datasets",
    "load_dataset": "zoo.datasets",
    "evaluate": "zoo.evaluate",
    "predict": "zoo.evaluate",
    "recalibrate_bn": "zoo.evaluate",
    "render": "zoo.inr",
    "Layout": "zoo.layout",
    "layout_of": "zoo.layout",
    "Zoo": "zoo.store",
    "ZooWriter": "zoo.store",
    "create": "zoo.store",
    "open": "zoo.store",
    "open_writer": "zoo.store",
    "build": "zoo.training.build",
}
# subpackages reachable as attributes (``zoo.store.open``) without importing them first, as before
_SUBMODULES = {
    "app",
    "arch",
    "commands",
    "datasets",
    "evaluate",
    "forward",
    "inr",
    "lazy",
    "landscape",
    "layout",
    "query",
    "rebasin",
    "store",
    "training",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, _SUBMODULES)

__all__ = [
    "__version__",
    "ZooError",
    "Layout",
    "layout_of",
    "arch_spec",
    "build_model",
    "build",
    "Zoo",
    "open",
    "Dataset",
    "load_dataset",
    "evaluate",
    "predict",
    "recalibrate_bn",
    "render",
    "create",
    "open_writer",
    "ZooWriter",
]
