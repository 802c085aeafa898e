"""Function-preserving weight-space operations on real networks trained on digits: logits must not change."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from wsl.augment import Augmenter
from wsl.space import WeightSpace
from wsl.structure import structure_of
from wsl.symmetry import align_to, apply_permutations, match_weights, permute
from zoo.arch import arch_spec, build_model
from zoo.errors import ZooError
from zoo.layout import layout_of
from zoo.datasets import load_dataset

ARCHS = [("mlp", "digits"), ("cnn", "digits-image"), pytest.param(("resnet", "digits-image"), marks=pytest.mark.slow)]


def _train(name: str, dataset: str, width: int, seed: int, steps: int = 10):
    """A real network: a few Adam steps on digits (BatchNorm running stats become non-trivial)."""
    task = load_dataset(dataset)
    torch.manual_seed(seed)
    spec = arch_spec(name, task.input_shape, task.num_outputs, width, 2)
    model = build_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(task.X_train), (32,), generator=g)
        loss = nn.functional.cross_entropy(model(task.X_train[idx]), task.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), layout_of(model, spec), task


def _logits(layout, space, padded: torch.Tensor, k: int, ref_state: dict, x: torch.Tensor) -> torch.Tensor:
    state = layout.unflatten(space.unpad(padded[None], k)[0])
    for name, t in ref_state.items():  # integer buffers are not in the padded space
        if not t.is_floating_point():
            state[name] = t
    module = layout.build()
    module.load_state_dict(state)
    with torch.no_grad():
        return module.eval()(x)


@pytest.fixture(scope="module", params=ARCHS, ids=["mlp", "cnn", "resnet"])
def nets(request):
    name, dataset = request.param
    trained = [_train(name, dataset, w, seed) for w, seed in ((6, 0), (8, 1), (8, 2))]
    space = WeightSpace([lay for _, lay, _ in trained])
    idx = [space.add_layout(lay) for _, lay, _ in trained]
    w = torch.cat([space.pad(lay.flatten(m.state_dict())[None], k) for (m, lay, _), k in zip(trained, idx)])
    return trained, space, w, torch.tensor(idx)


def test_structure_groups_follow_architecture():
    mlp = structure_of(arch_spec("mlp", (64,), 10, 8, 2)).groups()
    assert set(mlp) == {"h1", "h2"}
    assert ("layers.0.weight", 0) in mlp["h1"] and ("layers.2.weight", 1) in mlp["h1"]
    res = structure_of(arch_spec("resnet", (1, 8, 8), 10, 8, 2)).groups()
    stream = dict.fromkeys(res["res"])
    for t in [("stem.0.weight", 0), ("stem.1.running_var", 0), ("blocks.0.conv1.weight", 1),
              ("blocks.0.conv2.weight", 0), ("blocks.1.bn2.bias", 0), ("head.weight", 1)]:
        assert t in stream
    assert ("blocks.0.conv1.weight", 0) in res["blocks.0"] and ("blocks.0.conv2.weight", 1) in res["blocks.0"]
    cnn = structure_of(arch_spec("cnn", (1, 8, 8), 10, 8, 2)).groups()
    assert ("features.1.running_mean", 0) in cnn["h1"] and ("head.weight", 1) in cnn["h2"]


def test_random_permutation_preserves_function(nets):
    trained, space, w, idx = nets
    perm = permute(space, w, idx, torch.Generator().manual_seed(0))
    for k, (model, layout, task) in enumerate(trained):
        assert not torch.equal(perm[k], w[k])  # the weights really moved
        x = task.X_test[:200]
        ref = _logits(layout, space, w[k], int(idx[k]), model.state_dict(), x)
        torch.testing.assert_close(ref, model(x).detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(_logits(layout, space, perm[k], int(idx[k]), model.state_dict(), x), ref,
                                   rtol=1e-4, atol=1e-5)


def test_permute_augmentation_preserves_function_and_padding(nets):
    trained, space, w, idx = nets
    aug = Augmenter(space, {"permute": {"p": 1.0}}, seed=3)
    out = aug({"w": w, "y": torch.zeros(len(w)), "layout": idx})["w"]
    assert torch.equal(out * ~space.mask(idx), torch.zeros_like(out))  # padded units stay padded
    for k, (model, layout, task) in enumerate(trained):
        x = task.X_test[:200]
        torch.testing.assert_close(_logits(layout, space, out[k], int(idx[k]), model.state_dict(), x),
                                   model(x).detach(), rtol=1e-4, atol=1e-5)


def test_weight_matching_recovers_a_permuted_copy_and_aligned_partner_keeps_function(nets):
    trained, space, w, idx = nets
    perm = permute(space, w, idx, torch.Generator().manual_seed(5))
    back = align_to(space, w, perm, idx, torch.Generator().manual_seed(0))
    torch.testing.assert_close(back, w)
    # aligning a different network (same layout) changes its weights, never its function
    model, layout, task = trained[2]
    aligned = align_to(space, w[1:2], w[2:3], idx[1:2], torch.Generator().manual_seed(0))[0]
    assert torch.linalg.norm(aligned - w[1]) < torch.linalg.norm(w[2] - w[1])
    x = task.X_test[:200]
    torch.testing.assert_close(_logits(layout, space, aligned, int(idx[2]), model.state_dict(), x), model(x).detach(),
                               rtol=1e-4, atol=1e-5)


def test_matched_permutations_are_permutations(nets):
    _, space, w, idx = nets
    perms = match_weights(space, w[1], w[2], int(idx[1]), torch.Generator().manual_seed(0))
    for g, p in perms.items():
        assert sorted(p[0].tolist()) == list(range(p.shape[1]))
    assert apply_permutations(space, w[2:3], perms).shape == w[2:3].shape


def test_noise_dropout_sparsify_mixup_change_weights_within_layout(nets):
    _, space, w, idx = nets
    y = torch.tensor([0.1, 0.5, 0.9])
    batch = {"w": w, "y": y, "layout": idx}
    mask = space.mask(idx)
    for cfg in ({"noise": {"p": 1.0}}, {"dropout": {"p": 1.0, "rate": 0.5}}, {"sparsify": {"p": 1.0, "fraction": 0.5}},
                {"mixup": {"p": 1.0, "mode": "permuted"}}):
        out = Augmenter(space, cfg, seed=1)(batch)
        assert torch.equal(out["w"] * ~mask, torch.zeros_like(w)), cfg
    sp = Augmenter(space, {"sparsify": {"p": 1.0, "fraction": 0.5}})(batch)["w"]
    hidden = space.slot(space.structure.layers[1].weight)
    frac = (sp[1:, hidden.offset : hidden.stop][mask[1:, hidden.offset : hidden.stop]] == 0).float().mean()
    assert 0.45 <= frac <= 0.55
    mixed = Augmenter(space, {"mixup": {"p": 1.0, "alpha": 1.0}}, seed=0)(batch)
    # networks 1 and 2 share a layout: their targets may mix, network 0 has no partner but itself
    assert mixed["y"][0] == y[0] and 0.5 <= mixed["y"][1] <= 0.9 and 0.5 <= mixed["y"][2] <= 0.9


def test_bad_augment_config_is_a_zoo_error(nets):
    _, space, _, _ = nets
    with pytest.raises(ZooError, match="unknown augmentation"):
        Augmenter(space, {"rotate": {"p": 1}})
    with pytest.raises(ZooError, match="mixup.mode"):
        Augmenter(space, {"mixup": {"p": 1, "mode": "weird"}})
