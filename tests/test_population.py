"""The population trainer's batched forward computes each model's own function."""
import torch

from zoo.arch import arch_spec, build_model
from zoo.population import stacked_mlp_forward
from zoo.recipe import init_state
from zoo.datasets import load_dataset


def test_stacked_mlp_forward_equals_each_module():
    task = load_dataset("digits")
    spec = arch_spec("mlp", [64], 10, 16, 3, activation="tanh")
    states = [init_state(spec, s) for s in range(5)]
    params = {k: torch.stack([s[k] for s in states]) for k in states[0]}
    x_own = torch.stack([task.X_train[i * 20:(i + 1) * 20] for i in range(5)])
    out_own = stacked_mlp_forward(build_model(spec), params, x_own, shared_input=False)
    out_shared = stacked_mlp_forward(build_model(spec), params, task.X_test, shared_input=True)
    out_fm = stacked_mlp_forward(build_model(spec), params, x_own, shared_input=False, feature_major=True)
    assert out_fm.shape == out_own.shape and torch.allclose(out_fm, out_own, atol=1e-5)
    for i, s in enumerate(states):
        m = build_model(spec)
        m.load_state_dict(s)
        with torch.no_grad():
            assert torch.allclose(out_own[i], m(x_own[i]), atol=1e-5)
            assert torch.allclose(out_shared[i], m(task.X_test), atol=1e-5)
