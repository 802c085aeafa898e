"""wszoo's zoo package: architectures, layouts, tasks, the Zarr store and the population trainer."""
from .arch import arch_spec, build_model
from .errors import ZooError
from .layout import Layout, layout_of

__all__ = ["ZooError", "Layout", "layout_of", "arch_spec", "build_model"]
