"""wszoo's zoo package: architectures, layouts, tasks, the Zarr store and the population trainer."""
from .arch import arch_spec, build_model
from .build import build
from .errors import ZooError
from .layout import Layout, layout_of
from .store import Zoo, open
from .datasets import Dataset, load_dataset
from .evaluate import evaluate, predict, recalibrate_bn

__all__ = ["ZooError", "Layout", "layout_of", "arch_spec", "build_model", "build", "Zoo", "open", "Dataset",
           "load_dataset", "evaluate", "predict", "recalibrate_bn"]
