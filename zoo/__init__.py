"""wszoo's zoo package: architectures, layouts, datasets, the Zarr store and its writer, the population
trainer, the batched evaluator."""
from .arch import arch_spec, build_model
from .build import build
from .errors import ZooError
from .layout import Layout, layout_of
from .store import Zoo, open
from .datasets import Dataset, load_dataset
from .evaluate import evaluate, predict, recalibrate_bn
from .writer import ZooWriter, create, open_writer

__all__ = ["ZooError", "Layout", "layout_of", "arch_spec", "build_model", "build", "Zoo", "open", "Dataset",
           "load_dataset", "evaluate", "predict", "recalibrate_bn", "create", "open_writer", "ZooWriter"]
