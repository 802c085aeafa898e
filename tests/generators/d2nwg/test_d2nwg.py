"""D2NWG: dataset-conditioned latent diffusion over weights.

A toy family with known optimal weights: 2-D two-class tasks whose classes sit at +-2 u(theta) (u a unit
vector at angle theta), learned by logistic regression (a depth-0 MLP). The Bayes-optimal direction of
task theta is u(theta), so a generator that listens to its condition must give each task its own direction.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import generators
import zoo
from generators.d2nwg.dataset_encoder import ClassPools, DatasetEncoder
from generators.d2nwg.model import D2NWG
from tests.generators.devices import check_device_paths
from zoo.commands.main import main as zoo_main

ANGLES = [0, 30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 330]  # degrees: one task each
SEEDS = 3
FAST = {
    "vae_steps": 300,
    "latent_per_chunk": 6,
    "encoder_hidden": 32,
    "embed_dim": 32,
    "inducing_points": 8,
    "heads": 2,
    "hidden": 128,
    "blocks": 2,
    "time_dim": 32,
    "ddim_steps": 20,
    "val_samples": 8,
    "batch_size": 64,
    "val_fraction": 0.1,
    "lr": 0.002,
    "ema_decay": 0.99,
}


def write_task(path, degrees: float, n: int = 200, seed: int = 0, features: int = 2, classes: int = 2) -> str:
    """An .npz task: classes at +-2 u(theta) with unit Gaussian noise (features/classes changeable for bad inputs)."""
    rng = np.random.default_rng(seed)
    u = np.zeros(features)
    u[:2] = [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]
    y = rng.integers(0, classes, size=n)
    X = (2 * (2 * (y[:, None] % 2) - 1) * u + rng.standard_normal((n, features))).astype(np.float32)
    np.savez(path, X_train=X[: n * 3 // 4], y_train=y[: n * 3 // 4], X_test=X[n * 3 // 4 :], y_test=y[n * 3 // 4 :])
    return str(path)


def logistic_regression(data: zoo.Dataset, seed: int, steps: int = 150) -> dict[str, torch.Tensor]:
    """A depth-0 MLP trained by full-batch gradient descent from a seeded init."""
    torch.manual_seed(seed)
    model = zoo.build_model(zoo.arch_spec("mlp", [2], 2, 1, 0))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(data.X_train), data.y_train).backward()
        opt.step()
    return model.state_dict()


def make_toy_zoo(d) -> str:
    """The toy family as a zoo in folder ``d``: one .npz per angle, SEEDS logistic regressions each."""
    data = [zoo.load_dataset(write_task(d / f"task{a:03d}.npz", a, seed=a)) for a in ANGLES]
    spec = zoo.arch_spec("mlp", [2], 2, 1, 0)
    layout = zoo.layout_of(zoo.build_model(spec), spec)
    rows, weights = [], []
    for task in data:
        for s in range(SEEDS):
            weights.append(layout.flatten(logistic_regression(task, s)))
            rows.append({"arch": "mlp", "dataset": task.location, "seed": s})
    w = torch.stack(weights)
    metrics = np.stack(
        [
            np.stack(
                [
                    zoo.evaluate(layout, w[i : i + 1], data[i // SEEDS], split)[k].numpy()
                    for split in ("train", "test")
                    for k in ("loss", "acc")
                ],
                -1,
            )
            for i in range(len(w))
        ]
    )  # [n, 1, 4]
    path = str(d / "toy.zarr")
    writer = zoo.create(
        path,
        pd.DataFrame(rows),
        {layout.key(): layout},
        [0],
        ["train_loss", "train_acc", "test_loss", "test_acc"],
        datasets=data,
    )
    writer.write(list(range(len(w))), w[:, None], metrics)
    return path


@pytest.fixture(scope="module")
def toy_zoo(tmp_path_factory) -> str:
    return make_toy_zoo(tmp_path_factory.mktemp("d2nwg-toy"))


@pytest.fixture(scope="module")
def run(toy_zoo, tmp_path_factory) -> D2NWG:
    out = tmp_path_factory.mktemp("d2nwg-run")
    return generators.fit(
        "d2nwg",
        toy_zoo,
        out=str(out),
        seed=0,
        steps_per_epoch=100,
        snapshot_every_n_steps=0,
        **{"trainer.max_epochs": 4, "trainer.enable_progress_bar": False},
        **FAST,
    )


def _direction(flat: torch.Tensor) -> torch.Tensor:
    """Unit decision direction (w_1 - w_0) of depth-0 MLPs [n, 6] -> [n, 2]."""
    w = flat[:, :4].reshape(-1, 2, 2)
    d = w[:, 1] - w[:, 0]
    return d / d.norm(dim=1, keepdim=True)


@pytest.mark.slow
def test_conditioning_matters(run, toy_zoo):
    """Samples for two tasks differ, point along their own task's optimal direction, and fit their own task
    better than the other's."""
    z = zoo.open(toy_zoo)
    a, b = (next(t for t in z.datasets if t.endswith(f"task{deg:03d}.npz")) for deg in (0, 90))
    da, db = z.dataset(a), z.dataset(b)
    wa, _ = run.sample_flat(32, seed=0, condition=a)
    wb, _ = run.sample_flat(32, seed=0, condition=b)
    ua, ub = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert float((_direction(wa) @ ua).mean()) > 0.8 and float((_direction(wb) @ ub).mean()) > 0.8
    assert float((_direction(wa) - _direction(wb)).norm(dim=1).mean()) > 0.5
    acc = {
        (s, t): float(zoo.evaluate(run.layout, w, d, "test")["acc"].mean())
        for s, w in (("a", wa), ("b", wb))
        for t, d in (("a", da), ("b", db))
    }
    assert acc["a", "a"] > acc["a", "b"] + 0.15 and acc["b", "b"] > acc["b", "a"] + 0.15
    assert acc["a", "a"] > 0.85 and acc["b", "b"] > 0.85  # Bayes accuracy 0.977


@pytest.mark.slow
def test_save_load_identical_samples(run, toy_zoo, tmp_path):
    name = zoo.open(toy_zoo).datasets[0]
    first, _ = run.sample_flat(5, seed=3, condition=name)
    again, _ = generators.load(run.run_dir).sample_flat(5, seed=3, condition=name)
    assert torch.equal(first, again)
    other, _ = run.sample_flat(5, seed=4, condition=name)
    assert not torch.equal(first, other)


@pytest.mark.slow
def test_unseen_npz_dataset_end_to_end(run, tmp_path, capsys):
    """A task the generator never saw (45 degrees), from a user's .npz, through `zoo sample --dataset`."""
    path = write_task(tmp_path / "mine.npz", 45, seed=99)
    out = str(tmp_path / "samples.zarr")
    assert zoo_main(["sample", str(run.run_dir), "--dataset", path, "--shots", "5", "-n", "12", "--out", out]) == 0
    s = zoo.open(out)
    models = s.models
    assert (models["dataset"] == path).all() and (models["status"] == "done").all()
    assert s.datasets == [path] and s.dataset().fingerprint == zoo.load_dataset(path).fingerprint
    assert models["test_acc"].mean() > 0.85  # direction 45 degrees lies between trained tasks
    assert "5 shots" in s.attrs["generator"]["condition"]
    d = _direction(s.weights(list(range(12))))
    u = torch.tensor([math.cos(math.pi / 4), math.sin(math.pi / 4)])
    assert float((d @ u).mean()) > 0.8


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind, message",
    [
        ("features", "inputs of shape (3,), but the zoo's architecture takes (2,)"),
        ("classes", "has 3 classes, but the zoo's architecture has 2 outputs"),
        ("zero-shots", "shots must be a positive integer"),
        ("unknown", "unknown dataset 'no-such-task'"),
        ("few", "fewer than 500 shots"),
        ("no-dataset", "give one"),
    ],
)
def test_bad_inputs_one_line_errors(run, tmp_path, capsys, kind, message):
    good = write_task(tmp_path / "good.npz", 10)
    argv = {
        "features": ["--dataset", write_task(tmp_path / "f3.npz", 10, features=3)],
        "classes": ["--dataset", write_task(tmp_path / "c3.npz", 10, classes=3)],
        "zero-shots": ["--dataset", good, "--shots", "0"],
        "unknown": ["--dataset", "no-such-task"],
        "few": ["--dataset", good, "--shots", "500"],
        "no-dataset": [],
    }[kind]
    assert zoo_main(["sample", str(run.run_dir), "-n", "2", "--out", str(tmp_path / "s.zarr"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("zoo sample: error:") and message in err, err


def test_set_encoder_invariances():
    """Shuffling shots within a class or listing order changes nothing; swapping two classes' labels does."""
    torch.manual_seed(0)
    enc = DatasetEncoder(features=4, classes=3, hidden=16, embed_dim=8, heads=2, inducing=4).eval()
    x = torch.randn(2, 3, 5, 4)
    base = enc(x)
    shuffled = x[:, :, torch.randperm(5)]
    assert torch.allclose(enc(shuffled), base, atol=1e-5)
    swapped = x[:, [1, 0, 2]]
    assert (enc(swapped) - base).abs().max() > 1e-3


def test_class_pools_draw_distinct_training_examples():
    X = torch.arange(40, dtype=torch.float32).reshape(20, 2)
    y = torch.tensor([0] * 8 + [1] * 12)
    data = zoo.Dataset("t", X, y, X[:2], y[:2], "classification", 2, "f")
    pools = ClassPools([data], 2)
    s = pools.draw(torch.zeros(3, dtype=torch.int64), 6, torch.Generator().manual_seed(0))  # [3, 2, 6, 2]
    assert s.shape == (3, 2, 6, 2)
    rows = (s[..., 0] / 2).long()  # row index of each drawn example
    assert (rows[:, 0] < 8).all() and (rows[:, 1] >= 8).all()  # class k draws only class-k rows
    assert all(len(set(r.tolist())) == 6 for r in rows.reshape(-1, 6))  # without replacement


def test_label_permutation_is_a_true_pair(run, toy_zoo):
    """Relabeled support sets come with classifier output units permuted alike: the permuted net's logits are the
    original's with columns swapped."""
    x = run.encode(zoo.open(toy_zoo).weights([0, 1, 2])[:, run.param_mask])
    support = torch.randn(3, 2, 5, 2)
    run.config["label_permutation"] = 1.0
    xp, sp = run._permute_labels(x, support, torch.Generator().manual_seed(1))
    run.config["label_permutation"] = 0.5
    X = torch.randn(7, 2)
    for i in range(3):
        swapped = bool((sp[i, 0] == support[i, 1]).all())
        assert swapped or bool((sp[i, 0] == support[i, 0]).all())
        out = zoo.predict(run.layout, run.full_weights(x[i : i + 1] * run.scale + run.mean), X)[0]
        outp = zoo.predict(run.layout, run.full_weights(xp[i : i + 1] * run.scale + run.mean), X)[0]
        assert torch.allclose(outp, out[:, [1, 0]] if swapped else out, atol=1e-5)


@pytest.mark.slow
def test_device_cpu_is_the_default_bits_and_generate_stays_on_the_device(run, toy_zoo):
    """``device="cpu"`` gives the default's bits; the dataset embedding, the DDIM loop (latents, time steps, modes)
    and the decoder make every tensor on the generator's device (checked on the meta device: no GPU here)."""
    check_device_paths(run, 3, condition=zoo.open(toy_zoo).datasets[0])


def test_fit_and_sample_steps_make_every_tensor_on_the_generators_device(toy_zoo):
    """A d2nwg on a GPU: its training loss (support sets, label permutation, guidance dropout, noise, time steps), the
    dataset embedding and generation make every tensor on the module's device (checked on the meta device, which
    refuses a CPU tensor mixed in as CUDA does); the draws stay on the CPU, so the CPU's bits are unchanged."""
    import copy

    from zoo.app.config import compose

    over = {**FAST, "vae_steps": 3, "label_permutation": 0.5, "cond_dropout": 0.5, "residual": True}
    gcfg = dict(compose("fit", ["generator=d2nwg", *(f"generator.{k}={v}" for k, v in over.items())])["generator"])
    models = D2NWG.load_training_models(toy_zoo, gcfg, 0)
    mask = models.layout.parameter_mask()
    g = D2NWG.from_data(gcfg, {**models.info, "shared": models.shared}, models.train[:, mask], models.train.mean(0))
    x, cond = g.encode(models.train[:6, mask]), models.train_condition[:6]

    def loss(module: D2NWG, device: str) -> torch.Tensor:
        gen = torch.Generator().manual_seed(3)
        return module._diffusion_loss(x.to(device), cond.to(device), gen, drop=0.5, augment=True)

    assert torch.equal(loss(g, "cpu"), loss(g, "cpu")) and loss(g, "cpu").isfinite()
    meta = copy.deepcopy(g).to("meta")
    assert loss(meta, "meta").device.type == "meta"
    assert g._pools is not None and g._pools.X.device.type == "cpu"  # the copy's pools moved, not these
    data = zoo.open(toy_zoo).datasets[0]
    meta._condition_index(2, data, torch.Generator().manual_seed(0))  # a generator already on its device embeds
    assert meta._embedding is not None and meta._embedding.device.type == "meta"
    out = meta.generate(2, torch.Generator().manual_seed(0), None)
    assert out.device.type == "meta" and tuple(out.shape) == (2, int(mask.sum()))
