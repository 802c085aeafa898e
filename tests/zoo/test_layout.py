"""Layouts: state dict <-> flat vector is exact for every architecture, BatchNorm buffers included."""

import pytest
import torch

from zoo import ZooError, arch_spec, build_model, layout_of
from zoo.datasets import load_dataset
from zoo.layout import Layout

SPECS = [
    arch_spec("mlp", [64], 10, 16, 2),
    arch_spec("mlp", [2], 2, 8, 0, activation="tanh"),
    arch_spec("cnn", [1, 8, 8], 10, 8, 2, batchnorm=True),
    arch_spec("cnn", [1, 8, 8], 10, 8, 3, batchnorm=False, kernel_size=5),
    arch_spec("resnet", [1, 8, 8], 10, 8, 2),
]


def _trained(spec, steps=3):
    """A module after a few real SGD steps on digits, so BatchNorm buffers are not at their defaults."""
    torch.manual_seed(0)
    m = build_model(spec)
    task = load_dataset("digits-image" if len(spec["input_shape"]) == 3 else "digits")
    if spec["input_shape"] == [2]:
        task = load_dataset("moons")
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for i in range(steps):
        x, y = task.X_train[i * 32 : (i + 1) * 32], task.y_train[i * 32 : (i + 1) * 32]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    return m


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s['name']}-{s['depth']}")
def test_roundtrip_is_exact(spec):
    m = _trained(spec)
    layout = layout_of(m, spec)
    state = m.state_dict()
    back = layout.unflatten(layout.flatten(state))
    assert list(back) == list(state)
    for k in state:
        assert back[k].dtype == state[k].dtype and torch.equal(back[k], state[k]), k
    # the layout rebuilds the module from JSON alone, and that module computes the same function
    rebuilt = Layout.from_json(layout.to_json()).build()
    rebuilt.load_state_dict(back)
    x = torch.randn(5, *spec["input_shape"])
    assert torch.equal(rebuilt.eval()(x), m.eval()(x))


def test_layout_counts_buffers_and_marks_parameters():
    spec = SPECS[2]
    layout = layout_of(build_model(spec), spec)
    kinds = {e.name: e.kind for e in layout.entries}
    assert kinds["features.1.running_mean"] == "buffer" and kinds["features.0.weight"] == "parameter"
    assert layout["features.1.num_batches_tracked"].dtype == "int64"
    assert int(layout.parameter_mask().sum()) == sum(p.numel() for p in build_model(spec).parameters())


def test_wrong_shapes_and_names_are_clear_errors():
    spec = SPECS[0]
    layout = layout_of(build_model(spec), spec)
    state = build_model(spec).state_dict()
    state["layers.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(ZooError, match="layers.0.weight"):
        layout.flatten(state)
    with pytest.raises(ZooError, match="missing"):
        layout.flatten({"layers.0.weight": torch.zeros(16, 64)})
    with pytest.raises(ZooError, match="do not fit"):
        layout.unflatten_batch(torch.zeros(2, layout.size + 1))


def test_unknown_architecture_and_image_arch_on_flat_input():
    with pytest.raises(ZooError, match="unknown architecture"):
        build_model({"name": "lstm", "input_shape": [64], "num_outputs": 10, "width": 4, "depth": 1})
    with pytest.raises(ZooError, match="image inputs"):
        build_model(arch_spec("cnn", [64], 10, 4, 1))
