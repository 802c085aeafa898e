"""The typed configs of ``conf/encoder/<name>.yaml`` (``zoo.app.schema``): each key's type, default, rule and doc,
checked by ``zoo train`` before a run folder is touched and listed by ``zoo train --help``. Each encoder class
names its schema (``CONFIG``); this module imports no torch, so --help and the checks stay cheap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zoo.app.checks import Rule, number, one_of, optional
from zoo.app.schema import Schema, key
from zoo.errors import ZooError

SIZE = number(int, 1)
DROPOUT = number(float, 0, 1, high_open=True)


def sizes(v: Any) -> str | None:
    """A rule: a list of layer widths (integers >= 1; empty: no hidden layer)."""
    ok = isinstance(v, (list, tuple)) and all(SIZE(x) is None for x in v)
    return None if ok else "a list of integers >= 1, e.g. [256,128]"


def names(*choices: str) -> Rule:
    """A rule: a non-empty list of some of ``choices`` (a lone name is refused: it is not a list)."""

    def rule(v: Any) -> str | None:
        ok = isinstance(v, (list, tuple)) and len(v) > 0 and all(x in choices for x in v)
        return None if ok else f"a non-empty list of {', '.join(choices)}"

    return rule


@dataclass(frozen=True)
class MlpConfig(Schema, group="encoder", name="mlp"):
    """conf/encoder/mlp.yaml: flat MLP over the whole (padded, normalized) weight vector."""

    WHERE = "encoder."

    name: str = key("mlp", one_of("mlp"), "the encoder (encoder=NAME chooses the config)")
    hidden: list[int] = key([256, 128], sizes, "hidden layer widths")
    dropout: float = key(0.1, DROPOUT, "dropout between hidden layers")


@dataclass(frozen=True)
class StatNNConfig(Schema, group="encoder", name="statnn"):
    """conf/encoder/statnn.yaml: per-tensor statistics, then an MLP."""

    WHERE = "encoder."

    name: str = key("statnn", one_of("statnn"), "the encoder (encoder=NAME chooses the config)")
    hidden: list[int] = key([256, 256], sizes, "hidden layer widths of the MLP over the statistics")
    dropout: float = key(0.1, DROPOUT, "dropout between hidden layers")


@dataclass(frozen=True)
class GraphConfig(Schema, group="encoder", name="graph"):
    """conf/encoder/graph.yaml: neural-graph metanetwork (PNA message passing with edge updates)."""

    WHERE = "encoder."

    name: str = key("graph", one_of("graph"), "the encoder (encoder=NAME chooses the config)")
    hidden: int = key(16, SIZE, "node and edge feature width")
    layers: int = key(2, SIZE, "edge/node update layers")
    dropout: float = key(0.0, DROPOUT, "dropout in the node and edge MLPs")
    aggregators: list[str] = key(
        ["mean", "max"], names("mean", "min", "max", "std", "sum"), "any of mean, min, max, std, sum (PyG aggregations)"
    )
    scalers: list[str] = key(
        ["identity", "amplification"],
        names("identity", "amplification", "attenuation", "linear", "inverse_linear"),
        "any of identity, amplification, attenuation, linear, inverse_linear",
    )
    input_nodes: int | None = key(
        64,
        optional(SIZE),
        "at most this many input nodes: consecutive inputs share a node and its edges carry their weights as a "
        "vector (784 MNIST pixels: 13 per node, 61 nodes, 12x fewer edges); null = one node per input (the paper's "
        "graph)",
    )
    attention: bool = key(
        True,
        one_of(True, False),
        "transformers: one node per attention head and query-key, query/key-head and head-value edges (the"
        " neural-graph construction of attention); false: q/k/v/o as plain layers",
    )
    stats: bool = key(
        False,
        one_of(True, False),
        "append StatNN's per-tensor statistics to the pooled features before the head (the NFN code's"
        " append_stats; invariant too)",
    )


@dataclass(frozen=True)
class TransformerConfig(Schema, group="encoder", name="transformer"):
    """conf/encoder/transformer.yaml: one token per neuron, [CLS] readout."""

    WHERE = "encoder."

    name: str = key("transformer", one_of("transformer"), "the encoder (encoder=NAME chooses the config)")
    d_model: int = key(64, SIZE, "token width (a multiple of heads)")
    layers: int = key(2, SIZE, "transformer layers")
    heads: int = key(4, SIZE, "attention heads")
    dropout: float = key(0.0, DROPOUT, "dropout in the transformer layers")

    def relations(self) -> None:
        if self.d_model % self.heads:
            raise ZooError(
                f"encoder transformer: d_model={self.d_model} must be divisible by heads={self.heads} (each head "
                "gets d_model / heads)"
            )


@dataclass(frozen=True)
class NFNConfig(Schema, group="encoder", name="nfn"):
    """conf/encoder/nfn.yaml: neural functional (NP layers, HNP pooling, MLP head)."""

    WHERE = "encoder."

    name: str = key("nfn", one_of("nfn"), "the encoder (encoder=NAME chooses the config)")
    hidden: int = key(16, SIZE, "channels of every NP layer (32 and 3 layers cost 3.5x the time per model on our CPU)")
    layers: int = key(2, SIZE, "NP layers")
    head: int = key(256, SIZE, "width of the MLP head after pooling")
    dropout: float = key(0.1, DROPOUT, "dropout in the head")
    stats: bool = key(
        False,
        one_of(True, False),
        "append StatNN's per-tensor statistics to the pooled features before the head (the NFN code's"
        " append_stats; invariant too)",
    )


SCHEMAS: dict[str, type[Schema]] = {
    "mlp": MlpConfig,
    "statnn": StatNNConfig,
    "graph": GraphConfig,
    "transformer": TransformerConfig,
    "nfn": NFNConfig,
}
