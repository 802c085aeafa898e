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
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import ModelCheckpoint

from wsl.data import WeightDataModule
from wsl.encoders import check_encoder_config
from wsl.lit import LOSSES, WeightModel
from wsl.predict import CHECKPOINT_NAME, load_model
from zoo.app.checks import check, number, one_of, optional
from zoo.app.runtime import THREADS, device_rule, torch_threads, with_device
from zoo.app.trainer import make_trainer, quiet_fit
from zoo.errors import ZooError

INCOMPLETE = "INCOMPLETE"  # in a run folder while its run has not finished (interrupted or failed)


def check_train_config(cfg: Mapping) -> None:
    """The values of a composed ``zoo train`` config that would otherwise fail deep inside training."""
    data = cfg.get("data") or {}
    split = data.get("split")
    if not (
        isinstance(split, (list, tuple))
        and len(split) == 3
        and all(number(float, 0)(x) is None for x in split)
        and all(x > 0 for x in split)
        and abs(sum(split) - 1) < 1e-6
    ):
        raise ZooError(
            f"data.split={split!r} is invalid: expected three positive fractions (train, val, test) summing to 1"
        )
    check({k: data[k] for k in ("batch_size",) if k in data}, {"batch_size": number(int, 1)}, "data.")
    check({k: data[k] for k in ("normalize",) if k in data}, {"normalize": one_of("tensor", "entry")}, "data.")
    top = {k: cfg[k] for k in ("seed", "threads", "overwrite", "device") if k in cfg}
    rules = {
        "seed": number(int, 0),
        "threads": optional(number(int, 1)),
        "overwrite": one_of(True, False),
        "device": optional(device_rule),
    }
    check(top, rules, "")
    optim = cfg.get("optim") or {}
    check(optim, {"lr": number(float, 0, low_open=True), "weight_decay": number(float, 0)}, "optim.")
    check_encoder_config(cfg.get("encoder") or {})
    task = cfg.get("task")
    loss = task.get("loss", "mse") if isinstance(task, Mapping) else "mse"
    if loss not in LOSSES:
        raise ZooError(f"task.loss={loss!r} is invalid: choose one of {list(LOSSES)}")
    epochs = (cfg.get("trainer") or {}).get("max_epochs")
    if epochs is not None and number(int, -1)(epochs):
        raise ZooError(f"trainer.max_epochs={epochs!r} is invalid: expected an integer >= 1 (or -1)")


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
