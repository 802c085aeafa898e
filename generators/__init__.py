"""Weight generators behind one API: ``fit(name, zoo_path, **overrides)``, ``load(run_dir)``, and on every
generator ``sample(n, seed, condition)`` -> state dicts, ``sample_zoo(n, out, seed)`` -> a zoo, ``save(dir)``.

DeepWeightFlow (``"dwf"``) is the first; each generator is a LightningModule registered by its name. KNOWN
(``"known"``) is a predictor instead: ``load(run_dir).predict(trajectory)`` -> the next weights.
"""
from generators.base import Generator, load, snapshots
from generators.diagnose.report import diagnose
from generators.dwf.model import DeepWeightFlow
from generators.known.model import Known
from generators.fit import fit, fit_config

__all__ = ["Generator", "DeepWeightFlow", "Known", "fit", "fit_config", "load", "snapshots", "diagnose"]
