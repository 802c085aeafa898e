"""Encoders: hidden-unit permutation invariance (graph, StatNN), padding-independence, graph size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wsl.encoders import ENCODERS, build_encoder
from wsl.encoders.graph import build_template
from wsl.space import WeightSpace
from wsl.symmetry import permute
from zoo.arch import arch_spec, build_model
from zoo.datasets import load_dataset
from zoo.errors import ZooError
from zoo.layout import layout_of


def _nets(name: str, widths=(6, 8, 8), train: bool = True):
    """Networks of one architecture; MLP and CNN get a few real training steps on digits."""
    dataset = load_dataset("digits" if name == "mlp" else "digits-image")
    out = []
    for seed, width in enumerate(widths):
        torch.manual_seed(seed)
        spec = arch_spec(name, dataset.input_shape, dataset.num_outputs, width, 2)
        model = build_model(spec)
        if train:
            opt = torch.optim.Adam(model.parameters(), lr=1e-2)
            for step in range(8):
                x, y = dataset.X_train[step * 32 : (step + 1) * 32], dataset.y_train[step * 32 : (step + 1) * 32]
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        else:
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_()
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.data.normal_()
                    m.bias.data.normal_()
        out.append((model, layout_of(model, spec)))
    space = WeightSpace([lay for _, lay in out])
    idx = torch.tensor([space.add_layout(lay) for _, lay in out])
    w = torch.cat([space.pad(lay.flatten(m.state_dict())[None], int(k)) for (m, lay), k in zip(out, idx)])
    return space, w, idx


@pytest.fixture(scope="module", params=[("mlp", True), ("cnn", True), ("resnet", False)], ids=["mlp", "cnn", "resnet"])
def zoo_batch(request):
    name, train = request.param
    return _nets(name, train=train)


@pytest.mark.parametrize("encoder", ["graph", "statnn"])
def test_invariant_to_hidden_unit_permutations(zoo_batch, encoder):
    assert_invariant_to_hidden_unit_permutations(encoder, *zoo_batch)


def assert_invariant_to_hidden_unit_permutations(encoder: str, space, w, idx) -> None:
    """The encoder's output is unchanged (to float tolerance) when hidden units are permuted by the zoo.rebasin
    spec, and the permutation and the output are both far from trivial."""
    torch.manual_seed(0)
    enc = build_encoder(encoder, space, 3).eval()
    perm = permute(space, w, idx, torch.Generator().manual_seed(1))
    assert (perm - w).abs().max() > 0.01
    with torch.no_grad():
        a, b = enc(w, idx), enc(perm, idx)
    assert a.abs().max() > 1e-3
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("encoder", ["graph", "statnn", "transformer", "mlp"])
def test_prediction_does_not_depend_on_batch_company(zoo_batch, encoder):
    """A narrow network padded into the space predicts the same alone as in a mixed-width batch."""
    space, w, idx = zoo_batch
    torch.manual_seed(0)
    enc = build_encoder(encoder, space, 2).eval()
    with torch.no_grad():
        together = enc(w, idx)
        alone = torch.cat([enc(w[i : i + 1], idx[i : i + 1]) for i in range(len(w))])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_graph_has_a_node_per_neuron_and_an_edge_per_weight():
    space, _, idx = _nets("resnet", widths=(4,), train=False)
    t = build_template(space, int(idx[0]))
    lay = space.layouts[int(idx[0])]
    neurons = 1 + 4 + 2 * (4 + 4) + 10  # input channel, stem, (mid, out) per block, outputs
    assert len(t.node_id) == neurons
    weights = sum(
        e.numel // (e.shape[2] * e.shape[3] if len(e.shape) == 4 else 1)
        for e in lay.entries
        if e.name.endswith("weight") and len(e.shape) >= 2
    )
    assert t.edge_index.shape[1] == weights + 2 * 4  # plus one identity skip edge per channel per block
    assert len(t.out_nodes) == 10


def test_unknown_encoder_and_bad_hyperparameter_are_zoo_errors():
    space, _, _ = _nets("mlp", widths=(4,), train=False)
    with pytest.raises(ZooError, match="unknown encoder 'nope'"):
        build_encoder("nope", space, 1)
    with pytest.raises(ZooError, match="encoder 'graph'"):
        build_encoder("graph", space, 1, depth=3)
    assert set(ENCODERS) == {"mlp", "statnn", "graph", "transformer", "nfn"}


def test_grouped_inputs_keep_every_weight_once_and_the_invariance():
    """input_nodes=8 on 64 digits inputs: 8 input nodes whose edges carry 8 weights each; every real weight and
    bias sits in exactly one edge or node feature (nothing dropped, nothing doubled), the edge count falls by
    the group size on the first layer, and hidden-unit permutations still leave the output unchanged."""
    space, w, idx = _nets("mlp", widths=(6, 8, 8))
    k = int(idx[0])  # width 6 (narrower than the space): padding must not leak in
    sizes = space.unit_sizes[k]
    flat = build_template(space, k, 1)
    grouped = build_template(space, k, space.max_sizes()[0] // 8)
    assert len(flat.node_id) - len(grouped.node_id) == 64 - 8
    first = sizes[1] * 64
    assert flat.edge_index.shape[1] - grouped.edge_index.shape[1] == first - first // 8
    for t in (flat, grouped):
        pos = torch.cat([t.edge_pos.flatten(), t.node_pos.flatten()])
        pos = pos[pos != space.size]
        assert len(pos) == len(pos.unique())
        assert torch.equal(pos.sort().values, space.mask(idx[:1])[0].nonzero().flatten())
    enc = build_encoder("graph", space, 2, input_nodes=8)
    assert enc.group == 8 and enc.edge_in.in_features == 8
    perm = permute(space, w, idx, torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = enc.eval()(w, idx), enc(perm, idx)
    assert a.abs().max() > 1e-3
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_graph_input_nodes_default_leaves_small_inputs_alone_and_warns_on_large_graphs():
    """64 digits inputs keep one node each under the default (64); a graph with one node per 784-input pixel
    reports its cost in one line, the grouped default does not; a bad input_nodes is a ZooError."""
    space, _, _ = _nets("mlp", widths=(8,), train=False)
    assert build_encoder("graph", space, 1).group == 1
    big = {"name": "mlp", "input_shape": [784], "num_outputs": 10, "width": 32, "depth": 2, "activation": "relu"}
    lay = layout_of(build_model(big), big)
    space784 = WeightSpace([lay])
    per_input = build_encoder("graph", space784, 1, input_nodes=None)
    assert per_input.size() == (784 + 32 + 32 + 10, 784 * 32 + 32 * 32 + 32 * 10)
    note = per_input.cost_note(64)
    assert note is not None and "input_nodes" in note and "\n" not in note
    grouped = build_encoder("graph", space784, 1)
    assert grouped.group == 13 and grouped.size()[0] == 61 + 32 + 32 + 10
    assert grouped.cost_note(64) is None
    for bad in (0, -3, 2.5, "many", True):
        with pytest.raises(ZooError, match="input_nodes"):
            build_encoder("graph", space784, 1, input_nodes=bad)


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_every_layer_reaches_the_prediction(encoder):
    """Redrawing any one layer's weights changes the prediction: an output-only graph readout with 2 rounds of
    message passing never saw the first layer of a 3-layer network (exactly 0 change), so INRs stayed at chance."""
    space, w, idx = _nets("mlp", train=False)
    torch.manual_seed(0)
    enc = build_encoder(encoder, space, 3).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        base = enc(w, idx)
        for layer in space.graph.layers:
            s = space.slot(layer.weight)
            moved = w.clone()
            moved[:, s.offset : s.stop] = (
                torch.randn(len(w), s.stop - s.offset, generator=gen) * space.mask(idx)[:, s.offset : s.stop]
            )
            assert (enc(moved, idx) - base).abs().max() > 1e-5, layer.weight


@pytest.mark.parametrize("encoder", ["graph", "nfn"])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_appended_statistics_keep_the_invariance_and_reach_the_prediction(arch, encoder):
    """``stats=true`` (the NFN code's append_stats) feeds StatNN's per-tensor statistics to the head: still
    invariant to hidden-unit permutations, alone the same as in company, and the statistics change the output."""
    space, w, idx = _nets(arch)
    torch.manual_seed(0)
    enc = build_encoder(encoder, space, 3, stats=True).eval()
    perm = permute(space, w, idx, torch.Generator().manual_seed(1))
    assert (perm - w).abs().max() > 0.01
    with torch.no_grad():
        a, b = enc(w, idx), enc(perm, idx)
        alone = torch.cat([enc(w[i : i + 1], idx[i : i + 1]) for i in range(len(w))])
        enc.stats.norm.running_mean += 1.0  # the statistics' normalization moves: so does the prediction
        moved = enc(w, idx)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone, a, rtol=1e-4, atol=1e-5)
    assert (moved - a).abs().max() > 1e-4


def test_statnn_reads_runs_saved_before_the_statistics_module():
    """A StatNN state dict with the old ``norm.*`` names loads into today's ``stats.norm.*`` and predicts the same."""
    space, w, idx = _nets("mlp")
    torch.manual_seed(0)
    enc = build_encoder("statnn", space, 2)
    enc.train()
    enc(w, idx)  # running statistics move away from their defaults
    enc.eval()
    old = {(k[len("stats.") :] if k.startswith("stats.") else k): v for k, v in enc.state_dict().items()}
    assert "norm.running_mean" in old
    fresh = build_encoder("statnn", space, 2).eval()
    fresh.load_state_dict(old)
    with torch.no_grad():
        torch.testing.assert_close(fresh(w, idx), enc(w, idx))
