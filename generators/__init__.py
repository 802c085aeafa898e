"""Weight generators behind one API: ``fit(name, zoo_path, **overrides)``, ``load(run_dir)``, and on every
generator ``sample(n, seed, condition)`` -> state dicts, ``sample_zoo(n, out, seed)`` -> a zoo, ``save(dir)``.

DeepWeightFlow (``"dwf"``) is the first; each generator is a plain ``nn.Module`` registered by its name (loading
and sampling import no Lightning; ``generators.lit`` wraps a generator for fitting). KNOWN
(``"known"``) is a predictor instead: ``load(run_dir).predict(trajectory)`` -> the next weights.

Each method package registers itself when imported (its ``__init__`` ends with ``register(...)``): the
first import below is the list of methods. A new method is a folder, its ``conf/generator/<name>.yaml``
and its name on that line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from generators import d2nwg, dwf, known, simplex  # noqa: F401  (each registers itself: dwf, d2nwg, known, simplex)
from generators.base import Generator
from generators.dwf import DeepWeightFlow
from generators.known import Known
from generators.registry import load, snapshots
from generators.simplex import Simplex
from zoo.lazy import lazy_exports

if TYPE_CHECKING:
    from generators.diagnose import diagnose
    from generators.fit import fit, fit_config

# fitting (Hydra configs, Re-Basin) and diagnosing (plots, baselines) are imported on first use: loading and
# sampling a run need neither. ``generators.fit`` and ``generators.diagnose`` stay the functions (zoo.lazy).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {"fit": "generators.fit", "fit_config": "generators.fit", "diagnose": "generators.diagnose"},
    ("lcsc", "lit", "selection", "training_models", "config", "registry", "base"),
)

__all__ = ["Generator", "DeepWeightFlow", "Known", "Simplex", "fit", "fit_config", "load", "snapshots", "diagnose"]
