"""KNOWN (``generator=known``): a per-parameter nowcaster of weights past the full-data training (``model.py``),
meta-trained on a trajectory zoo by its own fit (``fit.py``), applied to a zoo by ``nowcast.py``.

KNOWN predicts, it does not sample: it is registered (``generators.load`` rebuilds it) with its own ``fit``
but is not a ``Generator``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from generators.known.config import KnownConfig
from generators.known.model import Known
from generators.registry import register
from zoo.lazy import lazy_exports

if TYPE_CHECKING:
    from generators.known.fit import fit_run
    from generators.known.nowcast import nowcast_zoo

__all__ = ["Known", "fit_run", "nowcast_zoo"]
# the meta-training and the nowcasting read zoos (pandas, Lightning): imported when first used, not on load
__getattr__, __dir__ = lazy_exports(
    __name__, {"fit_run": "generators.known.fit", "nowcast_zoo": "generators.known.nowcast"}, ("fit", "nowcast")
)


def _fit(cfg: Mapping) -> Any:
    """KNOWN's own fitting (``generators.known.fit``), imported when a fit starts: loading KNOWN needs none of it."""
    from generators.known.fit import fit_run

    return fit_run(cfg)


register(Known, fit=_fit, schema=KnownConfig)
