"""The graph encoder's attention construction (issue 23 item 6): head nodes and query/key/value edges make the
graph's symmetries those of the transformer's permutation spec, neither more nor fewer."""

from __future__ import annotations

import torch

from wsl.encoders import build_encoder
from wsl.encoders.graph import build_template
from wsl.space import WeightSpace
from wsl.symmetry import permute
from zoo.arch import arch_spec, build_model
from zoo.datasets import load_dataset
from zoo.layout import layout_of


def _vits(widths=(8,), depth: int = 1):
    """Tiny vision transformers (2 heads, 4x4 patches: 4 tokens) on 8x8 digits, one per width, in one space."""
    out = []
    for seed, width in enumerate(widths):
        torch.manual_seed(seed)
        spec = arch_spec("vit", [1, 8, 8], 10, width, depth, activation="gelu", heads=2, mlp_ratio=2.0, patch=4)
        model = build_model(spec)
        with torch.no_grad():  # position embeddings and LayerNorms off their inits, so they matter
            for name, p in model.named_parameters():
                if name == "pos" or "ln" in name or name.startswith("norm"):
                    p.normal_(0.0 if name.endswith("bias") or name == "pos" else 1.0, 0.5)
        out.append((model.eval(), layout_of(model, spec)))
    space = WeightSpace([lay for _, lay in out])
    idx = torch.tensor([space.add_layout(lay) for _, lay in out])
    w = torch.cat([space.pad(lay.flatten(m.state_dict())[None], int(k)) for (m, lay), k in zip(out, idx)])
    return out, space, w, idx


def test_graph_of_a_tiny_transformer_has_its_head_nodes_and_attention_edges():
    """Width 8, 2 heads, 1 block: 75 neurons + 2 head nodes; 600 weights, 16 skip edges, and per attention
    8 query-key, 16 query/key-head and 8 head-value edges; every real weight (pos included) read exactly once,
    and the graph's groups move exactly the axes the permutation spec moves."""
    _, space, _, idx = _vits()
    t = build_template(space, 0)
    neurons = 1 + 8 + 3 * 8 + 8 + 16 + 8 + 10  # input channel, embed, q k v, o, mlp, mlp out, classes
    assert len(t.node_id) == neurons + 2
    weights = 8 * 1 + 4 * 8 * 8 + 2 * 8 * 16 + 8 * 10  # patch embed (kernel on the edge), q k v o, mlp, head
    assert t.edge_index.shape[1] == weights + 2 * 8 + (8 + 16 + 8)
    plain = build_template(space, 0, attention=False)
    assert (len(plain.node_id), plain.edge_index.shape[1]) == (neurons, weights + 2 * 8)
    st = space.graph
    (att,) = st.attentions
    assert att.heads == 2 and [st.nodesets[i].name for i in (att.q, att.k, att.v)] == [
        "blocks.0.attn.q",
        "blocks.0.attn.k",
        "blocks.0.attn.v",
    ]
    spec = space.spec(0)  # the graph moves exactly the axes the spec permutes, pos's width axis included
    assert {g: sorted(v) for g, v in st.groups().items()} == {g: sorted(spec.touches(g)) for g in spec.groups}
    assert ("pos", 1) in st.groups()[st.nodesets[1].group]
    pos = torch.cat([t.edge_pos.flatten(), t.node_pos.flatten()])
    pos = pos[pos != space.size]
    assert len(pos) == len(pos.unique())
    assert torch.equal(pos.sort().values, space.mask(idx[:1])[0].nonzero().flatten())
    # head h's node joins query/key units 4h..4h+3 and value units 4h..4h+3
    kinds = t.edge_type.unique().tolist()
    to_v = t.edge_index[:, t.edge_type == kinds[-1]]
    heads = to_v[0] - to_v[0].min()
    assert torch.equal(heads, torch.arange(8) // 4)


def _node_states(enc, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Every node's state after the encoder's message passing: [n, nodes, hidden]."""
    x, ids, ei, e, et, _, _ = enc.graph(w, idx)
    h, e = enc.node_in(x) + enc.node_emb(ids), enc.edge_in(e) + enc.edge_emb(et)
    for layer in enc.layers:
        h, e = layer(h, e, ei)
    return h.reshape(len(w), -1, h.shape[-1])


def _function_and_graphs(model, layout, state, space):
    """How far a reordered state moves the function, and the sum of node states (a graph invariant: equal on
    isomorphic graphs) of the attention graph and of the plain one."""
    x = load_dataset("digits-image").X_test[:64]
    other = build_model(layout.arch)
    other.load_state_dict(state)
    with torch.no_grad():
        f0, f1 = model(x), other.eval()(x)
    w = torch.cat([space.pad(layout.flatten(s)[None], 0) for s in (model.state_dict(), state)])
    idx = torch.zeros(2, dtype=torch.long)
    torch.manual_seed(0)
    new, old = build_encoder("graph", space, 3).eval(), build_encoder("graph", space, 3, attention=False).eval()
    with torch.no_grad():
        a, b = _node_states(new, w, idx).sum(1), _node_states(old, w, idx).sum(1)
    return (f1 - f0).abs().max(), (a[1] - a[0]).abs().max(), (b[1] - b[0]).abs().max()


def test_spec_symmetries_give_isomorphic_graphs_and_other_reorderings_do_not():
    """Random symmetries from the PermutationSpec (heads as wholes, dims within heads, MLP units, the residual
    stream) leave the encoder's output unchanged to float tolerance, in a mixed-width padded space. Moving
    value units across heads, or query units without their key units, changes the function; the attention
    construction's graph is no longer isomorphic, the plain layers' (attention=false) still is."""
    nets, space, w, idx = _vits(widths=(8, 12))
    assert space.spec(0).heads  # the traced spec has head-structured groups
    torch.manual_seed(0)
    enc = build_encoder("graph", space, 3).eval()
    for seed in range(3):
        perm = permute(space, w, idx, torch.Generator().manual_seed(seed))
        assert (perm - w).abs().max() > 0.05
        with torch.no_grad():
            a, b = enc(w, idx), enc(perm, idx)
        assert a.abs().max() > 1e-3
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)

    model, layout = nets[0]
    swap = torch.tensor([4, 1, 2, 3, 0, 5, 6, 7])  # unit 0 (head 0) <-> unit 4 (head 1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["blocks.0.attn.v.weight"] = state["blocks.0.attn.v.weight"][swap]
    state["blocks.0.attn.v.bias"] = state["blocks.0.attn.v.bias"][swap]
    state["blocks.0.attn.o.weight"] = state["blocks.0.attn.o.weight"][:, swap]
    f, new, old = _function_and_graphs(model, layout, state, space)
    assert f > 1e-3 and new > 1e-4 and old < 1e-5

    within = torch.tensor([1, 0, 2, 3, 4, 5, 6, 7])  # query units 0 <-> 1, keys left alone
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["blocks.0.attn.q.weight"] = state["blocks.0.attn.q.weight"][within]
    state["blocks.0.attn.q.bias"] = state["blocks.0.attn.q.bias"][within]
    f, new, old = _function_and_graphs(model, layout, state, space)
    assert f > 1e-3 and new > 1e-4 and old < 1e-5


def test_transformer_encoder_reads_the_position_embedding():
    """The neuron-token transformer's embed tokens carry pos: changing pos changes its output."""
    _, space, w, idx = _vits()
    torch.manual_seed(0)
    enc = build_encoder("transformer", space, 2).eval()
    moved = w.clone()
    slot = space.slot("pos")
    moved[:, slot.offset : slot.stop] += 1.0
    with torch.no_grad():
        assert (enc(moved, idx) - enc(w, idx)).abs().max() > 1e-3
