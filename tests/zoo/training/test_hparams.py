"""recipe.hparams (zoo.training.hparams): per-model draws, what each model trains with, rmsprop/adam in the fused
step, old CNN specs unchanged, bad configs as one line, and the protocol recipe end to end through the CLI."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import zoo
from tests.conftest import run_cli
from tests.zoo.training.test_population import plain_torch_epoch
from zoo import ZooError
from zoo.app.config import compose
from zoo.arch import MaskedDropout, arch_spec, build_model
from zoo.datasets import load_dataset
from zoo.layout import layout_of
from zoo.training import hparams as hp
from zoo.training.build import check_build_config, make_build_plan
from zoo.training.recipe import load_recipe_datasets

PROTOCOL = "recipe=cnn-zoo-digits"
# 12 tanh CNNs of the protocol on digits, 2 epochs: all three optimizers, dropout and fractions mixed in a population
SMALL = [PROTOCOL, "progress=false", "recipe.seeds=12", "recipe.epochs=2", "recipe.checkpoint_epochs=[0,1,2]"]
SMALL += ["recipe.hparams.activation=tanh"]


def _build(out, *overrides: str) -> zoo.Zoo:
    return zoo.build(compose("build", [f"out={out}", *SMALL, *overrides]))


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> zoo.Zoo:
    return _build(tmp_path_factory.mktemp("hp") / "z.zarr")


def test_draws_are_deterministic_independent_and_within_their_ranges():
    cfg = compose("build", ["out=/nonexistent.zarr", PROTOCOL, "recipe.seeds=400"])
    data = load_recipe_datasets(cfg["recipe"])
    plan = make_build_plan(cfg, data)
    df = plan.models_table(cfg["recipe"])
    assert len(df) == 400 and df.learning_rate.nunique() == 400
    for col, lo, hi in (
        ("learning_rate", 5e-4, 5e-2),
        ("weight_decay", 1e-8, 1e-2),
        ("init_std", 1e-3, 0.5),
        ("dropout", 0.0, 0.7),
    ):
        assert df[col].between(lo, hi).all(), col
    assert set(df.optimizer) == {"sgd", "adam", "rmsprop"} and set(df.activation) == {"relu", "elu", "sigmoid", "tanh"}
    assert set(df.train_fraction) == {0.1, 0.25, 0.5, 1.0}
    assert set(df.init) == {"truncated_normal", "he_normal", "glorot_uniform"}
    # log-uniform: the median of log10(lr) sits mid-way between log10(5e-4) and log10(5e-2), i.e. at -2.3
    assert abs(np.median(np.log10(df.learning_rate)) - math.log10(5e-3)) < 0.12
    assert abs(df.dropout.mean() - 0.35) < 0.04  # uniform [0, 0.7]
    # independent: knowing one hyperparameter's draw tells nothing of another's
    assert abs(np.corrcoef(np.log(df.learning_rate), df.dropout)[0, 1]) < 0.15
    again = make_build_plan(cfg, data).models_table(cfg["recipe"])
    assert again.equals(df)  # same config, same draws
    shifted = compose("build", ["out=/nonexistent.zarr", PROTOCOL, "recipe.seeds=400", "recipe.seed_offset=1"])
    other = make_build_plan(shifted, data).models_table(shifted["recipe"])
    assert not np.allclose(other.learning_rate, df.learning_rate)
    # a population never mixes optimizers or activations
    for pop in plan.populations:
        assert len({(plan.models[i].optimizer, plan.models[i].arch["activation"]) for i in pop}) == 1


def test_old_cnn_specs_and_layouts_are_unchanged():
    """stride, padding and dropout appear in a spec only when not default: zoos built before keep their keys."""
    for bn, key in ((True, "cnn-da2a315dfe"), (False, "cnn-9a09d958d5")):  # keys written by the code before
        spec = arch_spec("cnn", [1, 8, 8], 10, 16, 3, "relu", bn, 3)
        assert spec == {
            "name": "cnn",
            "input_shape": [1, 8, 8],
            "num_outputs": 10,
            "width": 16,
            "depth": 3,
            "activation": "relu",
            "batchnorm": bn,
            "kernel_size": 3,
        }
        assert layout_of(build_model(spec), spec).key() == key
    spec = arch_spec("cnn", [1, 28, 28], 10, 16, 3, "relu", False, 3, stride=2, padding="valid", dropout=True)
    assert spec["stride"] == 2 and spec["padding"] == "valid" and spec["dropout"] is True
    m = build_model(spec)
    assert layout_of(m, spec).size == 4970  # the Small CNN Zoo's parameter count
    x = torch.randn(2, 1, 28, 28)
    assert [t.shape[-1] for t in _conv_outputs(m, x)] == [13, 6, 2]  # 28 -> 13 -> 6 -> 2, as Keras' valid stride 2
    m.eval()
    plain = torch.nn.Sequential(*[layer for layer in m.features if not isinstance(layer, MaskedDropout)])
    with torch.no_grad():  # dropout holds no state of the layout and is the identity in eval mode
        assert torch.equal(m(x), m.head(m.pool(plain(x)).flatten(1)))
        assert m.features[2].mask.shape == () and "features.2.mask" not in m.state_dict()
    with pytest.raises(ZooError, match="shrinks to nothing"):
        build_model(arch_spec("cnn", [1, 8, 8], 10, 16, 3, "relu", False, 3, stride=2, padding="valid"))


def _conv_outputs(m, x):
    outs = []
    hooks = [
        c.register_forward_hook(lambda _m, _i, o: outs.append(o)) for c in m.modules() if isinstance(c, torch.nn.Conv2d)
    ]
    m(x)
    for h in hooks:
        h.remove()
    return outs


def test_init_rule_is_a_pure_function_of_seed_and_spec():
    spec = arch_spec("cnn", [1, 8, 8], 10, 16, 3, "relu", False, 3)
    a = hp.init_state(spec, 3, "truncated_normal", 0.2)
    assert all(torch.equal(v, hp.init_state(spec, 3, "truncated_normal", 0.2)[k]) for k, v in a.items())
    w = torch.cat([v.flatten() for k, v in a.items() if k.endswith("weight")])
    assert w.abs().max() <= 0.4 and abs(w.std().item() - 0.2 * 0.88) < 0.01  # truncated at 2 std: std x 0.88
    assert all((v == 0).all() for k, v in a.items() if k.endswith("bias"))
    assert not torch.equal(a["head.weight"], hp.init_state(spec, 4, "truncated_normal", 0.2)["head.weight"])
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    hp.init_state(spec, 3, "he_normal")
    assert torch.equal(torch.rand(1), before)  # global RNG untouched


def _plain_torch(row, layout, task, epochs: int, init_scale: float = 1.0) -> torch.Tensor:
    """One model trained alone with torch.optim from its models-table row (the documented rules: init, data
    order from 1_000_003 + seed, its own subset and epoch, dropout masks from its own generator)."""
    model = layout.build()
    init = hp.init_state(layout.arch, int(row.seed), row.init, float(row.init_std))
    model.load_state_dict({k: v * init_scale for k, v in init.items()})
    lr, wd = float(row.learning_rate), float(row.weight_decay)
    opt = {
        "sgd": lambda p: torch.optim.SGD(p, lr=lr, weight_decay=wd),
        "adam": lambda p: torch.optim.Adam(p, lr=lr, weight_decay=wd),
        "rmsprop": lambda p: torch.optim.RMSprop(p, lr=lr, alpha=0.99, eps=1e-8, weight_decay=wd),
    }[row.optimizer](model.parameters())
    b = int(row.batch_size)
    subset = hp.train_subset(len(task.X_train), float(row.train_fraction), int(row.seed))
    assert len(subset) == max(1, round(float(row.train_fraction) * len(task.X_train)))
    steps = max(1, len(subset) // b)
    g = torch.Generator().manual_seed(1_000_003 + int(row.seed))
    gd = torch.Generator().manual_seed(hp.dropout_seed(int(row.seed)))
    sites = [m for m in model.modules() if isinstance(m, MaskedDropout)]
    shapes = [o.shape[1:] for o in _conv_outputs(model.eval(), task.X_train[:1])]  # each dropout follows a conv
    p = float(row.dropout)
    for _ in range(epochs):
        perm = subset[torch.randperm(len(subset), generator=g)]
        perm = perm.repeat(-(-steps * b // len(subset)))[: steps * b]
        for s in range(steps):
            idx = perm[s * b : (s + 1) * b]
            model.train()
            for site, shape in zip(sites, shapes):
                site.mask = (torch.rand((b, *shape), generator=gd) >= p).float() / (1 - p) if p > 0 else torch.ones(())
            opt.zero_grad()
            F.cross_entropy(model(task.X_train[idx]), task.y_train[idx]).backward()
            opt.step()
    return layout.flatten({k: v.detach() for k, v in model.state_dict().items()})


def test_every_model_trained_with_its_recorded_hyperparameters(small):
    """Rebuild each model from its row alone and train it one by one in plain torch: it ends where the population
    (mixed optimizers, learning rates, L2, dropout rates and subsets, with sit-outs) put it."""
    df = small.models
    assert set(df.optimizer) == {"sgd", "adam", "rmsprop"}
    assert (df.dropout > 0.05).any() and (df.train_fraction < 1).any() and (df.train_fraction == 1).any()
    pops = df.groupby("population").train_fraction.nunique()
    assert (pops > 1).any()  # some population mixes fractions: its short-epoch models sit steps out
    task = small.dataset()
    tight = 0
    for row in df.itertuples():
        assert row.status == "done"
        layout = small.layouts[row.layout]
        init = layout.flatten(hp.init_state(layout.arch, int(row.seed), row.init, float(row.init_std)))
        assert torch.equal(small.weights([row.model_id], checkpoint=0)[0], init)
        mine = _plain_torch(row, layout, task, epochs=2)
        stored = small.weights([row.model_id], checkpoint=-1)[0]
        scale = float(stored.abs().max())
        # float32 rounding alone moves some runs far (Adam at a high rate from a tiny init amplifies a 1e-7 change
        # of the init to ~5e-3): the tolerance is what plain torch itself does when its init moves by 1e-7
        chaos = (mine - _plain_torch(row, layout, task, epochs=2, init_scale=1 + 1e-7)).abs().max().item()
        diff = (stored - mine).abs().max().item()
        assert diff <= max(2e-5 * scale, 4 * chaos), (row.model_id, diff, chaos)
        tight += diff <= 2e-5 * scale
        assert (stored - init).abs().max().item() > 10 * max(diff, 1e-6)  # it did train, far beyond the difference
    assert tight >= len(df) - 2  # most runs are not chaotic: they agree to float32 rounding


TORCH_OPTIM = {
    "adam": lambda params, lr, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    "adamw": lambda params, lr, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
    "rmsprop": lambda params, lr, wd: torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=1e-8, weight_decay=wd),
}


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "rmsprop"])
def test_fused_step_follows_torch_optim(optimizer):
    """The fused [M, ...] step of Adam (L2), AdamW (decoupled decay) and RMSprop (L2) equals torch.optim's on each
    model alone; AdamW's decay is large enough here that Adam's coupled L2 would land elsewhere."""
    from zoo.training.population import train_population
    from zoo.training.recipe import init_state
    from zoo.training.spec import PopulationSpec

    task = load_dataset("digits-image")
    spec_d = arch_spec("cnn", task.input_shape, 10, 8, 2, "tanh", False, 3)
    n = 3
    spec = PopulationSpec(
        template=build_model(spec_d),
        layout=layout_of(build_model(spec_d), spec_d),
        init_states=[init_state(spec_d, s) for s in range(n)],
        learning_rates=[1e-3 * (1 + 3 * i) for i in range(n)],
        weight_decays=[0.0, 1e-3, 1e-2] if optimizer != "adamw" else [0.0, 0.1, 1.0],
        data_seeds=[11 + s for s in range(n)],
        batch_size=64,
        epochs=1,
        checkpoint_epochs=[0, 1],
        optimizer=optimizer,
    )
    result = train_population(spec, task, progress=False)
    for j in range(n):
        mine = plain_torch_epoch(spec, j, task, TORCH_OPTIM[optimizer])
        assert torch.allclose(result.weights[j, -1], mine, rtol=1e-4, atol=1e-5), (optimizer, j)
        assert not torch.allclose(result.weights[j, 0], mine, atol=1e-3)
        if optimizer == "adamw" and spec.weight_decays[j] > 0:  # decoupled: not Adam with the same L2
            coupled = plain_torch_epoch(spec, j, task, TORCH_OPTIM["adam"])
            assert not torch.allclose(coupled, mine, rtol=1e-3, atol=1e-4), j


def test_same_config_same_bits_and_columns_are_targets(small, tmp_path):
    again = _build(tmp_path / "again.zarr")
    assert torch.equal(again.weights(list(range(12)), checkpoint=None), small.weights(list(range(12)), checkpoint=None))
    from wsl.targets import target_spec, targets

    samples = small.models[["model_id"]].assign(checkpoint=2)
    for col in ("optimizer", "train_fraction", "init"):
        spec = target_spec({"name": "hyperparameter", "column": col})
        out = targets(small, spec, samples)
        assert len(out) == 12 and len(spec.classes) == small.models[col].nunique()
    spec = target_spec({"name": "hyperparameter", "column": "learning_rate", "regression": True, "log": True})
    out = targets(small, spec, samples).set_index("model_id")
    lr = small.models.set_index("model_id").learning_rate
    assert spec.kind == "regression" and np.allclose(out.target, np.log10(lr[out.index]))
    with pytest.raises(ZooError, match="not numeric"):
        targets(small, target_spec({"name": "hyperparameter", "column": "optimizer", "regression": True}), samples)
    with pytest.raises(ZooError, match="needs regression=true"):
        target_spec({"name": "hyperparameter", "column": "dropout", "log": True})


@pytest.mark.parametrize(
    "name, dist, needle",
    [
        ("dropout", {"beta": [0.1, 0.2]}, "expected one of {log_uniform"),
        ("dropout", {"uniform": [0.1, 0.2], "choice": [0.1]}, "names 2 distributions: give one"),
        ("learning_rate", {"uniform": [0.1, 0.01]}, "low 0.1 > high 0.01"),
        ("weight_decay", {"log_uniform": [0.0, 0.01]}, "both bounds must be positive"),
        ("train_fraction", {"uniform": [0.5, 1.5]}, "expected a number in (0.0, 1.0]"),
        ("train_fraction", {"choice": [0.0, 1.0]}, "expected a number in (0.0, 1.0]"),
        ("train_fraction", {"choice": []}, "choice is empty"),
        ("dropout", 1.0, "expected a number in [0.0, 1.0)"),
        ("init_std", {"log_uniform": [0.1]}, "expected [low, high]"),
        ("optimizer", {"choice": ["sgd", "lbfgs"]}, "expected one of ['sgd'"),
        ("activation", {"uniform": [0, 1]}, "categorical"),
        ("momentum", 0.9, "unknown hyperparameter recipe.hparams.momentum"),
    ],
)
def test_bad_distribution_configs_are_one_line_errors(name, dist, needle):
    cfg = compose("build", ["out=/nonexistent.zarr", PROTOCOL])
    cfg["recipe"]["hparams"][name] = dist
    with pytest.raises(ZooError) as e:
        check_build_config(cfg)
    assert needle in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ZooError, match="recipe.padding='full' is invalid"):
        check_build_config(compose("build", ["out=/nonexistent.zarr", PROTOCOL, "recipe.padding=full"]))


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["recipe.arch=mlp", "recipe.dataset=digits"], "needs arch cnn"),
        (["+recipe.sample_hparams=true"], "are both given"),
    ],
)
def test_hparams_that_do_not_fit_the_recipe_are_one_line_errors(tmp_path, overrides, needle):
    out = tmp_path / "z.zarr"
    with pytest.raises(ZooError) as e:
        zoo.build(compose("build", [f"out={out}", PROTOCOL, "progress=false", *overrides]))
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert not out.exists()


def test_cli_builds_the_protocol_recipe_small(tmp_path, capsys):
    out = tmp_path / "p.zarr"
    cmd = ["build", PROTOCOL, f"out={out}", "progress=false"]
    cmd += ["recipe.seeds=6", "recipe.epochs=1", "recipe.checkpoint_epochs=[0,1]"]
    rc, _, err = run_cli(capsys, *cmd)
    assert rc == 0, err
    z = zoo.open(str(out))
    assert len(z.models) == 6 and (z.models.status == "done").all() and len(z.checkpoint_epochs) == 2
    cols = {"optimizer", "learning_rate", "weight_decay", "init", "init_std", "dropout", "train_fraction", "activation"}
    assert cols <= set(z.models.columns)
    rc, _, err = run_cli(capsys, *cmd[:-3], "recipe.hparams.weight_decay={log_uniform:[0,0.1]}")
    assert rc != 0 and len(err.strip().splitlines()) == 1 and "positive" in err
