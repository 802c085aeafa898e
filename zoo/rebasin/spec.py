"""Permutation specs derived from a module's traced graph: which tensor axes share one hidden-unit permutation.

The forward pass is traced with ``torch.fx``; every tensor flowing through the graph carries the
permutation group of its channel axis. Linear/Conv layers read their input group on the weight's
``in`` axis and start a new group on the ``out`` axis; BatchNorm, activations and pooling keep the
group; a residual ``+`` merges the groups of its operands (union-find), so a residual stream shares
one permutation from the first layer through every block to the classifier input. The network's input
and output are fixed, so the first layer's input axis and the last layer's output axis are never permuted.
The pass also finds the groups with a SIGN symmetry: units whose only nonlinearity is an odd one (``zoo.arch.Sine``:
sin(-x) = -sin(x)) keep the network's function when their incoming weights, bias and outgoing weights all flip
sign (``PermutationSpec.signs``; zoo.rebasin.signs applies, draws and canonicalizes them). tanh is odd too but is
left out, so the aligned weights of existing tanh zoos keep their bits; a unit fed to BatchNorm, a residual sum,
a flatten, or any other nonlinearity has no sign symmetry here.
The pass also finds, for ``zoo.rebasin.symmetries``, the groups with the sign symmetry under any odd activation
(sine or tanh: ``PermutationSpec.odd``) and the groups with a POSITIVE SCALING symmetry (``PermutationSpec.scales``):
units read only by positively homogeneous operations (ReLU, LeakyReLU, identity/dropout, pooling, flatten, the
next Linear/Conv), so relu(c z) = c relu(z) for c > 0 moves a factor from the incoming weights and bias to the
outgoing weights. A unit normalized by a BatchNorm right after its layer has it at the BatchNorm's affine
parameters (weight and bias scaled, running statistics untouched); the layer's own rows before that BatchNorm
are scale-invariant only up to BatchNorm's eps and are left alone. Residual sums and every other operation end it.
Transformers: every value also carries WHICH axis is its channel axis (Linear reads and writes the last axis,
Conv axis 1; transpose, flatten, unflatten and means over other axes move it), LayerNorm's parameters follow the
group of the axis it normalizes, and a learned tensor added to a permuted value (a position embedding) takes the
group on the axis it broadcasts onto. ``unflatten`` of a channel axis into (heads, dims) splits its group into
blocks; ``scaled_dot_product_attention(q, k, v)`` joins q's and k's groups (one permutation of query/key dims)
and TIES them to v's group (value/output dims): their permutations must permute the heads as wholes, one head
permutation for both, and may permute dims within each head (``PermutationSpec.heads``; zoo.rebasin.apply
draws such permutations and zoo.rebasin.matching solves them jointly, heads over within-head assignments).
The same pass records the neuron graph (``graph.NeuronGraph``: which tensor maps which node set to which,
BatchNorms, residual skips) that weight-space models read, so both share one source of truth.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from zoo.arch import Sine
from zoo.errors import ZooError
from zoo.rebasin.graph import BN_FIELDS, Added, Attention, NeuronGraph, NeuronLayer, NodeSet, Norm

FIXED = 0  # group id of axes that are never permuted (network input and output)

_ELEMENTWISE = (
    nn.ReLU,
    nn.Tanh,
    nn.GELU,
    nn.Sigmoid,
    nn.SiLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.Softplus,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Hardtanh,
    nn.Mish,
    nn.Softsign,
    nn.ReLU6,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.CELU,
    nn.SELU,
    Sine,
)
_ODD = (Sine,)  # activations whose units have the sign symmetry (module docstring)
_ODD_ALL = (Sine, nn.Tanh)  # every odd activation: PermutationSpec.odd
_HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Flatten)  # + pools
_HOMOGENEOUS_FUNCS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.dropout, torch.flatten}
_HOMOGENEOUS_FUNCS |= {
    torch.nn.functional.adaptive_avg_pool2d,
    torch.nn.functional.adaptive_max_pool2d,
    torch.nn.functional.avg_pool2d,
    torch.nn.functional.max_pool2d,
    torch.reshape,
    torch.mean,
    torch.squeeze,
}
_HOMOGENEOUS_METHODS = {"relu", "relu_", "contiguous", "clone", "flatten", "view", "reshape", "mean", "squeeze"}
_SIGN_NEUTRAL = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)  # linear: keep a sign symmetry
_POOLS = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_SDPA = torch.nn.functional.scaled_dot_product_attention
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_ELEMENTWISE_FUNCS = {
    torch.relu,
    torch.tanh,
    torch.sigmoid,
    torch.nn.functional.relu,
    torch.nn.functional.gelu,
    torch.nn.functional.silu,
    torch.nn.functional.tanh,
    torch.nn.functional.sigmoid,
}
_ELEMENTWISE_FUNCS |= {
    torch.nn.functional.adaptive_avg_pool2d,
    torch.nn.functional.adaptive_max_pool2d,
    torch.nn.functional.avg_pool2d,
    torch.nn.functional.max_pool2d,
    torch.nn.functional.dropout,
    torch.nn.functional.leaky_relu,
    torch.nn.functional.elu,
    torch.nn.functional.softplus,
}
_ELEMENTWISE_METHODS = {"relu", "tanh", "sigmoid", "contiguous", "clone", "relu_"}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_SHAPE_QUERIES = {"size", "dim", getattr, len}


@dataclass(frozen=True)
class PermutationSpec:
    """Groups of hidden units and, for every state-dict tensor, the group of each axis (None = not permuted).

    ``sizes``: group name -> number of units. ``axes``: tensor name -> per-axis group names.
    ``matched``: names of trainable parameters (the weight-matching objective; buffers are only permuted).
    ``graph``: the neuron graph traced with it (None for a spec built by hand).
    """

    sizes: dict[str, int]
    axes: dict[str, tuple[str | None, ...]]
    matched: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    graph: NeuronGraph | None = None
    signs: tuple[str, ...] = ()  # groups whose units may flip sign (odd activations only; module docstring)
    odd: tuple[str, ...] = ()  # groups with the sign symmetry under any odd activation (sine, tanh)
    scales: tuple[str, ...] = ()  # groups with the positive scaling symmetry (ReLU-like readers; module docstring)
    # group -> (tie, number of heads): the group's units are ``heads`` blocks (attention heads); every group
    # of one tie permutes its blocks by one shared head permutation, and units within each block freely
    heads: dict[str, tuple[str, int]] = field(default_factory=dict)

    def ties(self) -> dict[str, list[str]]:
        """Tie name -> its groups (in group order): the groups whose head permutation is one."""
        out: dict[str, list[str]] = {}
        for g in self.groups:
            if g in self.heads:
                out.setdefault(self.heads[g][0], []).append(g)
        return out

    @property
    def groups(self) -> list[str]:
        return list(self.sizes)

    def touches(self, group: str) -> list[tuple[str, int]]:
        """(tensor name, axis) pairs permuted by ``group``, matched parameters first."""
        out = [(n, a) for n, ax in self.axes.items() for a, g in enumerate(ax) if g == group]
        return sorted(out, key=lambda x: x[0] not in self.matched)

    def self_coupled(self, group: str) -> bool:
        """True when a tensor has two axes in ``group`` (e.g. a width-preserving layer inside a residual stream)."""
        return any(sum(g == group for g in ax) > 1 for ax in self.axes.values())

    def check_state(self, state: Mapping[str, torch.Tensor], batched: bool = False, what: str = "state dict") -> None:
        """Raise ZooError unless ``state`` has exactly this spec's tensors and shapes (a leading batch axis if
        batched)."""
        missing = sorted(set(self.axes) - set(state))
        extra = sorted(set(state) - set(self.axes))
        if missing or extra:
            raise ZooError(
                f"{what} does not match the permutation spec (mismatched layouts): "
                f"missing {missing[:5]}, unexpected {extra[:5]}"
            )
        for name, shape in self.shapes.items():
            got = tuple(state[name].shape[1:] if batched else state[name].shape)
            if got != shape:
                raise ZooError(
                    f"{what}: tensor {name!r} has shape {got}, the spec expects {shape} (mismatched layouts)"
                )


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = [FIXED]
        self.owner: list[str] = ["fixed"]
        self.size: list[int] = [0]

    def new(self, owner: str, size: int) -> int:
        self.parent.append(len(self.parent))
        self.owner.append(owner)
        self.size.append(size)
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int, where: str) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        if a != FIXED and b != FIXED and self.size[a] != self.size[b]:
            raise ZooError(f"{where}: adds tensors of {self.size[a]} and {self.size[b]} channels")
        lo, hi = min(a, b), max(a, b)  # FIXED (0) absorbs; otherwise the earliest producer names the group
        self.parent[hi] = lo
        return lo


class _GraphRecorder:
    """Follows which node set each traced value's channel axis holds, and records the neuron graph."""

    def __init__(self) -> None:
        self.of: dict[str, int] = {}  # fx node name -> node set index
        self.sets: list[list] = []  # [name, size, group id] per node set (size -1 until a layer reads it)
        self.inputs: set[int] = set()
        self.outputs: set[int] = set()
        self.layers: list[NeuronLayer] = []
        self.norms: list[Norm] = []
        self.skips: list[tuple[int, int]] = []
        self.attentions: list[Attention] = []
        self.added: list[Added] = []
        self.calls: dict[str, int] = {}

    def input(self, node: str) -> None:
        """A network input: a node set whose size the first layer reading it tells."""
        self.sets.append(["input" if not self.inputs else node, -1, FIXED])
        self.of[node] = len(self.sets) - 1
        self.inputs.add(len(self.sets) - 1)

    def keep(self, node: str, src: str) -> None:
        """An operation that keeps the channels (activation, pooling, flatten): same node set."""
        self.of[node] = self.of[src]

    def layer(self, node: str, src: str, path: str, m: nn.Module, group: int) -> None:
        """A Linear/Conv call: its weight maps the input's node set to a new one of ``group``."""
        s = self.of[src]
        if self.sets[s][1] < 0:
            self.sets[s][1] = int(m.weight.shape[1])
        k = self.calls[path] = self.calls.get(path, 0) + 1
        self.of[node] = len(self.sets)
        self.sets.append([path if k == 1 else f"{path}#{k}", int(m.weight.shape[0]), group])
        bias = f"{path}.bias" if m.bias is not None else None
        self.layers.append(NeuronLayer(f"{path}.weight", bias, s, self.of[node], tuple(m.weight.shape[2:])))

    def norm(self, node: str, src: str, path: str, m: nn.Module) -> None:
        """A BatchNorm call: its tensors act on the input's node set."""
        self.of[node] = self.of[src]
        fields = tuple((f, f"{path}.{f}") for f in BN_FIELDS if getattr(m, f, None) is not None)
        if fields:
            self.norms.append(Norm(self.of[src], fields))

    def add(self, node: str, operands: list[str]) -> None:
        """A residual ``+``: the sum lives in the latest operand's node set; the others join it by skips."""
        sets = list(dict.fromkeys(self.of[o] for o in operands))
        dst = max(sets)
        self.of[node] = dst
        self.skips += [(s, dst) for s in sets if s != dst]

    def attention(self, node: str, q: str, k: str, v: str, heads: int) -> None:
        """scaled_dot_product_attention: the output lives in v's node set; q, k, v and the head count recorded."""
        self.of[node] = self.of[v]
        self.attentions.append(Attention(self.of[q], self.of[k], self.of[v], int(heads)))

    def add_tensor(self, node: str, name: str, axis: int) -> None:
        """A learned tensor added to the value ``node`` (after :meth:`add` placed it): read per unit along ``axis``."""
        self.added.append(Added(self.of[node], name, int(axis)))

    def build(self, group_name: Callable[[int], str | None]) -> NeuronGraph:
        """The graph, with group ids resolved to names by ``group_name`` (None = fixed units)."""
        for name, size, _ in self.sets:
            if size < 0:
                raise ZooError(f"no Linear/Conv layer reads {name!r}; cannot derive its neuron graph")
        for a, b in self.skips:
            if self.sets[a][1] != self.sets[b][1]:
                raise ZooError(f"a residual joins {self.sets[a][0]!r} and {self.sets[b][0]!r} of different sizes")
        roles = [
            "input" if i in self.inputs else "output" if i in self.outputs else "hidden" for i in range(len(self.sets))
        ]
        nodesets = tuple(NodeSet(name, size, role, group_name(g)) for (name, size, g), role in zip(self.sets, roles))
        layers, norms, skips = tuple(self.layers), tuple(self.norms), tuple(self.skips)
        return NeuronGraph(nodesets, layers, norms, skips, tuple(self.attentions), tuple(self.added))


def _example_input(module: nn.Module) -> torch.Tensor:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            return torch.zeros(2, m.in_features)
        if isinstance(m, _CONVS):
            spatial = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(m)]
            return torch.zeros(2, m.in_channels, *([16] * spatial))
    raise ZooError(
        f"cannot infer an input for {type(module).__name__}: it has no Linear or Conv layer; pass example_input"
    )


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer with zoo.arch's own activation modules kept as leaves (their rules are above)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, Sine) or super().is_leaf_module(m, module_qualified_name)


def permutation_spec(module: nn.Module, example_input: torch.Tensor | None = None) -> PermutationSpec:
    """Derive the permutation spec of ``module`` from its traced forward pass.

    ``example_input`` (a small batch) is only used for shapes; by default one is inferred from the first layer.
    Raises ZooError naming any layer or operation whose permutation behaviour is unknown.
    """
    model = copy.deepcopy(module).eval()
    try:
        gm = torch.fx.GraphModule(model, _Tracer().trace(model))
    except Exception as e:  # tracing failures are arbitrary Python errors from user forward code
        raise ZooError(f"cannot trace {type(module).__name__} to derive its permutation spec: {e}") from e
    x = _example_input(model) if example_input is None else example_input
    with torch.no_grad():
        try:
            ShapeProp(gm).propagate(x)
        except Exception as e:
            raise ZooError(f"cannot run {type(module).__name__} on an input of shape {tuple(x.shape)}: {e}") from e

    uf = _UnionFind()
    val: dict[str, int] = {}  # fx node name -> group of its channel axis
    cax: dict[str, int | None] = {}  # fx node name -> index of its channel axis (None: unknown, fixed values)
    split: dict[str, tuple[int, int, int]] = {}  # fx node name -> (head axis, dim axis, heads) of a split channel
    blocks: dict[int, int] = {}  # group -> number of heads it is split into
    ties: list[tuple[int, int]] = []  # (query/key group, value group) of each attention call
    free: dict[str, str] = {}  # get_attr node -> the state-dict tensor it reads (its axes set where it is used)
    axes: dict[str, list[int | None]] = {}
    out_group: dict[str, int] = {}  # module target -> group of its output (shared when a module is reused)
    rec = _GraphRecorder()
    odd: set[int] = set()  # groups an odd activation reads
    not_odd: set[int] = set()  # groups something without the sign symmetry reads
    odd_all: set[int] = set()  # groups an odd activation (sine or tanh) reads
    not_odd_all: set[int] = set()
    not_homog: set[int] = set()  # groups something not positively homogeneous reads
    layer_out: set[str] = set()  # fx nodes that are a Linear/Conv output

    def shape(node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()

    def assign(name: str, axis: int, g: int, ndim: int, where: str) -> None:
        ax = axes.setdefault(name, [None] * ndim)
        if ax[axis] is None:
            ax[axis] = g
        else:
            ax[axis] = uf.union(ax[axis], g, where)

    def put(node: str, g: int, c: int | None, sp: tuple[int, int, int] | None = None) -> None:
        val[node], cax[node] = g, (None if uf.find(g) == FIXED else c)
        if sp is not None:
            split[node] = sp

    def last_axis(src, where: str) -> None:
        """A permuted input read on its last axis (Linear, LayerNorm) must have its channels there."""
        if uf.find(val[src.name]) != FIXED and (src.name in split or cax[src.name] != len(shape(src)) - 1):
            raise ZooError(
                f"unsupported layer {where!r}: reads the last axis of a tensor of shape {shape(src)} whose "
                f"channels are on axis {cax[src.name]}"
            )

    def axis(a: int, nd: int) -> int:
        return a + nd if a < 0 else a

    def flatten(node, src, start: int, end: int = -1) -> None:
        g, s = uf.find(val[src.name]), shape(src)
        if g == FIXED:
            return put(node.name, FIXED, None)
        start, end = axis(start, len(s)), axis(end, len(s))
        c = cax[src.name]
        if src.name in split:
            h_ax, d_ax, _ = split[src.name]
            if (h_ax, d_ax) == (start, end) and end == start + 1:  # heads merged back into one channel axis
                return put(node.name, g, start)
        elif c is not None and c < start:
            return put(node.name, g, c)
        elif c is not None and c > end:
            return put(node.name, g, c - (end - start))
        elif c is not None and all(d == 1 for i, d in enumerate(s[start : end + 1], start) if i != c):
            return put(node.name, g, start)
        raise ZooError(
            f"unsupported operation {node.name!r}: flattening a permuted feature map of shape "
            f"{s} mixes channels with positions"
        )

    def unflatten(node, src, dim: int) -> None:
        g, s, out = uf.find(val[src.name]), shape(src), shape(node)
        if g == FIXED:
            return put(node.name, FIXED, None)
        dim, c, grown = axis(dim, len(s)), cax[src.name], len(out) - len(s)
        if src.name not in split and c == dim and grown == 1:  # a channel axis split into (heads, dims per head)
            heads = int(out[dim])
            if blocks.setdefault(g, heads) != heads:
                raise ZooError(f"unsupported operation {node.name!r}: splits one group into different head counts")
            return put(node.name, g, None, (dim, dim + 1, heads))
        if src.name not in split and c is not None and dim != c:
            return put(node.name, g, c + grown if dim < c else c)
        raise ZooError(f"unsupported operation {node.name!r}: unflattens a permuted tensor of shape {s} into {out}")

    def transpose(node, src, a: int, b: int) -> None:
        g, nd = uf.find(val[src.name]), len(shape(src))
        if g == FIXED:
            return put(node.name, FIXED, None)
        a, b = axis(a, nd), axis(b, nd)

        def swap(i: int) -> int:
            return b if i == a else a if i == b else i

        sp = split.get(src.name)
        c = cax[src.name]
        put(node.name, g, None if c is None else swap(c), None if sp is None else (swap(sp[0]), swap(sp[1]), sp[2]))

    def attention(node, q, k, v) -> None:
        """scaled_dot_product_attention: q and k share one group, tied head-wise to v's; the output is v's."""
        nd = len(shape(q))
        for t in (q, k, v):
            sp = split.get(t.name)
            if uf.find(val[t.name]) == FIXED or sp is None or sp[1] != nd - 1 or sp[0] >= nd - 2:
                raise ZooError(
                    f"unsupported attention {node.name!r}: q, k and v must each be a Linear's output split into "
                    "(heads, dims) with the dims last and the heads before the tokens"
                )
        if not split[q.name][2] == split[k.name][2] == split[v.name][2]:
            raise ZooError(f"unsupported attention {node.name!r}: q, k and v have different head counts")
        g = uf.union(val[q.name], val[k.name], f"attention {node.name!r}")
        ties.append((g, val[v.name]))
        put(node.name, val[v.name], None, split[v.name])

    def reduce(node, src, dims, keepdim: bool) -> None:
        """mean/sum over axes other than the channel axis."""
        g, nd = uf.find(val[src.name]), len(shape(src))
        if g == FIXED:
            return put(node.name, FIXED, None)
        dims = [axis(int(d), nd) for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
        c = cax[src.name]
        if src.name in split or c is None or c in dims:
            raise ZooError(f"unsupported operation {node.name!r}: reduces over the channels of a permuted tensor")
        put(node.name, g, c if keepdim else c - sum(d < c for d in dims))

    def add_free(node, name: str, out: torch.fx.Node) -> int | None:
        """A learned tensor added to a permuted value: its axis under the value's channel axis joins that group
        (returned; None when the value is fixed)."""
        pshape, oshape = tuple(state_shapes[name]), shape(out)
        g, c = uf.find(val[out.name]), cax[out.name]
        pa = None if g == FIXED or c is None else len(pshape) - (len(oshape) - c)
        for a in range(len(pshape)):
            assign(name, a, g if a == pa else FIXED, len(pshape), f"{node.name} ({name})")
        return pa

    state_shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}

    def keeps_channels(node, src) -> int:
        """view/reshape/mean/squeeze: allowed when batch and channel axes survive and only size-1 or
        reduced positions go (e.g. [N, C, 1, 1] -> [N, C], or a spatial mean [N, C, H, W] -> [N, C])."""
        g = uf.find(val[src.name])
        if g == FIXED:
            return FIXED
        s_in, s_out = shape(src), shape(node)
        channels_first = cax[src.name] == 1 and src.name not in split
        if channels_first and len(s_in) >= 2 and len(s_out) >= 2 and s_in[:2] == s_out[:2]:
            if node.target in ("mean", torch.mean) or all(d == 1 for d in s_out[2:]):
                return g
        op = node.target if isinstance(node.target, str) else node.target.__name__
        raise ZooError(
            f"unsupported operation {node.name!r} ({op}): turns a permuted tensor of shape {s_in} into "
            f"{s_out}, mixing channels with positions"
        )

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            put(node.name, FIXED, None)
            rec.input(node.name)
        elif node.op == "output":
            outs = node.args[0] if isinstance(node.args[0], (tuple, list)) else (node.args[0],)
            for o in outs:
                if isinstance(o, torch.fx.Node):
                    uf.union(val[o.name], FIXED, "output")
                    rec.outputs.add(rec.of[o.name])
        elif node.op == "call_module":
            m = gm.get_submodule(node.target)
            src = node.args[0]
            g_in = val[src.name]
            p = node.target
            if isinstance(m, (nn.Linear, *_CONVS)):
                if isinstance(m, nn.Linear):
                    last_axis(src, p)
                elif uf.find(g_in) != FIXED and (src.name in split or cax[src.name] != 1):
                    raise ZooError(f"unsupported layer {p!r}: a convolution over channels not on axis 1")
                if isinstance(m, _CONVS) and m.groups != 1:
                    raise ZooError(f"unsupported layer {p!r}: grouped convolution (groups={m.groups})")
                if p not in out_group:
                    out_group[p] = uf.new(p, m.weight.shape[0])
                g_out = out_group[p]
                nd = m.weight.ndim
                assign(f"{p}.weight", 0, g_out, nd, p)
                assign(f"{p}.weight", 1, g_in, nd, p)
                for a in range(2, nd):
                    assign(f"{p}.weight", a, FIXED, nd, p)
                if m.bias is not None:
                    assign(f"{p}.bias", 0, g_out, 1, p)
                put(node.name, g_out, len(shape(node)) - 1 if isinstance(m, nn.Linear) else 1)
                layer_out.add(node.name)
                rec.layer(node.name, src.name, p, m, g_out)
            elif isinstance(m, _NORMS):
                not_odd.add(g_in)
                not_odd_all.add(g_in)
                if src.name not in layer_out or not m.affine:
                    not_homog.add(g_in)
                for t in BN_FIELDS:
                    if getattr(m, t, None) is not None:
                        assign(f"{p}.{t}", 0, g_in, 1, p)
                if getattr(m, "num_batches_tracked", None) is not None:
                    axes.setdefault(f"{p}.num_batches_tracked", [])
                put(node.name, g_in, cax[src.name], split.get(src.name))
                rec.norm(node.name, src.name, p, m)
            elif isinstance(m, nn.LayerNorm):  # normalizes the last axis: its parameters follow that axis' group
                if len(m.normalized_shape) != 1:
                    raise ZooError(f"unsupported layer {p!r}: LayerNorm over {len(m.normalized_shape)} axes")
                last_axis(src, p)
                not_odd.add(g_in)
                not_odd_all.add(g_in)  # LayerNorm is neither odd per unit nor homogeneous per unit
                not_homog.add(g_in)
                for t in ("weight", "bias"):
                    if getattr(m, t, None) is not None:
                        assign(f"{p}.{t}", 0, g_in, 1, p)
                put(node.name, g_in, cax[src.name])
                rec.norm(node.name, src.name, p, m)
            elif isinstance(m, _ELEMENTWISE + _POOLS):
                if isinstance(m, _ODD):
                    odd.add(g_in)
                elif not isinstance(m, _SIGN_NEUTRAL):
                    not_odd.add(g_in)
                if isinstance(m, _ODD_ALL):
                    odd_all.add(g_in)
                elif not isinstance(m, _SIGN_NEUTRAL):
                    not_odd_all.add(g_in)
                if not isinstance(m, _HOMOGENEOUS + _POOLS):
                    not_homog.add(g_in)
                put(node.name, g_in, cax[src.name], split.get(src.name))
                rec.keep(node.name, src.name)
            elif isinstance(m, nn.Flatten):
                not_odd.add(g_in)
                not_odd_all.add(g_in)
                flatten(node, src, m.start_dim, m.end_dim)
                rec.keep(node.name, src.name)
            else:
                raise ZooError(f"unsupported layer {p!r} of type {type(m).__name__}: no permutation rule for it")
        elif node.op in ("call_function", "call_method"):
            tensors = [a for a in node.args if isinstance(a, torch.fx.Node) and a.name in val]
            t = node.target
            if t in _SHAPE_QUERIES:  # x.size(0), x.shape, x.dim(): plain numbers, no channels
                continue
            not_odd.update(val[a.name] for a in tensors)  # no function here keeps a sign symmetry
            not_odd_all.update(val[a.name] for a in tensors)
            if (
                t in _ADD_FUNCS
                or t in ("add", "add_", "__add__")
                or not (t in _HOMOGENEOUS_FUNCS or t in _HOMOGENEOUS_METHODS)
            ):
                not_homog.update(val[a.name] for a in tensors)
            if not tensors:
                raise ZooError(f"unsupported operation {getattr(t, '__name__', t)!r} (node {node.name!r})")
            if t in _ADD_FUNCS or t in ("add", "add_", "__add__"):
                g = val[tensors[0].name]
                for other in tensors[1:]:
                    g = uf.union(g, val[other.name], f"residual {node.name!r}")
                nd = len(shape(node))
                ends = {nd - len(shape(a)) + c for a in tensors if (c := cax[a.name]) is not None}
                if len(ends) > 1 or any(a.name in split for a in tensors):
                    raise ZooError(f"unsupported operation {node.name!r}: adds tensors with channels on different axes")
                put(node.name, g, next(iter(ends), None))
                added = []
                for a in node.args:
                    if isinstance(a, torch.fx.Node) and a.name in free:
                        name = free.pop(a.name)
                        added.append((name, add_free(node, name, node)))
                rec.add(node.name, [a.name for a in tensors])
                for name, pa in added:
                    if pa is not None:  # a tensor on permuted units: per-unit features of the graph's node set
                        rec.add_tensor(node.name, name, pa)
            elif t in _ELEMENTWISE_FUNCS or t in _ELEMENTWISE_METHODS:
                put(node.name, val[tensors[0].name], cax[tensors[0].name], split.get(tensors[0].name))
                rec.keep(node.name, tensors[0].name)
            elif t is torch.flatten or t == "flatten":
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
                flatten(node, tensors[0], start, end)
                rec.keep(node.name, tensors[0].name)
            elif t in (torch.unflatten, "unflatten"):
                unflatten(node, tensors[0], node.args[1] if len(node.args) > 1 else node.kwargs["dim"])
                rec.keep(node.name, tensors[0].name)
            elif t in (torch.transpose, "transpose"):
                transpose(node, tensors[0], *node.args[1:3])
                rec.keep(node.name, tensors[0].name)
            elif t is _SDPA:
                q, k, v = node.args[:3]
                attention(node, q, k, v)
                rec.attention(node.name, q.name, k.name, v.name, split[q.name][2])
            elif t in ("mean", torch.mean, "sum", torch.sum) and (len(node.args) > 1 or "dim" in node.kwargs):
                dims = node.args[1] if len(node.args) > 1 else node.kwargs["dim"]
                keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
                reduce(node, tensors[0], dims, bool(keep))
                rec.keep(node.name, tensors[0].name)
            elif t in ("view", "reshape", torch.reshape, "mean", torch.mean, "squeeze", torch.squeeze):
                put(node.name, keeps_channels(node, tensors[0]), 1)
                rec.keep(node.name, tensors[0].name)
            else:
                name = getattr(t, "__name__", str(t))
                raise ZooError(f"unsupported operation {name!r} (node {node.name!r}): no permutation rule for it")
        elif node.op == "get_attr":  # a learned tensor used directly: only a sum with a permuted value has a rule
            if node.target not in state_shapes or any(u.target not in _ADD_FUNCS for u in node.users):
                raise ZooError(
                    f"unsupported direct use of tensor {node.target!r} in forward: no permutation rule for it"
                )
            free[node.name] = node.target

    state = module.state_dict()
    unused = [k for k in state if k not in axes]
    if unused:
        raise ZooError(f"tensors {unused[:5]} belong to layers the forward pass never calls; cannot derive a spec")

    names: dict[int, str] = {}
    sizes: dict[str, int] = {}
    out_axes: dict[str, tuple[str | None, ...]] = {}
    for k in state:  # state-dict order makes group order deterministic
        ax = []
        for g in axes[k]:
            r = uf.find(g) if g is not None else FIXED
            if r == FIXED:
                ax.append(None)
                continue
            if r not in names:
                names[r] = f"P_{uf.owner[r]}"
                sizes[names[r]] = uf.size[r]
            ax.append(names[r])
        out_axes[k] = tuple(ax)
    params = {n for n, _ in module.named_parameters()}
    matched = tuple(k for k in state if k in params)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    graph = rec.build(lambda g: None if uf.find(g) == FIXED else names[uf.find(g)])
    bad = {uf.find(g) for g in not_odd}
    signed = {uf.find(g) for g in odd} - bad - {FIXED}
    order = list(names)

    def named(groups: set[int]) -> tuple[str, ...]:
        return tuple(names[r] for r in sorted(groups, key=lambda r: order.index(r)) if r in names)

    signs = named(signed)
    odd_groups = named({uf.find(g) for g in odd_all} - {uf.find(g) for g in not_odd_all} - {FIXED})
    homog = {uf.find(g) for g in not_homog}
    produced: dict[int, int] = {}  # group -> how many layers produce its units (a residual stream: several)
    for g in out_group.values():
        produced[uf.find(g)] = produced.get(uf.find(g), 0) + 1
    scales = named({r for r, k in produced.items() if k == 1} - homog - {FIXED})
    heads = _heads(uf, names, blocks, ties)
    return PermutationSpec(sizes, out_axes, matched, shapes, graph, signs, odd_groups, scales, heads)


def _heads(
    uf: _UnionFind, names: dict[int, str], blocks: dict[int, int], ties: list[tuple[int, int]]
) -> dict[str, tuple[str, int]]:
    """Group name -> (tie name, heads) for the groups attention ties (``PermutationSpec.heads``)."""
    heads: dict[int, int] = {}
    for g, h in blocks.items():
        r = uf.find(g)
        if heads.setdefault(r, h) != h:
            raise ZooError(f"group {names.get(r, r)!r} is split into {heads[r]} and {h} heads")
    tie = {r: r for pair in ties for r in (uf.find(pair[0]), uf.find(pair[1]))}

    def root(r: int) -> int:
        while tie[r] != r:
            r = tie[r]
        return r

    for a, b in ties:
        ra, rb = root(uf.find(a)), root(uf.find(b))
        tie[max(ra, rb)] = min(ra, rb)
    out: dict[str, tuple[str, int]] = {}
    for r in sorted(tie, key=lambda r: list(names).index(r) if r in names else -1):
        if r not in names:
            raise ZooError(f"an attention's units are fixed ({uf.owner[r]!r} reaches the output unpermuted)")
        t = root(r)
        if heads[r] != heads[t]:
            raise ZooError(f"attention ties {names[r]!r} of {heads[r]} heads to {names[t]!r} of {heads[t]}")
        out[names[r]] = (f"H_{uf.owner[t]}", heads[r])
    return out


def spec_for_layout(layout) -> PermutationSpec:
    """Permutation spec of a stored layout (``zoo.layout.Layout``), built from its architecture spec."""
    module = layout.build()
    shape = layout.arch.get("input_shape")
    example = torch.zeros(2, *shape) if shape else None
    spec = permutation_spec(module, example)
    for e in layout.entries:
        if e.name not in spec.shapes or spec.shapes[e.name] != e.shape:
            raise ZooError(f"layout tensor {e.name!r} {e.shape} does not match the module its architecture builds")
    return spec
