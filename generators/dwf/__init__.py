"""DeepWeightFlow (``generator=dwf``): flow matching on canonical weights (``model.py``; the flow in ``flow.py``)."""

from generators.dwf.config import DwfConfig
from generators.dwf.model import DeepWeightFlow
from generators.registry import register

__all__ = ["DeepWeightFlow"]

register(DeepWeightFlow, schema=DwfConfig)
