"""Weight encoders behind one interface: ``build_encoder(name, space, out_dim, **hparams)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wsl.encoders.base import WeightEncoder
from wsl.encoders.flat import FlatMLP
from wsl.encoders.graph import GraphEncoder
from wsl.encoders.nfn import NFNEncoder
from wsl.encoders.statnn import StatNN
from wsl.encoders.transformer import NeuronTransformer
from wsl.space import WeightSpace
from zoo.app.schema import validate
from zoo.errors import ZooError

ENCODERS: dict[str, type[WeightEncoder]] = {
    "mlp": FlatMLP,
    "statnn": StatNN,
    "graph": GraphEncoder,
    "transformer": NeuronTransformer,
    "nfn": NFNEncoder,
}


def check_encoder_config(cfg: Mapping[str, Any]) -> None:
    """A composed ``encoder`` config: its name and every key by the encoder's typed config (``CONFIG``, a field per
    key of conf/encoder/<name>.yaml); a one-line ZooError naming the key, before anything is written."""
    name = cfg.get("name")
    if name not in ENCODERS:
        raise ZooError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}")
    validate(ENCODERS[name].CONFIG, cfg)


def build_encoder(name: str, space: WeightSpace, out_dim: int, **hparams) -> WeightEncoder:
    """Instantiate encoder ``name``; ZooError for unknown names or hyperparameters."""
    if name not in ENCODERS:
        raise ZooError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}")
    try:
        return ENCODERS[name](space, out_dim, **hparams)
    except TypeError as e:
        raise ZooError(f"encoder {name!r}: {e}") from None


__all__ = [
    "ENCODERS",
    "WeightEncoder",
    "build_encoder",
    "check_encoder_config",
    "FlatMLP",
    "StatNN",
    "GraphEncoder",
    "NeuronTransformer",
    "NFNEncoder",
]
