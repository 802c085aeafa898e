"""Train a weight encoder on a zoo: ``train(cfg) -> summary``, callable from Python; ``zoo train`` is its command.

``cfg`` is a composed ``conf/train.yaml`` (groups encoder/, task/ (the target), augment/); training runs in a Lightning
Trainer (``trainer.*`` keys go to it) and writes to ``data/runs/<name>/`` (or ``out=DIR``): ``best.ckpt``
(best validation epoch), ``metrics.csv`` (per-epoch metrics) and ``summary.json`` (test metrics of the best
checkpoint, split sizes and the resolved config). A run folder that already holds anything is refused unless
``overwrite=true`` or it is an interrupted run (``INCOMPLETE``), so a finished run is never replaced silently.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import ModelCheckpoint

from wsl.augment import AugmentConfig
from wsl.data import WeightDataModule
from wsl.encoders import check_encoder_config
from wsl.lit import WeightModel
from wsl.predict import CHECKPOINT_NAME, load_model
from wsl.targets import TaskConfig
from zoo.app.checks import number, one_of, optional, typed
from zoo.app.runtime import THREADS, device_rule, torch_threads, with_device
from zoo.app.schema import Schema, group, key, section, validate
from zoo.app.trainer import make_trainer, quiet_fit
from zoo.app.trainer_config import TrainerConfig, epochs_rule
from zoo.errors import ZooError

INCOMPLETE = "INCOMPLETE"  # in a run folder while its run has not finished (interrupted or failed)


def _split(v: Any) -> str | None:
    ok = (
        isinstance(v, (list, tuple))
        and len(v) == 3
        and all(number(float, 0)(x) is None for x in v)
        and all(x > 0 for x in v)
        and abs(sum(v) - 1) < 1e-6
    )
    return None if ok else "three positive fractions (train, val, test) summing to 1"


def _checkpoints(v: Any) -> str | None:
    ok = (
        v == "all"
        or number(int)(v) is None
        or (isinstance(v, (list, tuple)) and v and all(number(int)(x) is None for x in v))
    )
    return None if ok else "an index, a non-empty list of indices or 'all'"


@dataclass(frozen=True)
class DataConfig(Schema):
    """train.yaml's ``data:``: which weights, how they are split and batched."""

    WHERE = "data."

    checkpoints: Any = key(-1, _checkpoints, 'an index, a list of indices (negative from the end) or "all"')
    canonical: bool = key(False, one_of(True, False), "read re-based weights (needs `zoo align` first)")
    split: list[float] = key([0.7, 0.15, 0.15], _split, "train / val / test fractions of model ids")
    batch_size: int = key(64, number(int, 1), "models per batch")
    cache: bool | str = key(
        "auto",
        one_of(True, False, "auto"),
        "true | false | auto: keep the selection in memory when it fits cache_limit_mb",
    )
    cache_limit_mb: float = key(2048, number(float, 0), "the memory the cached selection may take")
    query: str | None = key(
        None,
        optional(typed(str, "a string")),
        'filter over the models table that runs no code, e.g. "width >= 16 and learning_rate < 0.1"',
    )
    buffers: bool = key(True, one_of(True, False), "include BatchNorm running statistics")
    normalize: str = key(
        "tensor",
        one_of("tensor", "entry"),
        "tensor: one mean/std per tensor | entry: one per weight position (DWSNets' INR sets)",
    )


@dataclass(frozen=True)
class OptimConfig(Schema):
    """train.yaml's ``optim:`` (AdamW)."""

    WHERE = "optim."

    lr: float = key(
        0.003,
        number(float, 0, low_open=True),
        "chosen on validation Kendall tau (StatNN, default zoo, split seeds 0-2): 0.785 vs 0.750 at 0.001",
    )
    weight_decay: float = key(0.0001, number(float, 0), "AdamW's weight decay")


@dataclass(frozen=True)
class TrainTrainerConfig(TrainerConfig):
    """train.yaml's ``trainer:`` (lightning.Trainer arguments; any other works too: ``trainer.gradient_clip_val=1``)."""

    max_epochs: int | None = key(30, epochs_rule, "most epochs (-1: no limit)")
    log_every_n_steps: int = key(1, number(int, 1), "steps between logged training metrics")
    enable_progress_bar: bool = key(
        True,
        typed(bool, "true or false"),
        "wszoo's bar over epochs with the validation metric (a line every few s in a log)",
    )


@dataclass(frozen=True)
class TrainConfig(Schema, group="", name="train"):
    """conf/train.yaml: the run settings of ``zoo train``; ``encoder:`` is checked by the encoder's own schema."""

    encoder: Any = group("an encoder config: encoder=NAME")
    task: Any = group("a target config: task=NAME")
    augment: Any = group("an augmentation config: augment=NAME")
    zoo: str | None = key(
        None, optional(typed(str, "a path or fsspec URL")), "path (or fsspec URL) of the zoo to learn from; required"
    )
    name: str | None = key(None, optional(typed(str, "a string")), "run name; default <encoder>-<task>-<zoo name>")
    out: str | None = key(None, optional(typed(str, "a folder path")), "output folder; default data/runs/<name>")
    overwrite: bool = key(
        False,
        one_of(True, False),
        "replace the run in a non-empty out (else refused; an interrupted run's folder is reused)",
    )
    seed: int = key(0, number(int, 0), "seeds the split, the augmentations and the encoder's initialization")
    device: str | None = key(
        None,
        optional(device_rule),
        "cpu | cuda | cuda:N | auto: sets trainer.accelerator and trainer.devices (null: theirs)",
    )
    threads: int | None = key(
        1,
        optional(number(int, 1)),
        "torch threads (null: torch's default); the encoders are small: 1 is as fast on a quiet CPU and many times "
        "faster on a busy shared one",
    )
    data: DataConfig = section(DataConfig)
    optim: OptimConfig = section(OptimConfig)
    trainer: TrainTrainerConfig = section(TrainTrainerConfig, "passed to lightning.Trainer")


def check_train_config(cfg: Mapping) -> None:
    """Every key of a composed ``zoo train`` config, the encoder's included: a one-line ZooError naming the key,
    before anything is read or written."""
    validate(TrainConfig, cfg)
    check_encoder_config(cfg.get("encoder") or {})
    validate(TaskConfig, cfg.get("task") or {})
    validate(AugmentConfig, cfg.get("augment") or {})


def run_name(cfg: Mapping) -> str:
    """The run folder's name under data/runs: ``name``, else <encoder>-<target>-<zoo>."""
    if cfg.get("name"):
        return str(cfg["name"])
    stem = Path(str(cfg["zoo"]).rstrip("/")).name.removesuffix(".zarr")
    return f"{cfg['encoder']['name']}-{cfg['task']['name']}-{stem}"


def run_folder(cfg: Mapping) -> Path:
    """The run folder of a composed config: ``out``, else data/runs/<run name>."""
    return Path(cfg.get("out") or Path("data/runs") / run_name(cfg))


def refuse_finished_run(out: Path, overwrite: bool) -> None:
    """Refuse a run folder that holds anything, unless ``overwrite`` or it is an interrupted run (``INCOMPLETE``:
    running the same command again restarts it): a finished run is never replaced without asking."""
    if out.exists() and not out.is_dir():
        raise ZooError(f"out={out} is a file, not a run folder; choose another out")
    if overwrite or not out.is_dir() or (out / INCOMPLETE).exists():
        return
    held = sorted(p.name for p in out.iterdir())
    if held:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise ZooError(
            f"out={out} already holds a run ({shown}); pass overwrite=true (--overwrite) to replace it, or choose"
            " another out"
        )


def train(cfg: Mapping) -> dict:
    """Train the encoder a composed config describes; returns (and writes) the run summary. A non-empty run
    folder is refused unless ``overwrite`` is true or it holds an interrupted run; torch runs on ``threads``
    threads (1 when the config has no ``threads``, as on every command; null: torch's setting), restored after."""
    if not cfg.get("zoo"):
        raise ZooError("zoo=PATH is required (the zoo to learn from)")
    check_train_config(cfg)  # before the run folder is touched
    cfg = with_device(cfg)  # device=cuda without a GPU: one line, nothing written
    with torch_threads(cfg.get("threads", THREADS)):
        return _train(cfg)


def _train(cfg: Mapping) -> dict:
    out = run_folder(cfg)
    refuse_finished_run(out, bool(cfg.get("overwrite", False)))
    out.mkdir(parents=True, exist_ok=True)
    seed = int(cfg.get("seed", 0))
    L.seed_everything(seed, verbose=False)
    d = cfg["data"]
    # the config group `task` selects the encoder's target (the CLI keeps task=NAME)
    dm = WeightDataModule(
        cfg["zoo"],
        target=cfg["task"],
        checkpoints=d["checkpoints"],
        canonical=d["canonical"],
        split=d["split"],
        seed=seed,
        batch_size=d["batch_size"],
        cache=d["cache"],
        cache_limit_mb=d["cache_limit_mb"],
        query=d["query"],
        buffers=d["buffers"],
        augment=cfg.get("augment"),
        normalize=d.get("normalize", "tensor"),
    )
    dm.setup()
    assert dm.space is not None  # setup() built it
    y_train = dm.samples.loc[dm.samples["split"] == "train", "target"].to_numpy(dtype=float)
    regression = dm.target.kind == "regression"
    loss = str(cfg["task"].get("loss", "mse")) if isinstance(cfg["task"], Mapping) else "mse"
    if loss == "bce" and regression:
        y_all = dm.samples["target"].to_numpy(dtype=float)
        if (y_all < 0).any() or (y_all > 1).any():
            raise ZooError(
                f"task.loss=bce needs targets in [0, 1]; task {dm.target.name} has values in"
                f" [{y_all.min():.3g}, {y_all.max():.3g}] (use task.loss=mse)"
            )
    enc = dict(cfg["encoder"])
    model = WeightModel(
        encoder=enc.pop("name"),
        encoder_kwargs=enc,
        space=dm.space.to_dict(),
        target=dm.target.to_dict(),
        normalizer=dm.normalizer.to_dict(),
        target_mean=float(y_train.mean()) if regression else 0.0,
        target_std=float(y_train.std()) if regression and y_train.std() > 0 else 1.0,
        lr=float(cfg["optim"]["lr"]),
        weight_decay=float(cfg["optim"]["weight_decay"]),
        loss=loss,
    )
    note = model.encoder.cost_note(dm.batch_size)
    if note:
        print(f"[zoo train] warning: {note}", file=sys.stderr, flush=True)
    monitor, mode = dm.target.monitor
    ckpt_cb = ModelCheckpoint(
        dirpath=str(out),
        filename=CHECKPOINT_NAME.removesuffix(".ckpt"),
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        save_weights_only=True,
        enable_version_counter=False,
    )
    trainer = make_trainer(  # settings (trainer.logger included) checked before the run folder is touched
        cfg["trainer"],
        out,
        [ckpt_cb],
        progress="zoo train",
        monitor=monitor,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    for stale in (out / CHECKPOINT_NAME, out / "metrics.csv", out / "summary.json"):
        stale.unlink(missing_ok=True)  # a run folder never mixes this run's files with an older run's
    incomplete = out / INCOMPLETE
    incomplete.write_text("this run did not finish (interrupted or failed); run the same command again\n")
    counts = dm.samples.groupby("split")["model_id"].nunique()
    print(
        f"[zoo train] {cfg['encoder']['name']} on {dm.target.name}: {counts.get('train', 0)} train /"
        f" {counts.get('val', 0)} val / {counts.get('test', 0)} test models of {cfg['zoo']}; following {monitor}",
        file=sys.stderr,
        flush=True,
    )
    t0 = time.time()
    with quiet_fit():
        trainer.fit(model, datamodule=dm)
        fit_s = time.time() - t0
        best = load_model(out / CHECKPOINT_NAME) if (out / CHECKPOINT_NAME).exists() else model
        tester = L.Trainer(  # one device: the first of the fit's when device= named one
            accelerator=cfg["trainer"].get("accelerator", "cpu"),
            devices=cfg["trainer"]["devices"] if cfg.get("device") is not None else 1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            use_distributed_sampler=False,
        )
        test = tester.test(best, datamodule=dm, verbose=False)[0]
    counts = dm.samples.groupby("split").agg(models=("model_id", "nunique"), samples=("model_id", "size"))
    summary = {  # summary.json keeps the key "task" (the config group's name) for its readers
        "encoder": cfg["encoder"]["name"],
        "task": dm.target.to_dict(),
        "zoo": str(cfg["zoo"]),
        "out": str(out),
        "test": {k.removeprefix("test/"): float(v) for k, v in test.items()},
        "best_val": float(ckpt_cb.best_model_score) if ckpt_cb.best_model_score is not None else None,
        "monitor": monitor,
        "epochs": int(trainer.current_epoch),
        "fit_seconds": round(fit_s, 2),
        "splits": {s: {k: int(v) for k, v in row.items()} for s, row in counts.to_dict("index").items()},
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "checkpoint": str(out / CHECKPOINT_NAME),
        "config": dict(cfg),
    }
    summary["test"] = {k: (v if np.isfinite(v) else None) for k, v in summary["test"].items()}
    tmp = out / "summary.json.partial"
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(out / "summary.json")  # atomic: summary.json is whole or absent
    incomplete.unlink()
    return summary
