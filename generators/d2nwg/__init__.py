"""D2NWG (``generator=d2nwg``): dataset-conditioned latent diffusion over weights (``model.py``; the weight VAE,
the denoiser and the dataset encoder beside it)."""

from generators.d2nwg.config import D2nwgConfig
from generators.d2nwg.model import D2NWG, DatasetCondition
from generators.registry import register

__all__ = ["D2NWG", "DatasetCondition"]

register(D2NWG, schema=D2nwgConfig)
