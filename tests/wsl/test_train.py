"""WeightDataModule, targets, `zoo train` and load-back on a real (tiny) zoo built by the population trainer."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import wsl
import zoo
from wsl.data import WeightDataModule
from wsl.train import train
from zoo.app.config import compose
from zoo.commands.main import main as zoo_main
from zoo.errors import ZooError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """12 digits MLPs (2 widths x 2 learning rates x 3 seeds), 4 checkpoints each."""
    path = tmp_path_factory.mktemp("wsl") / "tiny.zarr"
    cfg = compose(
        "build",
        [
            "recipe=tiny",
            f"out={path}",
            "progress=false",
            "recipe.learning_rates=[0.02,0.2]",
            "recipe.seeds=3",
            "recipe.epochs=4",
            "recipe.checkpoint_epochs=[0,1,2,4]",
        ],
    )
    return zoo.build(cfg)


def test_split_by_model_id_without_leakage(tiny):
    dm = WeightDataModule(tiny, checkpoints="all", seed=3)
    dm.setup()
    s = dm.samples
    per_model = s.groupby("model_id")["split"].nunique()
    assert (per_model == 1).all()  # every checkpoint of a model is in the same split
    ids = {k: set(s.loc[s["split"] == k, "model_id"]) for k in ("train", "val", "test")}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert sum(len(v) for v in ids.values()) == 12 and len(s) == 12 * 4
    seen = np.concatenate([b["row"].numpy() for split in ("train", "val", "test") for b in dm.iter_batches(split)])
    assert sorted(seen.tolist()) == list(range(len(s)))
    same = WeightDataModule(tiny, checkpoints="all", seed=3)
    same.setup()
    assert same.samples["split"].tolist() == s["split"].tolist()
    other = WeightDataModule(tiny, checkpoints="all", seed=4)
    other.setup()
    assert other.samples["split"].tolist() != s["split"].tolist()


def test_batches_are_the_stored_weights_normalized_with_training_statistics(tiny):
    dm = WeightDataModule(tiny, checkpoints=[-1, 1], batch_size=5)
    dm.setup()
    train_rows = dm.rows("train")
    raw = torch.cat(
        [
            dm.space.pad(
                tiny.weights([int(dm.samples.model_id[r])], checkpoint=int(dm.samples.checkpoint[r])),
                int(dm.samples.layout_index[r]),
            )
            for r in range(len(dm.samples))
        ]
    )
    layout = torch.as_tensor(dm.samples["layout_index"].to_numpy().copy())
    mask = dm.space.mask(layout)
    for j, slot in enumerate(dm.space.slots):  # per-tensor statistics of the training split only
        v = raw[train_rows][:, slot.offset : slot.stop][mask[train_rows][:, slot.offset : slot.stop]].double()
        assert dm.normalizer.mean[j] == pytest.approx(float(v.mean()), abs=1e-6)
        assert dm.normalizer.std[j] == pytest.approx(float(v.std(unbiased=False)), rel=1e-5)
    uncached = WeightDataModule(tiny, checkpoints=[-1, 1], batch_size=5, cache=False)
    uncached.setup()
    for split in ("train", "val", "test"):
        for b in uncached.iter_batches(split):
            rows = b["row"]
            assert b["layout"].unique().numel() == 1  # one store read per batch
            expect = dm.normalizer(raw[rows], layout[rows])
            torch.testing.assert_close(b["w"], expect)
            torch.testing.assert_close(dm.batch(rows.numpy())["w"], expect)
            torch.testing.assert_close(dm.normalizer.inverse(b["w"], b["layout"]), raw[rows], rtol=1e-5, atol=1e-6)


def test_per_entry_normalization_standardizes_every_weight_position_over_training_models(tiny):
    """data.normalize=entry (DWSNets' INR normalization): mean 0 / std 1 at every position over the training models
    that have it, padding 0, exact inverse; per tensor leaves a shared initialization's pattern in place."""
    dm = WeightDataModule(tiny, batch_size=5, normalize="entry")
    dm.setup()
    assert dm.normalizer.per == "entry" and len(dm.normalizer.mean) == dm.space.size
    rows = dm.rows("train")
    b = dm.batch(rows)
    mask = dm.space.mask(b["layout"])
    have = mask.sum(0) > 1  # positions of the wider layout only exist in its models
    w = b["w"].double()
    mean = w.sum(0)[have] / mask.sum(0)[have]
    var = (w * w).sum(0)[have] / mask.sum(0)[have] - mean**2
    assert mean.abs().max() < 1e-5 and (var - 1).abs().max() < 1e-4
    assert (b["w"][~mask] == 0).all()
    raw = dm.normalizer.inverse(b["w"], b["layout"])
    torch.testing.assert_close(dm.normalizer(raw, b["layout"]), b["w"], rtol=1e-5, atol=1e-5)
    again = wsl.Normalizer(dm.space, dm.normalizer.mean, dm.normalizer.std)  # what a trained encoder stores
    assert again.per == "entry"
    with pytest.raises(ZooError, match="tensor or entry"):
        WeightDataModule(tiny, normalize="layer")


def test_targets_match_the_store(tiny):
    m = tiny.metrics.set_index(["model_id", "checkpoint"])
    dm = WeightDataModule(tiny, target="generalization_gap", checkpoints="all")
    dm.setup()
    for _, r in dm.samples.iterrows():
        row = m.loc[(r.model_id, r.checkpoint)]
        assert r.target == pytest.approx(row.train_acc - row.test_acc)
    hp = WeightDataModule(tiny, target={"name": "hyperparameter", "column": "learning_rate"})
    hp.setup()
    assert hp.target.classes == ["0.02", "0.2"] and hp.num_classes == 2
    lr = tiny.models.set_index("model_id")["learning_rate"]
    assert all(hp.target.classes[t] == str(lr[i]) for i, t in zip(hp.samples.model_id, hp.samples.target))


def test_missing_targets_and_bad_selections_are_clear_errors(tiny):
    with pytest.raises(ZooError, match="landscape"):
        WeightDataModule(tiny, target="phase").setup()
    with pytest.raises(ZooError, match="no column 'momentum_x'"):
        WeightDataModule(tiny, target={"name": "hyperparameter", "column": "momentum_x"}).setup()
    with pytest.raises(ZooError, match="fewer than two"):
        WeightDataModule(tiny, target={"name": "hyperparameter", "column": "optimizer"}).setup()
    with pytest.raises(ZooError, match="unknown task"):
        WeightDataModule(tiny, target="accuracy")
    with pytest.raises(ZooError, match="out of range"):
        WeightDataModule(tiny, checkpoints=9).setup()
    with pytest.raises(ZooError, match="no trained"):
        WeightDataModule(tiny, query="width > 1000").setup()
    with pytest.raises(ZooError, match="not a zoo|does not exist|not found|no zoo"):
        WeightDataModule("/nonexistent/zoo.zarr")


def test_phase_target_reads_the_landscape_table(tiny, tmp_path):
    import shutil

    path = tmp_path / "phase.zarr"
    shutil.copytree(tiny.path, path)
    z = zoo.open(path)
    zoo.open_writer(path).write_table(
        "landscape", pd.DataFrame({"model_id": range(12), "phase": ["I", "IV-A", "III"] * 4})
    )
    dm = WeightDataModule(z, target="phase")
    dm.setup()
    assert dm.target.classes == ["I", "III", "IV-A"] and len(dm.samples) == 12


def test_cli_errors_are_one_line(tiny, capsys):
    for args, msg in [
        (["encoder=nope", f"zoo={tiny.path}"], "unknown encoder 'nope'"),
        (["task=nope", f"zoo={tiny.path}"], "unknown task 'nope'"),
        (["data.nope=1", f"zoo={tiny.path}"], "nope"),
        (["trainer.nope=1", f"zoo={tiny.path}"], "unknown Trainer argument 'nope'"),
        (["task=phase", f"zoo={tiny.path}", "out=/tmp/never"], "landscape"),
    ]:
        assert zoo_main(["train", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err, err


def test_a_finished_run_is_refused_without_overwrite(tmp_path, capsys):
    """A non-empty run folder (a finished run, or a user's files) is refused in one line before anything is read or
    written, whichever spelling of out; overwrite must be a boolean."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    for args in ([f"out={out}"], ["--out", str(out)], [f"out={out}", "overwrite=false"]):
        assert zoo_main(["train", "zoo=never-read.zarr", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert "already holds a run (notes.txt, summary.json); pass overwrite=true" in err and "\n" not in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps  # nothing touched, nothing added
    (tmp_path / "file").write_text("x")
    assert zoo_main(["train", "zoo=never-read.zarr", f"out={tmp_path / 'file'}", "overwrite=true"]) == 2
    assert "is a file, not a run folder" in capsys.readouterr().err
    assert zoo_main(["train", "zoo=never-read.zarr", f"out={tmp_path / 'new'}", "overwrite=yes"]) == 2
    assert "overwrite='yes' is invalid: expected one of [true, false]" in capsys.readouterr().err


@pytest.mark.slow
def test_zoo_train_end_to_end_and_load_back(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    code = zoo_main(
        [
            "train",
            "encoder=statnn",
            "task=test_accuracy",
            f"zoo={tiny.path}",
            f"out={out}",
            "data.checkpoints=all",
            "trainer.max_epochs=3",
            "augment=permute",
            "trainer.gradient_clip_val=1.0",
        ]
    )
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["test"]) >= {"kendall_tau", "r2", "mse"} and summary["epochs"] == 3
    assert summary["config"]["trainer"]["gradient_clip_val"] == 1.0
    assert summary["task"]["name"] == "test_accuracy"  # summary.json keeps the config group's key
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["val/kendall_tau"].notna().sum() == 3
    ckpt = torch.load(out / "best.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["encoder"] == "statnn"
    assert ckpt["hyper_parameters"]["target"]["name"] == "test_accuracy"
    p = wsl.load(out)
    assert p.target.name == "test_accuracy"
    preds = p.predict(tiny, checkpoint=-1)
    assert list(preds["model_id"]) == list(range(12)) and np.isfinite(preds["prediction"]).all()
    one = p.predict_state_dict(tiny.state_dict(5))
    assert one == pytest.approx(float(preds.loc[preds.model_id == 5, "prediction"].iloc[0]), rel=1e-5)
    # the Hugging Face layout: config.json (plain JSON) + model.safetensors; read back, it predicts the same bits
    hub = p.save_pretrained(tmp_path / "hub")
    assert sorted(f.name for f in hub.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((hub / "config.json").read_text())["hyper_parameters"]["encoder"] == "statnn"
    again = wsl.Predictor.from_pretrained(hub)
    assert again.predict(tiny, checkpoint=-1)["prediction"].tolist() == preds["prediction"].tolist()
    assert wsl.Predictor.from_pretrained(out).predict(tiny)["prediction"].tolist() == preds["prediction"].tolist()
    with pytest.raises(ZooError, match="local folder"):
        wsl.Predictor.from_pretrained("someone/some-encoder")
    (hub / "config.json").write_text('{"generator": "dwf"}')
    with pytest.raises(ZooError, match="not a wsl encoder config"):
        wsl.Predictor.from_pretrained(hub)


def test_zoo_dataset_items_are_the_stored_weights_and_targets(tiny):
    """wsl.ZooDataset(zoo, checkpoint, target): item i is the i-th done model's stored weights at that checkpoint
    (bit for bit) and its target; a DataLoader batches it; bad checkpoints are one-line errors."""
    ds = wsl.ZooDataset(tiny.path, checkpoint=1, target="test_accuracy")
    m = tiny.metrics.set_index(["model_id", "checkpoint"])
    assert len(ds) == 12 and ds.samples["checkpoint"].tolist() == [1] * 12
    for i in range(len(ds)):
        w, y = ds[i]
        mid = int(ds.samples["model_id"][i])
        assert torch.equal(w, tiny.weights([mid], checkpoint=1)[0])
        assert y.dtype == torch.float32 and float(y) == pytest.approx(float(m.loc[(mid, 1), "test_acc"]))
    last = wsl.ZooDataset(tiny, target="generalization_gap")  # checkpoint -1: the last one
    assert not torch.equal(last[0][0], ds[0][0]) and torch.equal(last[0][0], tiny.weights([0], checkpoint=-1)[0])
    narrow = wsl.ZooDataset(tiny, checkpoint=1, query="width == 8")  # one layout: the default collate stacks it
    assert len(narrow) == 6 and set(narrow.samples["layout"]) == {ds.samples["layout"][0]}
    batches = list(torch.utils.data.DataLoader(narrow, batch_size=4))
    assert [len(b[0]) for b in batches] == [4, 2]
    assert torch.equal(batches[1][0][1], narrow[5][0]) and torch.equal(batches[1][1], narrow._y[4:])
    labels = wsl.ZooDataset(tiny, target={"name": "hyperparameter", "column": "width"})
    assert labels[0][1].dtype == torch.long and labels.target.classes == ["8", "16"]
    with pytest.raises(ZooError, match="out of range"):
        wsl.ZooDataset(tiny, checkpoint=9)
    with pytest.raises(ZooError, match="one index"):
        wsl.ZooDataset(tiny, checkpoint="all")
    with pytest.raises(IndexError):
        ds[12]


@pytest.mark.slow
def test_short_training_improves_validation_metric(tiny, tmp_path):
    cfg = compose(
        "train",
        [
            f"zoo={tiny.path}",
            f"out={tmp_path}",
            "encoder=mlp",
            "data.checkpoints=all",
            "trainer.max_epochs=12",
            "data.batch_size=16",
        ],
    )
    summary = train(cfg)
    val = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["val/mse"])["val/mse"].to_numpy()
    assert len(val) == 12 and val[-1] < val[0]
    assert summary["test"]["kendall_tau"] > 0.3


@pytest.mark.slow
def test_hyperparameter_classifier_trains_and_predicts_labels(tiny, tmp_path):
    cfg = compose(
        "train",
        [
            f"zoo={tiny.path}",
            f"out={tmp_path}",
            "encoder=graph",
            "task=hyperparameter",
            "task.column=width",
            "trainer.max_epochs=2",
            "data.checkpoints=[-1]",
        ],
    )
    summary = train(cfg)
    assert 0.0 <= summary["test"]["acc"] <= 1.0
    preds = wsl.load(tmp_path).predict(tiny)
    assert set(preds["prediction"]) <= {"8", "16"}


def test_canonical_weights_from_the_store_feed_batches_and_aligned_mixup(tiny, tmp_path):
    import shutil

    from wsl.symmetry import permute

    path = tmp_path / "canon.zarr"
    shutil.copytree(tiny.path, path)
    z = zoo.open(path)
    dm = WeightDataModule(z, checkpoints=-1)
    dm.setup()
    for key, group in z.models.groupby("layout"):  # stand-in re-basing: a random function-preserving permutation
        ids = group["model_id"].tolist()
        k = dm.space.add_layout(z.layouts[key])
        layout = torch.full((len(ids),), k)
        w = z.weights(ids, checkpoint=None)  # [n, C, P]
        canon = torch.stack(
            [
                dm.space.unpad(permute(dm.space, dm.space.pad(w[:, c], k), layout, torch.Generator().manual_seed(c)), k)
                for c in range(w.shape[1])
            ],
            dim=1,
        )
        zoo.open_writer(z.path).write_canonical(ids, canon)
    canon_dm = WeightDataModule(z, checkpoints=-1, canonical=True)
    canon_dm.setup()
    rows = np.arange(len(canon_dm.samples))
    ids = canon_dm.samples["model_id"].tolist()
    assert not torch.allclose(canon_dm.batch(rows)["w"], dm.batch(rows)["w"])
    for r, i in zip(rows, ids):
        expect = canon_dm.space.pad(z.weights([i], canonical=True), int(canon_dm.samples.layout_index[r]))
        torch.testing.assert_close(
            canon_dm.normalizer.inverse(canon_dm.batch([r])["w"], canon_dm.batch([r])["layout"]),
            expect,
            rtol=1e-5,
            atol=1e-6,
        )
    mix = WeightDataModule(z, checkpoints=-1, augment={"mixup": {"p": 1.0, "mode": "aligned"}})
    mix.setup()
    assert mix._w_canon is not None  # aligned mixup reads the store's re-based weights, no on-the-fly matching
    batch = next(mix.iter_batches("train", augment=True))
    assert torch.isfinite(batch["w"]).all() and batch["y"].shape == (len(batch["w"]),)


def test_bce_loss_predicts_accuracies_in_the_unit_interval_and_refuses_other_targets(tiny, tmp_path):
    base = [f"zoo={tiny.path}", "encoder=statnn", "data.checkpoints=all", "trainer.max_epochs=2", "threads=1"]
    summary = train(compose("train", [*base, f"out={tmp_path / 'bce'}", "task.loss=bce"]))
    assert summary["config"]["task"]["loss"] == "bce" and summary["test"]["kendall_tau"] is not None
    p = wsl.load(tmp_path / "bce")
    preds = p.predict(tiny, checkpoint=-1)["prediction"].to_numpy()
    assert ((preds > 0) & (preds < 1)).all() and preds.std() > 0  # a sigmoid, not a standardized regression
    y, logits = torch.tensor([0.0, 0.5, 1.0]), torch.tensor([[-1.0], [0.0], [2.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y)
    assert float(p.model._loss(logits, y)) == pytest.approx(float(expected))
    log_lr = ["task=hyperparameter", "task.regression=true", "task.log=true", "+task.loss=bce"]  # log10(lr) < 0
    with pytest.raises(ZooError, match=r"task.loss=bce needs targets in \[0, 1\]"):
        train(compose("train", [*base, f"out={tmp_path / 'lr'}", *log_lr]))
    with pytest.raises(ZooError, match="loss bce fits regression targets"):
        train(compose("train", [*base, f"out={tmp_path / 'cls'}", "task=hyperparameter", "+task.loss=bce"]))
    with pytest.raises(ZooError, match="task.loss='hinge' is invalid"):
        train(compose("train", [*base, f"out={tmp_path / 'bad'}", "task.loss=hinge"]))


def test_trainer_logger_false_writes_no_metrics_csv_and_a_bad_logger_touches_nothing(tiny, tmp_path, capsys):
    """trainer.logger=false: no metrics.csv, the run still ends with summary.json (nothing reads metrics.csv);
    an unknown or missing logger is one line, exit 2, before the run folder exists."""
    out = tmp_path / "quiet"
    args = ["train", "encoder=statnn", f"zoo={tiny.path}", "trainer.max_epochs=1"]
    assert zoo_main([*args, f"out={out}", "trainer.logger=false"]) == 0, capsys.readouterr().err
    assert (out / "summary.json").is_file() and not (out / "metrics.csv").exists()
    capsys.readouterr()
    expected = "is invalid: expected csv, tensorboard, a list of them, or false"  # train.yaml's schema, like fit's
    for k, (value, words) in enumerate(
        (("nope", f"trainer.logger='nope' {expected}"), ("[csv,nope]", f"trainer.logger=['csv', 'nope'] {expected}"))
    ):
        never = tmp_path / f"never-{k}"
        assert zoo_main([*args, f"out={never}", f"trainer.logger={value}"]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err and not never.exists()
