"""Graph metanetwork: a network as a graph of neurons, encoded by message passing on torch-geometric.

The graph is zoo.rebasin's traced neuron graph (``WeightSpace.graph``), the one that also defines the
permutation groups. Nodes: one per neuron (input feature/channel, hidden unit/channel, output); node features are
its bias and, for conv channels, its BatchNorm weight, bias, running mean and running variance. Edges: one per
weight, directed input -> output, the conv kernel being the edge's feature vector; residual skips are
edges of their own type. Learned position embeddings: each input and output neuron has its own (they
are not interchangeable), each hidden layer one shared by its units. Layers update edges from their end
nodes, then nodes from PNA aggregations (by default mean and max with identity and
amplification degree scalers; the full PNA set is a config choice) of messages along and
against the edges. The readout reads the output nodes only, so the encoder is invariant to hidden-unit
permutations by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch_geometric.nn.aggr import DegreeScalerAggregation
from torch_geometric.utils import degree

from wsl.encoders.base import WeightEncoder, mlp
from wsl.space import WeightSpace
from zoo.rebasin.graph import BN_FIELDS

NODE_FEATURES = 1 + len(BN_FIELDS)


@dataclass
class _Template:
    """Gather indices that turn one padded weight vector of a layout into its graph."""

    node_pos: torch.Tensor  # [N, F] positions in the padded vector (P = zero sentinel)
    node_id: torch.Tensor  # [N] position-embedding ids
    edge_index: torch.Tensor  # [2, E]
    edge_pos: torch.Tensor  # [E, D]
    edge_type: torch.Tensor  # [E]
    out_nodes: torch.Tensor  # [O]


def _kernel_numel(k: tuple[int, ...]) -> int:
    n = 1
    for s in k:
        n *= s
    return n


def build_template(space: WeightSpace, layout_index: int) -> _Template:
    """Graph of layout ``layout_index``: its real units only, features gathered from the padded vector."""
    st = space.graph
    sizes = space.unit_sizes[layout_index]
    maxes = space.max_sizes()
    sentinel = space.size
    d_edge = max(_kernel_numel(l.kernel) for l in st.layers)
    n_in = maxes[0]
    hidden = [i for i, ns in enumerate(st.nodesets) if ns.role == "hidden"]
    start, node_id, off = {}, [], 0
    for i, ns in enumerate(st.nodesets):
        start[i] = off
        if ns.role == "input":
            node_id.append(torch.arange(sizes[i]))
        elif ns.role == "output":
            node_id.append(n_in + len(hidden) + torch.arange(sizes[i]))
        else:
            node_id.append(torch.full((sizes[i],), n_in + hidden.index(i)))
        off += sizes[i]
    node_pos = torch.full((off, NODE_FEATURES), sentinel, dtype=torch.long)
    src_l, dst_l, pos_l, type_l = [], [], [], []
    for li, layer in enumerate(st.layers):
        so, do = sizes[layer.src], sizes[layer.dst]
        units = torch.arange(do)
        rows = start[layer.dst] + units
        if layer.bias:
            node_pos[rows, 0] = space.slot(layer.bias).offset + units
        slot = space.slot(layer.weight)
        kk = _kernel_numel(layer.kernel)
        o, i = torch.meshgrid(units, torch.arange(so), indexing="ij")
        o, i = o.reshape(-1), i.reshape(-1)
        base = slot.offset + (o * slot.shape[1] + i) * kk
        pos = torch.full((len(o), d_edge), sentinel, dtype=torch.long)
        pos[:, :kk] = base[:, None] + torch.arange(kk)[None]
        src_l.append(start[layer.src] + i)
        dst_l.append(start[layer.dst] + o)
        pos_l.append(pos)
        type_l.append(torch.full((len(o),), li))
    for i, norm in enumerate(space.node_norms):
        units = torch.arange(sizes[i])
        for field, name in norm.items():
            node_pos[start[i] + units, 1 + BN_FIELDS.index(field)] = space.slot(name).offset + units
    for si, (a, b) in enumerate(st.skips):
        u = torch.arange(sizes[a])
        src_l.append(start[a] + u)
        dst_l.append(start[b] + u)
        pos_l.append(torch.full((len(u), d_edge), sentinel, dtype=torch.long))
        type_l.append(torch.full((len(u),), len(st.layers) + si))
    out_set = [i for i, ns in enumerate(st.nodesets) if ns.role == "output"][0]
    return _Template(
        node_pos,
        torch.cat(node_id),
        torch.stack([torch.cat(src_l), torch.cat(dst_l)]),
        torch.cat(pos_l),
        torch.cat(type_l),
        start[out_set] + torch.arange(sizes[out_set]),
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

    def __init__(
        self,
        space: WeightSpace,
        out_dim: int,
        hidden: int = 16,
        layers: int = 2,
        dropout: float = 0.0,
        aggregators: Sequence[str] = ("mean", "max"),
        scalers: Sequence[str] = ("identity", "amplification"),
    ):
        super().__init__(space, out_dim)
        st = space.graph
        maxes = space.max_sizes()
        n_hidden = sum(ns.role == "hidden" for ns in st.nodesets)
        n_out = maxes[[i for i, ns in enumerate(st.nodesets) if ns.role == "output"][0]]
        d_edge = max(_kernel_numel(l.kernel) for l in st.layers)
        self.node_in = nn.Linear(NODE_FEATURES, hidden)
        self.node_emb = nn.Embedding(maxes[0] + n_hidden + n_out, hidden)
        self.edge_in = nn.Linear(d_edge, hidden)
        self.edge_emb = nn.Embedding(len(st.layers) + len(st.skips), hidden)
        self._templates: dict[int, _Template] = {}
        temps = [self._template(k) for k in range(len(space.layouts))]
        deg_f, deg_b = _degree_histogram(temps, False), _degree_histogram(temps, True)
        self.layers = nn.ModuleList(
            [EdgeNodeLayer(hidden, deg_f, deg_b, aggregators, scalers) for _ in range(int(layers))]
        )
        self.n_out = n_out
        self.readout = mlp([n_out * hidden, 2 * hidden, out_dim], dropout)

    def _template(self, k: int) -> _Template:
        if k not in self._templates:
            self._templates[k] = build_template(self.space, k)
        return self._templates[k]

    def graph(self, w: torch.Tensor, layout: torch.Tensor):
        """Batched graph: node features, node ids, edge index, edge features, edge types, output nodes [n, O]."""
        xs, ids, eis, es, ts = [], [], [], [], []
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
            out_nodes[rows, : len(t.out_nodes)] = shift[:, None] + t.out_nodes.to(w.device)[None]
            offset += m * n_nodes
        return torch.cat(xs), torch.cat(ids), torch.cat(eis, dim=1), torch.cat(es), torch.cat(ts), out_nodes

    def forward(self, w: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        x, ids, ei, e, et, out_nodes = self.graph(w, layout)
        h = self.node_in(x) + self.node_emb(ids)
        e = self.edge_in(e) + self.edge_emb(et)
        for layer in self.layers:
            h, e = layer(h, e, ei)
        return self.readout(h[out_nodes].reshape(len(w), -1))
