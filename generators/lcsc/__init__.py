"""LCSC: linear combinations of saved checkpoints found by evolutionary search (``search.py``), over a zoo's
models (``zoo.py``) or over a fitted generator's training snapshots (``snapshots.py``)."""

from generators.lcsc.search import GENERATOR_SEARCH, SearchConfig
from generators.lcsc.snapshots import GeneratorLCSC, lcsc_generator
from generators.lcsc.zoo import LCSCResult, lcsc_zoo, write_lcsc_zoo

__all__ = [
    "SearchConfig",
    "GENERATOR_SEARCH",
    "lcsc_zoo",
    "write_lcsc_zoo",
    "LCSCResult",
    "lcsc_generator",
    "GeneratorLCSC",
]
