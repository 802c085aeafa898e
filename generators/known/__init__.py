"""KNOWN (``generator=known``): a per-parameter nowcaster of weights past the full-data training (``model.py``),
meta-trained on a trajectory zoo by its own fit (``fit.py``), applied to a zoo by ``nowcast.py``.

KNOWN predicts, it does not sample: it is registered (``generators.load`` rebuilds it) with its own ``fit``
but is not a ``Generator``."""

from generators.known.config import CHECKS
from generators.known.fit import fit_run
from generators.known.model import Known
from generators.known.nowcast import nowcast_zoo
from generators.registry import register

__all__ = ["Known", "fit_run", "nowcast_zoo"]

register(Known, fit=fit_run, checks=CHECKS)
