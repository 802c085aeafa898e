"""Weight generators behind one API: ``fit(name, zoo_path, **overrides)``, ``load(run_dir)``, and on every
generator ``sample(n, seed, condition)`` -> state dicts, ``sample_zoo(n, out, seed)`` -> a zoo, ``save(dir)``.

DeepWeightFlow (``"dwf"``) is the first; each generator is a plain ``nn.Module`` registered by its name (loading
and sampling import no Lightning; ``generators.lit`` wraps a generator for fitting). KNOWN
(``"known"``) is a predictor instead: ``load(run_dir).predict(trajectory)`` -> the next weights.

Each method package registers itself when imported (its ``__init__`` ends with ``register(...)``): the
first import below is the list of methods. A new method is a folder, its ``conf/generator/<name>.yaml``
and its name on that line.
"""

from generators import d2nwg, dwf, known  # noqa: F401  (each registers itself: dwf, d2nwg, known)
from generators.base import Generator
from generators.diagnose import diagnose
from generators.dwf import DeepWeightFlow
from generators.fit import fit, fit_config
from generators.known import Known
from generators.registry import load, snapshots

__all__ = ["Generator", "DeepWeightFlow", "Known", "fit", "fit_config", "load", "snapshots", "diagnose"]
