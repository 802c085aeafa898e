"""The neuron graph a traced forward pass reveals: node sets of units, the weights between them, skips.

Recorded by ``permutation_spec`` in the same trace that assigns permutation groups, so a weight-space
model that reads this graph and Re-Basin agree on which axes permute together by construction. A *node
set* is the units one layer produces (or the network's input features/channels); a *neuron layer* is a
Linear/Conv weight ``[out, in, *kernel]`` mapping one node set to the next, with its bias; a *norm* is a
BatchNorm acting on a node set; a *skip* is a residual ``+`` joining one node set into another unit by
unit. Every hidden node set carries its permutation group (None where the units are fixed).
Transformers add two records: an *attention* (``scaled_dot_product_attention`` over the units of a query, a key
and a value node set, each cut into ``heads`` equal blocks: query unit i meets key unit i, and head h's query/key
units weight head h's value units), and an *added* tensor (a learned tensor such as a position embedding added
to a node set, read per unit along its ``axis``).
"""

from __future__ import annotations

from dataclasses import dataclass

BN_FIELDS = ("weight", "bias", "running_mean", "running_var")  # BatchNorm tensors that move with their channel


@dataclass(frozen=True)
class NodeSet:
    """Units produced by one traced layer (``name`` is its module path) or the network input.

    ``role`` is input | hidden | output (output = the units the network returns); ``group`` names the
    permutation group of the units, None where they are never permuted.
    """

    name: str
    size: int
    role: str
    group: str | None


@dataclass(frozen=True)
class NeuronLayer:
    """State-dict tensor ``weight`` ``[out, in, *kernel]`` mapping node set ``src`` to ``dst``, and its bias."""

    weight: str
    bias: str | None
    src: int
    dst: int
    kernel: tuple[int, ...]


@dataclass(frozen=True)
class Norm:
    """A BatchNorm on node set ``nodeset``: ``tensors`` pairs a field of BN_FIELDS with its state-dict name."""

    nodeset: int
    tensors: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Attention:
    """``scaled_dot_product_attention`` of node sets ``q``, ``k`` (one permutation group) and ``v``, each split into
    ``heads`` consecutive blocks of units (head-major, as ``unflatten`` cuts them)."""

    q: int
    k: int
    v: int
    heads: int


@dataclass(frozen=True)
class Added:
    """State-dict tensor ``name`` added to the units of node set ``nodeset``; ``axis`` is its unit axis (the
    other axes, e.g. the tokens of a position embedding, are a vector per unit)."""

    nodeset: int
    name: str
    axis: int


@dataclass(frozen=True)
class NeuronGraph:
    """Node sets (in forward order, input first), neuron layers, norms and residual skips ``(from, to)``; for
    transformers also the attention calls and the learned tensors added to node sets."""

    nodesets: tuple[NodeSet, ...]
    layers: tuple[NeuronLayer, ...]
    norms: tuple[Norm, ...]
    skips: tuple[tuple[int, int], ...]
    attentions: tuple[Attention, ...] = ()
    added: tuple[Added, ...] = ()

    def groups(self) -> dict[str, list[tuple[str, int]]]:
        """group -> [(tensor name, axis)]: every axis the graph says a group permutes (kernel axes never)."""
        out: dict[str, list[tuple[str, int]]] = {}

        def add(nodeset: int, name: str, axis: int) -> None:
            g = self.nodesets[nodeset].group
            if g is not None:
                out.setdefault(g, []).append((name, axis))

        for layer in self.layers:
            add(layer.dst, layer.weight, 0)
            if layer.bias is not None:
                add(layer.dst, layer.bias, 0)
            add(layer.src, layer.weight, 1)
        for norm in self.norms:
            for _, name in norm.tensors:
                add(norm.nodeset, name, 0)
        for a in self.added:
            add(a.nodeset, a.name, a.axis)
        return out

    def index(self, role: str) -> list[int]:
        """Indices of the node sets with ``role`` (input | hidden | output), in forward order."""
        return [i for i, ns in enumerate(self.nodesets) if ns.role == role]
