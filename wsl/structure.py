"""The neuron graph of a zoo architecture, derived from the module its spec builds (never hand-written).

A network is a chain of *node sets* (input features/channels, hidden units/channels, outputs) joined by
*neuron layers* (a Linear or Conv2d whose weight maps one node set to the next, with its bias and the
BatchNorm that follows it) and, in residual nets, *skips* (identity edges between two node sets of the
same residual stream). Hidden node sets carry a permutation *group*: permuting the units of a group
consistently in every tensor that touches it leaves the network's function unchanged. A residual stream
is one group shared by the stem, every block output and the classifier input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from torch import nn

from zoo.errors import ZooError

BN_FIELDS = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class NodeSet:
    """Units of one layer: ``role`` is input | hidden | output; ``group`` names its permutation group."""

    name: str
    size: int
    role: str
    group: str | None


@dataclass(frozen=True)
class NeuronLayer:
    """A weight ``[out, in, *kernel]`` from node set ``src`` to ``dst``, its bias and BatchNorm tensors."""

    weight: str
    bias: str | None
    norm: tuple[tuple[str, str], ...]  # (field in BN_FIELDS, tensor name)
    src: int
    dst: int
    kernel: tuple[int, ...]


@dataclass(frozen=True)
class Structure:
    """Node sets, neuron layers and identity skips of one architecture."""

    nodesets: tuple[NodeSet, ...]
    layers: tuple[NeuronLayer, ...]
    skips: tuple[tuple[int, int], ...]

    def groups(self) -> dict[str, list[tuple[str, int]]]:
        """Permutation spec: group -> [(tensor name, axis)] of every tensor axis the group permutes."""
        out: dict[str, list[tuple[str, int]]] = {}
        for layer in self.layers:
            g_out = self.nodesets[layer.dst].group
            if g_out is not None:
                axes = out.setdefault(g_out, [])
                axes.append((layer.weight, 0))
                if layer.bias:
                    axes.append((layer.bias, 0))
                axes += [(t, 0) for _, t in layer.norm]
            g_in = self.nodesets[layer.src].group
            if g_in is not None:
                out.setdefault(g_in, []).append((layer.weight, 1))
        return out

    def group_sizes(self) -> dict[str, int]:
        return {ns.group: ns.size for ns in self.nodesets if ns.group is not None}

    def signature(self) -> tuple:
        """Topology without sizes: two layouts with equal signatures differ only in widths."""
        return (tuple((n.name, n.role, n.group) for n in self.nodesets),
                tuple((l.weight, l.bias, l.norm, l.src, l.dst) for l in self.layers), self.skips)


class _Builder:
    def __init__(self) -> None:
        self.nodesets: list[NodeSet] = []
        self.layers: list[NeuronLayer] = []
        self.skips: list[tuple[int, int]] = []

    def nodeset(self, name: str, size: int, role: str, group: str | None) -> int:
        self.nodesets.append(NodeSet(name, int(size), role, group))
        return len(self.nodesets) - 1

    def layer(self, prefix: str, mod: nn.Module, src: int, dst: int) -> None:
        size_in = mod.in_features if isinstance(mod, nn.Linear) else mod.in_channels
        if size_in != self.nodesets[src].size:
            raise ZooError(f"layer {prefix!r} expects {size_in} inputs but follows a layer of "
                           f"{self.nodesets[src].size} units; cannot derive its neuron graph")
        kernel = tuple(mod.kernel_size) if isinstance(mod, nn.Conv2d) else ()
        bias = f"{prefix}.bias" if getattr(mod, "bias", None) is not None else None
        self.layers.append(NeuronLayer(f"{prefix}.weight", bias, (), src, dst, kernel))

    def norm(self, prefix: str, mod: nn.Module) -> None:
        last = self.layers[-1]
        if mod.num_features != self.nodesets[last.dst].size:
            raise ZooError(f"BatchNorm {prefix!r} does not match the preceding layer")
        norm = tuple((f, f"{prefix}.{f}") for f in BN_FIELDS if getattr(mod, f, None) is not None)
        self.layers[-1] = NeuronLayer(last.weight, last.bias, norm, last.src, last.dst, last.kernel)

    def build(self) -> Structure:
        return Structure(tuple(self.nodesets), tuple(self.layers), tuple(self.skips))


def _out_size(mod: nn.Module) -> int:
    return mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels


def _chain(module: nn.Module) -> Structure:
    """Feed-forward chain (MLP, CNN): every Linear/Conv2d starts a node set, BatchNorm joins the last one."""
    weighted = [(n, m) for n, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.BatchNorm2d,
                                                                             nn.BatchNorm1d))]
    b = _Builder()
    linear = [(n, m) for n, m in weighted if not isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not linear or isinstance(weighted[0][1], nn.modules.batchnorm._BatchNorm):
        raise ZooError("architecture has no leading Linear/Conv2d layer; cannot derive its neuron graph")
    first = linear[0][1]
    cur = b.nodeset("input", first.in_features if isinstance(first, nn.Linear) else first.in_channels, "input", None)
    n_hidden = 0
    for name, mod in weighted:
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            b.norm(name, mod)
            continue
        last = mod is linear[-1][1]
        if last:
            dst = b.nodeset("output", _out_size(mod), "output", None)
        else:
            n_hidden += 1
            dst = b.nodeset(f"h{n_hidden}", _out_size(mod), "hidden", f"h{n_hidden}")
        b.layer(name, mod, cur, dst)
        cur = dst
    return b.build()


def _resnet(module: nn.Module) -> Structure:
    """Stem, basic blocks and head; the residual stream is one permutation group ``res``."""
    b = _Builder()
    stem_conv, stem_bn = module.stem[0], module.stem[1]
    src = b.nodeset("input", stem_conv.in_channels, "input", None)
    cur = b.nodeset("stem", stem_conv.out_channels, "hidden", "res")
    b.layer("stem.0", stem_conv, src, cur)
    b.norm("stem.1", stem_bn)
    for i, block in enumerate(module.blocks):
        mid = b.nodeset(f"blocks.{i}.mid", block.conv1.out_channels, "hidden", f"blocks.{i}")
        b.layer(f"blocks.{i}.conv1", block.conv1, cur, mid)
        b.norm(f"blocks.{i}.bn1", block.bn1)
        out = b.nodeset(f"blocks.{i}.out", block.conv2.out_channels, "hidden", "res")
        b.layer(f"blocks.{i}.conv2", block.conv2, mid, out)
        b.norm(f"blocks.{i}.bn2", block.bn2)
        b.skips.append((cur, out))
        cur = out
    dst = b.nodeset("output", module.head.out_features, "output", None)
    b.layer("head", module.head, cur, dst)
    return b.build()


def structure_of(arch: Mapping) -> Structure:
    """Neuron graph of the module an architecture spec builds (mlp, cnn, resnet)."""
    from zoo.arch import ResNet, build_model

    if not arch:
        raise ZooError("layout has no architecture spec; cannot derive its neuron graph")
    module = build_model(arch)
    return _resnet(module) if isinstance(module, ResNet) else _chain(module)
