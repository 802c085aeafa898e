"""wszoo's zoo package: the vocabulary (architectures, layouts, datasets), the Zarr store (``zoo.store``), the
stacked forward and batched evaluator, population training (``zoo.training``), Git Re-Basin (``zoo.rebasin``),
loss landscapes (``zoo.landscape``), and the ``zoo`` command's shell (``zoo.app``, ``zoo.commands``)."""

from zoo.arch import arch_spec, build_model
from zoo.datasets import Dataset, load_dataset
from zoo.errors import ZooError
from zoo.evaluate import evaluate, predict, recalibrate_bn
from zoo.inr import render
from zoo.layout import Layout, layout_of
from zoo.store import Zoo, ZooWriter, create, open, open_writer
from zoo.training.build import build

__all__ = [
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
