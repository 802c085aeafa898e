"""The nfn encoder (NP layers of the ``nfn`` package): hidden-unit invariance from zoo.rebasin's spec,
input positions kept distinct, width-independence, and chain networks only."""

from __future__ import annotations

import pytest
import torch

from tests.wsl.encoders.test_encoders import _nets, assert_invariant_to_hidden_unit_permutations
from wsl.encoders import build_encoder
from zoo.errors import ZooError


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def batch(request):
    return _nets(request.param)


def test_invariant_to_hidden_unit_permutations(batch):
    assert_invariant_to_hidden_unit_permutations("nfn", *batch)


def test_prediction_does_not_depend_on_batch_company(batch):
    space, w, idx = batch
    enc = build_encoder("nfn", space, 2).eval()
    with torch.no_grad():
        together = enc(w, idx)
        alone = torch.cat([enc(w[i : i + 1], idx[i : i + 1]) for i in range(len(w))])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_input_features_are_not_exchangeable():
    """Plain NP layers are equivariant to permutations of the input pixels too; the first layer's io
    embeddings break that: permuting the inputs no longer just permutes the first layer's features."""
    space, w, idx = _nets("mlp", widths=(8,))
    enc = build_encoder("nfn", space, 1).eval()
    p = torch.randperm(enc.n_in, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = enc.features(w, int(idx[0]))
        out = enc.body(feats).weights[0]
        w0 = feats.weights[0][..., p]
        moved = enc.body(type(feats)((w0, *feats.weights[1:]), feats.biases)).weights[0]
    assert (moved - out[..., p]).abs().max() > 1e-2


def test_residual_networks_are_refused():
    space, _, _ = _nets("resnet", widths=(4,), train=False)
    with pytest.raises(ZooError, match="chain networks"):
        build_encoder("nfn", space, 1)
