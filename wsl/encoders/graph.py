"""Graph metanetwork: a network as a graph of neurons, encoded by message passing on torch-geometric.

The graph is zoo.rebasin's traced neuron graph (``WeightSpace.graph``), the one that also defines the
permutation groups. Nodes: one per neuron (input feature/channel, hidden unit/channel, output); node features are
its bias and, for conv channels, its BatchNorm weight, bias, running mean and running variance (a LayerNorm's
weight and bias take the BatchNorm weight and bias places), and for units a learned tensor is added to (a
transformer's position embedding ``pos`` [tokens, width]) that tensor's vector for the unit. Edges: one per
weight, directed input -> output, the conv kernel being the edge's feature vector; residual skips are
edges of their own type. Learned position embeddings: each input and output neuron has its own (they
are not interchangeable), each hidden layer one shared by its units. Layers update edges from their end
nodes, then nodes from PNA aggregations (by default mean and max with identity and
amplification degree scalers; the full PNA set is a config choice) of messages along and
against the edges. The readout reads the output nodes and the mean state of every node set (layer of neurons),
so the encoder is invariant to hidden-unit permutations by construction. The node-set means matter: ``layers``
rounds of message passing carry a weight ``layers`` hops at most, so an output-only readout of a 3-layer network
with 2 rounds never saw its first layer (its prediction was exactly independent of it; SIREN INRs, whose first
layer holds the image's frequencies, stayed at chance).

Attention (the neural-graph construction for multi-head self-attention, after Kofinas et al., ICLR 2024, who
encode W_Q, W_K, W_V and W_O as edges of the neural graph): the q, k and v projections are neuron layers from
the normalized residual stream and W_O one from v to the stream, as for any Linear; what the layers alone miss is
how attention joins them, so the graph adds, per attention call (``NeuronGraph.attentions``), one node per head
and three edge types without weights: query unit i -> key unit i (the two units a dot product multiplies),
query and key units -> their head's node, and the head's node -> its value units. Heads are thereby whole: the
graph's automorphisms are exactly the spec's symmetries of attention (``PermutationSpec.heads``: one head
permutation for both groups, query/key dims and value dims permuted freely within each head), neither more
(q and k dims apart, value dims across heads) nor fewer (Kofinas et al.'s one node per dimension with
[W_Q, W_K, W_V] stacked as a 3-vector edge feature ties value dims to query/key dims). ``attention: false``
keeps the plain layers (the construction before; for comparison and for encoders trained with it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch_geometric.nn.aggr import DegreeScalerAggregation
from torch_geometric.utils import degree

from wsl.encoders.base import WeightEncoder, mlp
from wsl.encoders.config import GraphConfig
from wsl.encoders.statnn import StatFeatures
from wsl.space import WeightSpace
from zoo.errors import ZooError
from zoo.rebasin.graph import BN_FIELDS

NODE_FEATURES = 1 + len(BN_FIELDS)
EDGE_TENSORS = 12  # [edges, hidden] tensors a layer keeps for backward (measured; see training_bytes)
WARN_BYTES = 2**30  # cost_note speaks above 1 GiB of activations per training batch


@dataclass
class _Template:
    """Gather indices that turn one padded weight vector of a layout into its graph."""

    node_pos: torch.Tensor  # [N, F] positions in the padded vector (P = zero sentinel)
    node_id: torch.Tensor  # [N] position-embedding ids
    edge_index: torch.Tensor  # [2, E]
    edge_pos: torch.Tensor  # [E, D]
    edge_type: torch.Tensor  # [E]
    out_nodes: torch.Tensor  # [O]
    node_set: torch.Tensor  # [N] the node set (layer of neurons) of each node


def _kernel_numel(k: tuple[int, ...]) -> int:
    n = 1
    for s in k:
        n *= s
    return n


def input_group_size(space: WeightSpace, input_nodes: int | None) -> int:
    """How many consecutive input neurons share one graph node so that at most ``input_nodes`` remain (1 = none).

    Inputs that a residual skip reads keep one node each (a skip edge joins single neurons)."""
    if input_nodes is None:
        return 1
    if isinstance(input_nodes, bool) or not isinstance(input_nodes, int) or input_nodes < 1:
        raise ZooError(f"encoder graph: input_nodes must be an integer >= 1 or null, got {input_nodes!r}")
    st = space.graph
    inputs = [i for i, ns in enumerate(st.nodesets) if ns.role == "input"]
    if any(a in inputs or b in inputs for a, b in st.skips):
        return 1
    n_in = max(space.max_sizes()[i] for i in inputs)
    return -(-n_in // int(input_nodes))


def added_features(space: WeightSpace) -> int:
    """Node-feature columns the learned tensors added to node sets need: the most values one unit gets."""
    out = 0
    for a in space.graph.added:
        slot = space.slot(a.name)
        out = max(out, slot.numel // slot.shape[a.axis])
    return out


def build_template(space: WeightSpace, layout_index: int, group: int = 1, attention: bool = True) -> _Template:
    """Graph of layout ``layout_index``: its real units only, features gathered from the padded vector.

    ``group`` consecutive input neurons form one node (see :func:`input_group_size`); an edge from such a
    node carries the ``group`` weights (each with its kernel) its inputs send to the target neuron.
    ``attention``: head nodes and query/key/value edges per attention call (module docstring).
    """
    st = space.graph
    sizes = space.unit_sizes[layout_index]
    maxes = space.max_sizes()
    sentinel = space.size
    inputs = {i for i, ns in enumerate(st.nodesets) if ns.role == "input"}
    gs = [group if i in inputs else 1 for i in range(len(st.nodesets))]
    nodes = [-(-s // g) for s, g in zip(sizes, gs)]  # graph nodes per node set
    d_edge = max(_kernel_numel(l.kernel) * gs[l.src] for l in st.layers)
    n_in = max(-(-maxes[i] // gs[i]) for i in inputs)
    hidden = [i for i, ns in enumerate(st.nodesets) if ns.role == "hidden"]
    start, node_id, node_set, off = {}, [], [], 0
    for i, ns in enumerate(st.nodesets):
        start[i] = off
        node_set.append(torch.full((nodes[i],), i))
        if ns.role == "input":
            node_id.append(torch.arange(nodes[i]))
        elif ns.role == "output":
            node_id.append(n_in + len(hidden) + torch.arange(nodes[i]))
        else:
            node_id.append(torch.full((nodes[i],), n_in + hidden.index(i)))
        off += nodes[i]
    attns = st.attentions if attention else ()
    n_ids = n_in + len(hidden) + maxes[[i for i, ns in enumerate(st.nodesets) if ns.role == "output"][0]]
    head_start = []
    for ai, att in enumerate(attns):  # head nodes after every node set's; one position id per attention
        head_start.append(off)
        node_id.append(torch.full((att.heads,), n_ids + ai))
        node_set.append(torch.full((att.heads,), len(st.nodesets) + ai))  # an attention's heads: one set
        off += att.heads
    node_pos = torch.full((off, NODE_FEATURES + added_features(space)), sentinel, dtype=torch.long)
    src_l, dst_l, pos_l, type_l = [], [], [], []
    for li, layer in enumerate(st.layers):
        so, do, g = sizes[layer.src], sizes[layer.dst], gs[layer.src]
        units = torch.arange(do)
        rows = start[layer.dst] + units
        if layer.bias:
            node_pos[rows, 0] = space.slot(layer.bias).offset + units
        slot = space.slot(layer.weight)
        kk = _kernel_numel(layer.kernel)
        o, j = torch.meshgrid(units, torch.arange(nodes[layer.src]), indexing="ij")
        o, j = o.reshape(-1), j.reshape(-1)
        i = j[:, None] * g + torch.arange(g)[None]  # [E, g] the inputs behind each edge
        base = slot.offset + (o[:, None] * slot.shape[1] + i) * kk
        pos = base[:, :, None] + torch.arange(kk)[None, None]  # [E, g, kk]
        pos = torch.where((i < so)[:, :, None], pos, sentinel).reshape(len(o), g * kk)
        pos = torch.cat([pos, torch.full((len(o), d_edge - g * kk), sentinel, dtype=torch.long)], dim=1)
        src_l.append(start[layer.src] + j)
        dst_l.append(start[layer.dst] + o)
        pos_l.append(pos)
        type_l.append(torch.full((len(o),), li))
    for i, norm in enumerate(space.node_norms):
        units = torch.arange(sizes[i])
        for field, name in norm.items():
            node_pos[start[i] + units, 1 + BN_FIELDS.index(field)] = space.slot(name).offset + units
    for a in st.added:  # the unit's values of the tensor, e.g. its column of pos [tokens, width]
        slot = space.slot(a.name)
        per_unit = torch.arange(slot.offset, slot.stop).reshape(slot.shape).movedim(a.axis, 0).flatten(1)
        units = torch.arange(sizes[a.nodeset])
        cols = NODE_FEATURES + torch.arange(per_unit.shape[1])
        node_pos[(start[a.nodeset] + units)[:, None], cols[None]] = per_unit[units]

    def structural(src: torch.Tensor, dst: torch.Tensor, kind: int) -> None:
        """Edges without a weight (skips, attention): the type embedding is all they carry."""
        src_l.append(src)
        dst_l.append(dst)
        pos_l.append(torch.full((len(src), d_edge), sentinel, dtype=torch.long))
        type_l.append(torch.full((len(src),), kind))

    for si, (a, b) in enumerate(st.skips):
        u = torch.arange(sizes[a])
        structural(start[a] + u, start[b] + u, len(st.layers) + si)
    kind = len(st.layers) + len(st.skips)
    for ai, att in enumerate(attns):
        qk, v = torch.arange(sizes[att.q]), torch.arange(sizes[att.v])
        head_qk = head_start[ai] + qk // (sizes[att.q] // att.heads)
        structural(start[att.q] + qk, start[att.k] + qk, kind + 3 * ai)  # the units a dot product multiplies
        structural(torch.cat([start[att.q] + qk, start[att.k] + qk]), torch.cat([head_qk, head_qk]), kind + 3 * ai + 1)
        structural(head_start[ai] + v // (sizes[att.v] // att.heads), start[att.v] + v, kind + 3 * ai + 2)
    out_set = [i for i, ns in enumerate(st.nodesets) if ns.role == "output"][0]
    return _Template(
        node_pos,
        torch.cat(node_id),
        torch.stack([torch.cat(src_l), torch.cat(dst_l)]),
        torch.cat(pos_l),
        torch.cat(type_l),
        start[out_set] + torch.arange(sizes[out_set]),
        torch.cat(node_set),
    )


def _degree_histogram(templates: list[_Template], reverse: bool) -> torch.Tensor:
    degs = []
    for t in templates:
        n = len(t.node_id)
        degs.append(degree(t.edge_index[0 if reverse else 1], num_nodes=n, dtype=torch.long))
    d = torch.cat(degs)
    return torch.bincount(d)


class EdgeNodeLayer(nn.Module):
    """Edge update from (source, target, edge), then PNA node update from messages in both directions.

    Linear maps of concatenations are split into per-node and per-edge parts (same function, fewer
    multiplies per edge).
    """

    def __init__(
        self,
        d: int,
        deg_fwd: torch.Tensor,
        deg_bwd: torch.Tensor,
        aggregators: Sequence[str] = ("mean", "max"),
        scalers: Sequence[str] = ("identity", "amplification"),
    ):
        super().__init__()
        self.e_src, self.e_dst, self.e_e = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False), nn.Linear(d, d)
        self.e_out = nn.Linear(d, d)
        self.m_fwd_h, self.m_fwd_e = nn.Linear(d, d, bias=False), nn.Linear(d, d)
        self.m_bwd_h, self.m_bwd_e = nn.Linear(d, d, bias=False), nn.Linear(d, d)
        kw = dict(aggr=list(aggregators), scaler=list(scalers))
        self.agg_fwd = DegreeScalerAggregation(deg=deg_fwd, **kw)
        self.agg_bwd = DegreeScalerAggregation(deg=deg_bwd, **kw)
        self.node = mlp([d + 2 * len(aggregators) * len(scalers) * d, 2 * d, d])
        self.norm_h = nn.LayerNorm(d)
        self.act = nn.GELU()

    def forward(self, h: torch.Tensor, e: torch.Tensor, edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        src, dst = edge_index
        e = e + self.e_out(self.act(self.e_src(h)[src] + self.e_dst(h)[dst] + self.e_e(e)))
        fwd = self.act(self.m_fwd_h(h)[src] + self.m_fwd_e(e))
        bwd = self.act(self.m_bwd_h(h)[dst] + self.m_bwd_e(e))
        n = h.shape[0]
        agg = torch.cat([self.agg_fwd(fwd, dst, dim_size=n), self.agg_bwd(bwd, src, dim_size=n)], dim=1)
        h = self.norm_h(h + self.node(torch.cat([h, agg], dim=1)))
        return h, e


class GraphEncoder(WeightEncoder):
    """Neural-graph metanetwork: embeddings, ``layers`` edge/node updates, readout from the output nodes."""

    CONFIG = GraphConfig

    def __init__(
        self,
        space: WeightSpace,
        out_dim: int,
        hidden: int = 16,
        layers: int = 2,
        dropout: float = 0.0,
        aggregators: Sequence[str] = ("mean", "max"),
        scalers: Sequence[str] = ("identity", "amplification"),
        input_nodes: int | None = 64,
        attention: bool = True,
        stats: bool = False,
    ):
        super().__init__(space, out_dim)
        st = space.graph
        self.group = input_group_size(space, input_nodes)
        self.attention = bool(attention)
        n_att = len(st.attentions) if self.attention else 0
        maxes = space.max_sizes()
        n_hidden = sum(ns.role == "hidden" for ns in st.nodesets)
        n_out = maxes[[i for i, ns in enumerate(st.nodesets) if ns.role == "output"][0]]
        inputs = [i for i, ns in enumerate(st.nodesets) if ns.role == "input"]
        n_in = max(-(-maxes[i] // self.group) for i in inputs)
        d_edge = max(_kernel_numel(l.kernel) * (self.group if l.src in inputs else 1) for l in st.layers)
        self.hidden, self.n_layers = int(hidden), int(layers)
        self.node_in = nn.Linear(NODE_FEATURES + added_features(space), hidden)
        self.node_emb = nn.Embedding(n_in + n_hidden + n_out + n_att, hidden)
        self.edge_in = nn.Linear(d_edge, hidden)
        self.edge_emb = nn.Embedding(len(st.layers) + len(st.skips) + 3 * n_att, hidden)
        self._templates: dict[int, _Template] = {}
        temps = [self._template(k) for k in range(len(space.layouts))]
        deg_f, deg_b = _degree_histogram(temps, False), _degree_histogram(temps, True)
        self.layers = nn.ModuleList(
            [EdgeNodeLayer(hidden, deg_f, deg_b, aggregators, scalers) for _ in range(int(layers))]
        )
        self.n_out, self.n_sets = n_out, len(st.nodesets) + (len(st.attentions) if self.attention else 0)
        # output nodes, then the mean state of each node set: every layer's weights reach the readout
        # stats=true: StatNN's per-tensor statistics beside them (invariant too; the NFN code's append_stats)
        self.stats = StatFeatures(space) if stats else None
        n_stats = self.stats.dim if self.stats is not None else 0
        self.readout = mlp([(n_out + self.n_sets) * hidden + n_stats, 2 * hidden, out_dim], dropout)

    def size(self) -> tuple[int, int]:
        """(nodes, edges) of the largest layout's graph: what a model costs in message passing."""
        return max((len(t.node_id), t.edge_index.shape[1]) for t in self._templates.values())

    def training_bytes(self, batch_size: int) -> int:
        """Estimated peak activation memory of one training step on ``batch_size`` models of the largest layout.

        Measured (bench/encoders_784.py): every layer keeps about ``EDGE_TENSORS`` float32 tensors of
        ``[edges, hidden]`` for the backward pass; node tensors are negligible beside them."""
        nodes, edges = self.size()
        return int(batch_size) * 4 * self.hidden * (EDGE_TENSORS * self.n_layers * edges + 32 * nodes)

    def cost_note(self, batch_size: int) -> str | None:
        nodes, edges = self.size()
        need = self.training_bytes(batch_size)
        if need < WARN_BYTES:
            return None
        return (
            f"graph encoder: {edges:,} edges per model ({nodes:,} nodes), about {need / 2**30:.1f} GiB of activations"
            f" per training batch of {batch_size}; lower encoder.input_nodes (now {self.group} inputs per node),"
            " encoder.hidden or data.batch_size to make it smaller"
        )

    def _template(self, k: int) -> _Template:
        if k not in self._templates:
            self._templates[k] = build_template(self.space, k, self.group, self.attention)
        return self._templates[k]

    def graph(self, w: torch.Tensor, layout: torch.Tensor):
        """Batched graph: node features, node ids, edge index, edge features, edge types, output nodes [n, O] and
        each node's pooling group (model row * node sets + node set)."""
        xs, ids, eis, es, ts, groups = [], [], [], [], [], []
        out_nodes = torch.zeros(len(w), self.n_out, dtype=torch.long, device=w.device)
        w_ext = torch.cat([w, w.new_zeros(len(w), 1)], dim=1)
        offset = 0
        for k in layout.unique().tolist():
            rows = (layout == k).nonzero().flatten()
            t = self._template(k)
            m, n_nodes = len(rows), len(t.node_id)
            wk = w_ext[rows]
            shift = torch.arange(m, device=w.device) * n_nodes + offset
            xs.append(wk[:, t.node_pos.to(w.device)].reshape(m * n_nodes, -1))
            ids.append(t.node_id.to(w.device).repeat(m))
            es.append(wk[:, t.edge_pos.to(w.device)].reshape(-1, t.edge_pos.shape[1]))
            eis.append((t.edge_index.to(w.device)[:, None, :] + shift[None, :, None]).reshape(2, -1))
            ts.append(t.edge_type.to(w.device).repeat(m))
            groups.append((rows.to(w.device)[:, None] * self.n_sets + t.node_set.to(w.device)[None]).reshape(-1))
            out_nodes[rows, : len(t.out_nodes)] = shift[:, None] + t.out_nodes.to(w.device)[None]
            offset += m * n_nodes
        ei = torch.cat(eis, dim=1)
        return torch.cat(xs), torch.cat(ids), ei, torch.cat(es), torch.cat(ts), out_nodes, torch.cat(groups)

    def forward(self, w: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        x, ids, ei, e, et, out_nodes, groups = self.graph(w, layout)
        h = self.node_in(x) + self.node_emb(ids)
        e = self.edge_in(e) + self.edge_emb(et)
        for layer in self.layers:
            h, e = layer(h, e, ei)
        n = len(w) * self.n_sets
        sums = h.new_zeros(n, h.shape[1]).index_add_(0, groups, h)
        counts = h.new_zeros(n).index_add_(0, groups, h.new_ones(len(groups))).clamp(min=1)
        means = (sums / counts[:, None]).reshape(len(w), -1)  # a node set a layout lacks stays 0
        parts = [h[out_nodes].reshape(len(w), -1), means]
        if self.stats is not None:
            parts.append(self.stats(w, layout).to(h.dtype))
        return self.readout(torch.cat(parts, dim=1))
