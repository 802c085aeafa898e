"""The population trainer's batched forward computes each model's own function."""

import torch

from zoo.arch import arch_spec, build_model
from zoo.datasets import load_dataset
from zoo.forward import stacked_mlp_forward
from zoo.training.recipe import init_state


def test_stacked_mlp_forward_equals_each_module():
    task = load_dataset("digits")
    spec = arch_spec("mlp", [64], 10, 16, 3, activation="tanh")
    states = [init_state(spec, s) for s in range(5)]
    params = {k: torch.stack([s[k] for s in states]) for k in states[0]}
    x_own = torch.stack([task.X_train[i * 20 : (i + 1) * 20] for i in range(5)])
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


def _spec(arch: str, task, n: int, optimizer: str = "sgd", epochs: int = 1):
    from zoo.layout import layout_of
    from zoo.training.spec import PopulationSpec

    spec = arch_spec(arch, task.input_shape, 10, 4 if arch != "mlp" else 16, 1 if arch == "resnet" else 2)
    return PopulationSpec(
        template=build_model(spec),
        layout=layout_of(build_model(spec), spec),
        init_states=[init_state(spec, s) for s in range(n)],
        learning_rates=[0.02 * (1 + i) for i in range(n)],
        weight_decays=[1e-3] * n,
        data_seeds=[11 + s for s in range(n)],
        batch_size=64,
        epochs=epochs,
        checkpoint_epochs=[0, epochs],
        optimizer=optimizer,
        momentum=0.9,
    )


def test_training_state_lives_in_buffers_that_move_with_the_module():
    """device=cuda relies on Lightning moving the module: every piece of training state must move with it."""
    from zoo.training.population_module import PopulationModule

    task = load_dataset("digits-image")
    module = PopulationModule(_spec("cnn", task, 3, optimizer="adam"), task).to("meta")
    state = [
        module.lr,
        module.wd,
        module.active,
        module.diverged,
        *module.state1,
        *module.state2,
        *module._buffers_stacked.values(),
        *module.stacked,
    ]
    assert len(module._buffers_stacked) == 6 and len(module.state2) == len(module.stacked)  # 2 BN x 3 buffers
    assert all(t.device.type == "meta" for t in state)
    assert module.lr.shape == (3, 1) and module.state1[0].shape == module.stacked[0].shape


def plain_torch_epoch(spec, j: int, task, make_optimizer) -> torch.Tensor:
    """Model ``j`` of a population spec trained for one epoch (batches of 64) in plain torch with
    ``make_optimizer(params, lr, wd)``, on the data order of its own seed; its flat weights."""
    import torch.nn.functional as F

    model = spec.layout.build()
    model.load_state_dict(spec.init_states[j])
    model.train()
    opt = make_optimizer(model.parameters(), spec.learning_rates[j], spec.weight_decays[j])
    perm = torch.randperm(len(task.X_train), generator=torch.Generator().manual_seed(spec.data_seeds[j]))
    for s in range(len(task.X_train) // 64):
        idx = perm[s * 64 : (s + 1) * 64]
        opt.zero_grad()
        F.cross_entropy(model(task.X_train[idx]), task.y_train[idx]).backward()
        opt.step()
    return spec.layout.flatten({k: v.detach() for k, v in model.state_dict().items()})


def test_population_trains_the_models_plain_torch_trains():
    """Model j of a population ends where plain torch (torch.optim.SGD, same init, lr, wd, data order) ends:
    the premise of bench/population.py's one-at-a-time baseline."""
    from zoo.training.population import train_population

    for arch, name in (("mlp", "digits"), ("cnn", "digits-image")):
        task = load_dataset(name)
        spec = _spec(arch, task, 3)
        result = train_population(spec, task, progress=False)
        for j in range(3):
            mine = plain_torch_epoch(
                spec,
                j,
                task,
                lambda params, lr, wd: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd),
            )
            assert torch.allclose(result.weights[j, -1], mine, atol=1e-5), (arch, j)
            assert not torch.allclose(result.weights[j, 0], mine, atol=1e-2)  # it did train


def test_device_cuda_without_a_gpu_is_a_one_line_error(tmp_path):
    import pytest

    from zoo import ZooError
    from zoo.app.config import compose
    from zoo.app.runtime import resolve_device
    from zoo.training.build import build

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")
    out = tmp_path / "z.zarr"
    for value, words in (("cuda", "torch sees no CUDA GPU"), ("gpu", "expected cpu, cuda, cuda:N or auto")):
        with pytest.raises(ZooError) as e:
            build(compose("build", [f"out={out}", "recipe=tiny", f"device={value}", "progress=false"]))
        assert words in str(e.value) and "\n" not in str(e.value)
        assert not out.exists()


def test_foreach_sgd_step_is_bit_for_bit_the_per_tensor_update():
    """The optimizer's _foreach SGD step (3 dispatches) gives the very bits of the per-tensor loop it replaced."""
    from zoo.training.population_module import PopulationModule

    task = load_dataset("digits")
    spec = _spec("mlp", task, 4)
    spec.weight_decays = [0.0, 1e-3, 5e-4, 1e-2]
    module = PopulationModule(spec, task)
    module.active[2] = False  # a diverged model gets lr 0
    ref_p = [p.detach().clone() for p in module.stacked]
    init = [p.detach().clone() for p in module.stacked]
    ref_buf = [torch.zeros_like(p) for p in ref_p]
    gen = torch.Generator().manual_seed(0)
    for step in range(1, 4):
        grads = [torch.randn(p.shape, generator=gen) for p in module.stacked]
        for p, g in zip(module.stacked, grads):
            p.grad = g.clone()
        module._optimizer_step()
        lr_m = module.lr * 1.0 * module.active.view(-1, 1)
        for k, g in enumerate(grads):  # the per-tensor loop before the _foreach step
            shape = (-1,) + (1,) * (g.dim() - 1)
            g = g.addcmul(ref_p[k], module.wd.view(shape))
            if step == 1:
                ref_buf[k].copy_(g)
            else:
                ref_buf[k].mul_(spec.momentum).add_(g)
            ref_p[k].addcmul_(lr_m.view(shape), ref_buf[k], value=-1.0)
        assert all(torch.equal(p.detach(), r) for p, r in zip(module.stacked, ref_p)), step
        assert all(torch.equal(b, r) for b, r in zip(module.state1, ref_buf)), step
    moved = [not torch.equal(p.detach()[j], q[j]) for p, q in zip(module.stacked, init) for j in range(4)]
    assert moved == [j != 2 for _ in init for j in range(4)]  # all but the diverged model moved


def _adaptive_reference(module, ref_p, ref_s1, ref_s2, grads, lr_m, c1, c2) -> None:
    """The per-tensor Adam/AdamW/RMSprop loop the _foreach step replaced, on copies of the state."""
    spec = module.spec
    for k, g in enumerate(grads):
        p, shape = ref_p[k], (-1,) + (1,) * (g.dim() - 1)
        lr, wd = lr_m.view(shape), module.wd.view(shape)
        if spec.optimizer == "rmsprop":
            g = g.addcmul(p, wd)
            ref_s1[k].mul_(spec.alpha).addcmul_(g, g, value=1 - spec.alpha)
            p.addcmul_(lr, g / ref_s1[k].sqrt().add_(spec.eps), value=-1.0)
            continue
        if spec.optimizer == "adamw":
            p.mul_(1 - lr * wd)
        else:
            g = g.addcmul(p, wd)
        b1, b2 = spec.betas
        ref_s1[k].mul_(b1).add_(g, alpha=1 - b1)
        ref_s2[k].mul_(b2).addcmul_(g, g, value=1 - b2)
        cc1 = c1 if isinstance(c1, float) else c1.view(shape)
        cc2 = c2 if isinstance(c2, float) else c2.view(shape)
        p.addcmul_(lr / cc1, ref_s1[k] / (ref_s2[k] / cc2).sqrt_().add_(spec.eps), value=-1.0)


def test_foreach_adaptive_steps_are_bit_for_bit_the_per_tensor_update():
    """Adam, AdamW and RMSprop as _foreach ops give the very bits of the per-tensor loop they replaced, with
    float bias corrections and with per-model ones (models counting their own steps)."""
    from zoo.training.population_module import PopulationModule

    task = load_dataset("digits")
    for optimizer in ("adam", "adamw", "rmsprop"):
        for own_steps in (False, True):
            spec = _spec("mlp", task, 4, optimizer=optimizer)
            spec.weight_decays = [0.0, 1e-3, 5e-4, 1e-2]
            module = PopulationModule(spec, task)
            module.active[2] = False
            if own_steps:  # what train_fraction sets up: bias corrections from each model's step count
                module._subsets = [torch.arange(64)] * 4
                module._model_steps = torch.tensor([0.0, 3.0, 1.0, 7.0], dtype=torch.float64)
            ref_p = [p.detach().clone() for p in module.stacked]
            ref_s1 = [torch.zeros_like(p) for p in ref_p]
            ref_s2 = [torch.zeros_like(p) for p in ref_p]
            gen = torch.Generator().manual_seed(0)
            for step in range(1, 4):
                grads = [torch.randn(p.shape, generator=gen) for p in module.stacked]
                for p, g in zip(module.stacked, grads):
                    p.grad = g.clone()
                steps_before = module._model_steps.clone()
                module._optimizer_step()
                lr_m = module.lr * 1.0 * module.active.view(-1, 1)
                b1, b2 = spec.betas
                c1: float | torch.Tensor = 1 - b1**step
                c2: float | torch.Tensor = 1 - b2**step
                if own_steps:
                    n = (steps_before + 1).clamp(min=1).view(-1, 1)
                    c1, c2 = (1 - b1**n).float(), (1 - b2**n).float()
                _adaptive_reference(module, ref_p, ref_s1, ref_s2, grads, lr_m, c1, c2)
                case = (optimizer, own_steps, step)
                assert all(torch.equal(p.detach(), r) for p, r in zip(module.stacked, ref_p)), case
                assert all(torch.equal(s, r) for s, r in zip(module.state1, ref_s1)), case
                if optimizer != "rmsprop":
                    assert all(torch.equal(s, r) for s, r in zip(module.state2, ref_s2)), case
            inits = [torch.stack([s[n] for s in spec.init_states]) for n in module.param_names]
            moved = [not torch.equal(p.detach()[j], q[j]) for p, q in zip(module.stacked, inits) for j in range(4)]
            assert moved == [j != 2 for _ in module.stacked for j in range(4)], (optimizer, own_steps)


def test_siren_training_forward_is_bit_for_bit_autograds():
    """A SIREN's training forward (zoo.forward._Sine: the backward in place in the saved w0 z) gives the very
    output and gradients of autograd through the Sine modules, and refuses a second derivative."""
    import pytest

    spec = arch_spec("siren", [2], 1, 32, 2)
    states = [init_state(spec, s) for s in range(6)]
    template = build_model(spec)
    x = torch.rand(64, 2) * 2 - 1
    y = torch.rand(6, 64, 1)

    def run(fused: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        params = {k: torch.stack([s[k] for s in states]).requires_grad_() for k in states[0]}
        if fused:
            out = stacked_mlp_forward(template, params, x, shared_input=True, feature_major=True)
        else:  # the same batched GEMMs, the activation through the template's own modules (autograd's mul + sin)
            h = x.flatten(1).expand(6, *x.shape).transpose(1, 2)
            for i, layer in enumerate(template.layers):
                if isinstance(layer, torch.nn.Linear):
                    h = torch.baddbmm(params[f"layers.{i}.bias"].unsqueeze(-1), params[f"layers.{i}.weight"], h)
                else:
                    h = layer(h)
            out = h.transpose(1, 2)
        ((out - y) ** 2).flatten(1).mean(1).sum().backward()
        return out.detach(), [p.grad for p in params.values()]

    (out, grads), (ref, ref_grads) = run(True), run(False)
    assert torch.equal(out, ref) and all(torch.equal(g, r) for g, r in zip(grads, ref_grads))
    assert all(g.abs().sum() > 0 for g in grads)
    params = {k: torch.stack([s[k] for s in states]).requires_grad_() for k in states[0]}
    out = stacked_mlp_forward(template, params, x, shared_input=True, feature_major=True)
    (g,) = torch.autograd.grad(out.sum(), [params["layers.0.weight"]], create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


def _bench_population():
    """bench/population.py as a module (it is a script beside the package, not part of it)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "bench" / "population.py"
    spec = importlib.util.spec_from_file_location("bench_population", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_device_mode_times_the_population_and_one_at_a_time_on_one_device():
    """The GPU mode of bench/population.py (issue 25 item 4), run on the CPU device: both sides train the same
    models (metric within float32 rounding), and the row's rates follow from its seconds."""
    bench = _bench_population()
    row = bench.run_case_device("grok", bench.CASES["grok"], 4, 2, 1, torch.device("cpu"))
    assert row["device"] == "cpu" and row["models"] == 4 and row["one_at_a_time_sample"] == 2
    assert row["mean_abs_metric_diff_on_sample"] < 1e-3
    assert row["population_models_per_s"] == 4 / row["population_s"]
    assert row["speedup"] == row["one_at_a_time_s_scaled"] / row["population_s"] > 0


def test_bench_device_cuda_without_a_gpu_is_a_one_line_error():
    import subprocess
    import sys
    from pathlib import Path

    if torch.cuda.is_available():
        import pytest

        pytest.skip("a GPU is present: the bench would run")
    root = Path(__file__).resolve().parents[3]
    cmd = [sys.executable, "bench/population.py", "--device", "cuda", "--quick", "--json", "/dev/null"]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "sees no CUDA GPU" in done.stderr
