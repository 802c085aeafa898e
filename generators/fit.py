"""Fitting a generator with the Lightning Trainer: model-id validation split, EMA, early stopping, checkpoints.

``fit("dwf", zoo_path, **overrides)`` composes ``conf/fit.yaml`` with ``conf/generator/dwf.yaml``, reads
the zoo (``generators.training_models``), trains, and writes the run folder:
``config.json`` + ``model.safetensors`` (EMA weights of the best validation epoch), ``metrics.csv`` (CSV
logger), ``checkpoints/`` (Lightning's best and last), ``snapshots/step-*.safetensors`` (raw weights along
training) and ``summary.json``. The folder is locked for the whole fit (``<out>.lock``: a second ``zoo fit`` into
it is refused) and holds ``INCOMPLETE`` until ``summary.json`` is in, so a killed fit is never loaded.
Running the same fit again into a killed fit's folder resumes it from ``checkpoints/last.ckpt`` (written whole or
not at all, with the random states and the sampler's generator: the resumed fit ends with the bits of an
uninterrupted one); with other settings or an unreadable checkpoint it says it restarts from scratch.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from generators.base import Generator
from generators.config import NON_NEGATIVE
from generators.registry import SNAPSHOT_DIR, SUMMARY_FILE, get, owned_run, refuse_finished, write_atomic
from generators.selection import NoveltyReference
from generators.training_models import TrainingModels
from zoo.app.checks import number, one_of, optional, typed
from zoo.app.config import CONF_DIR, compose
from zoo.app.runtime import THREADS, device_rule, torch_threads, with_device
from zoo.app.schema import Schema, group, key, section, validate
from zoo.app.trainer_config import TrainerConfig, epochs_rule
from zoo.errors import ZooError

CHECKPOINT_DIR = "checkpoints"
FINGERPRINT_FILE = "fit.json"  # in checkpoints/: the settings and training models a resume must match
HISTORY_FILE = "metrics-before-resume.csv"  # in checkpoints/: metrics up to the checkpoint a resume starts from
# what early stopping and the best checkpoint follow (``auto``: the generator's ``default_monitor``)
MONITORS = {"val/loss": "min", "val/sample_train_acc": "max", "val/novel_acc": "max", "val/good_novel": "max"}
SAMPLE_MONITORS = ("val/sample_train_acc", "val/novel_acc", "val/good_novel")
NOVELTY_MONITORS = ("val/novel_acc", "val/good_novel")  # need a classification zoo  # need samples at each validation


@dataclass(frozen=True)
class EarlyStoppingConfig(Schema):
    """fit.yaml's ``early_stopping:`` (it follows ``monitor``)."""

    WHERE = "early_stopping."

    patience: int = key(10, number(int, 0), "validations without improvement")
    min_delta: float = key(0.0, NON_NEGATIVE, "smallest change of the monitored value that counts as one")


@dataclass(frozen=True)
class FitTrainerConfig(TrainerConfig):
    """fit.yaml's ``trainer:`` (lightning.Trainer arguments; any other works too: ``trainer.max_time=00:00:05:00``)."""

    max_epochs: int | None = key(
        100, epochs_rule, "x steps_per_epoch = at most 10k steps; early stopping usually ends it sooner (-1: no limit)"
    )
    log_every_n_steps: int = key(10, number(int, 1), "steps between logged training metrics")


@dataclass(frozen=True)
class FitConfig(Schema, group="", name="fit"):
    """conf/fit.yaml: the run settings of ``zoo fit``; ``generator:`` is checked by the generator's own schema."""

    generator: Any = group("a generator config: generator=NAME")
    zoo: str | None = key(
        None, optional(typed(str, "a path or fsspec URL")), "path (or fsspec URL) of the zoo to learn from; required"
    )
    out: str | None = key(
        None, optional(typed(str, "a folder path")), "run folder; default data/runs/<generator>-<zoo name>"
    )
    overwrite: bool = key(
        False,
        one_of(True, False),
        "replace a finished run in out (else refused; an interrupted run's folder is resumed)",
    )
    seed: int = key(  # Lightning's seed_everything takes an unsigned 32-bit seed
        0,
        number(int, 0, 2**32 - 1),
        "seeds the model-id split, the generator's initialization and its training draws",
    )
    device: str | None = key(
        None,
        optional(device_rule),
        "cpu | cuda | cuda:N | auto: sets trainer.accelerator and trainer.devices (null: theirs)",
    )
    threads: int | None = key(
        1,
        optional(number(int, 1)),
        "torch threads (null: torch's default); 1: on a shared CPU two spinning OpenMP threads made steps 6x slower",
    )
    steps_per_epoch: int = key(
        100, number(int, 1), "optimizer steps between validations (models are drawn with replacement)"
    )
    snapshot_every_n_steps: int = key(
        500, number(int, 0), "raw weights saved to snapshots/ for checkpoint combination (LCSC); 0: none"
    )
    monitor: str = key(
        "auto",
        one_of("auto", *MONITORS),
        "what early stopping and the best checkpoint follow (validation data only). auto: the generator's own "
        "choice, never one that rewards copying (dwf: val/novel_acc; d2nwg: val/sample_train_acc on held-out "
        "tasks; val/loss without val_samples). val/novel_acc: the val_samples samples' training-split accuracy, "
        "each times min(1, its nearest-training-model distance / the held-out models' median one): a copy earns 0 "
        "(generators.selection), max. val/good_novel: share of samples novel (that far) AND good (training-split "
        "accuracy >= the real models' 5th percentile), max. val/sample_train_acc: samples' training-split "
        "accuracy, max (rewards copying). val/loss: the generator's loss on the held-out models, min",
    )
    early_stopping: EarlyStoppingConfig = section(EarlyStoppingConfig, "follows monitor")
    trainer: FitTrainerConfig = section(FitTrainerConfig, "passed to lightning.Trainer")


def check_fit_config(cfg: Mapping) -> None:
    """Every key of a composed fit config, the generator's own included: a one-line ZooError naming the key,
    the value and what is allowed, before anything is read or written."""
    validate(FitConfig, cfg)
    gcfg = cfg["generator"]
    if not isinstance(gcfg.get("name"), str):
        raise ZooError(f"generator.name={gcfg.get('name')!r} is invalid: expected one of {generator_names()}")
    entry = get(gcfg["name"])
    if entry.schema is None:
        raise ZooError(f"generator {gcfg['name']!r} registers no config schema (generators.registry.register)")
    validate(entry.schema, gcfg)


def generator_names() -> list[str]:
    """Generators with a config in ``conf/generator/``."""
    return sorted(p.stem for p in (CONF_DIR / "generator").glob("*.yaml"))


def _merge(cfg: dict, overrides: Mapping[str, Any]) -> dict:
    """Apply Python overrides: top-level keys of fit.yaml, else keys of the generator's config ("a.b" nests)."""
    for setting, value in overrides.items():
        path = setting.split(".")
        target: dict = cfg if path[0] in cfg else cfg["generator"]
        for p in path[:-1]:
            if not isinstance(target.get(p), dict):
                raise ZooError(f"unknown setting {setting!r}")
            target = target[p]
        if path[-1] not in target and target is not cfg.get("trainer"):
            raise ZooError(
                f"unknown setting {setting!r}; generator settings: {sorted(cfg['generator'])}, "
                f"run settings: {sorted(k for k in cfg if k != 'generator')}"
            )
        target[path[-1]] = value
    return cfg


def compose_fit(
    name: str,
    zoo_path: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    hydra_overrides: list[str] | None = None,
) -> dict:
    """The resolved fit config for generator ``name``: fit.yaml + generator/<name>.yaml + overrides."""
    if name not in generator_names():
        raise ZooError(f"unknown generator {name!r}; choose one of {generator_names()}")
    cfg = compose("fit", [f"generator={name}", *(hydra_overrides or [])])
    if zoo_path is not None:
        cfg["zoo"] = str(zoo_path)
    return _merge(cfg, dict(overrides or {}))


def fit(name: str, zoo_path: str, **overrides: Any) -> Generator:
    """Fit generator ``name`` on the zoo at ``zoo_path``; keyword overrides set fit or generator settings."""
    return fit_config(compose_fit(name, zoo_path, overrides))


@dataclass(frozen=True)
class Resume:
    """The checkpoint an interrupted fit continues from."""

    path: Path
    step: int
    epoch: int


def _fingerprint(cfg: Mapping, info: Mapping) -> str:
    """What a resumed fit must share with the interrupted one: the whole config (but ``out``: the folder is the same
    one, wherever it was moved; and ``overwrite``, which only decides whether a FINISHED run may be replaced) and
    the training/validation model ids."""
    config = {k: v for k, v in cfg.items() if k not in ("out", "overwrite")}
    record = {"config": config, "train_ids": info.get("train_ids"), "val_ids": info.get("val_ids")}
    return json.dumps(record, sort_keys=True, default=str)


def _readable(path: Path) -> dict | None:
    """A Lightning checkpoint read as tensors and plain values (no code runs), or None if missing or unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # missing, truncated or not a checkpoint: all mean "cannot resume from it"
        return None


def _resume_point(out: Path, fingerprint: str) -> tuple[Resume | None, str]:
    """The last full checkpoint of the interrupted fit in ``out`` if resuming from it is sound, else why not."""
    ckpts = out / CHECKPOINT_DIR
    record = ckpts / FINGERPRINT_FILE
    if not record.is_file():
        return None, "left no record of its settings"
    if record.read_text() != fingerprint:
        return None, "its settings or training models differ from this fit's"
    last = _readable(ckpts / "last.ckpt")
    if last is None:
        return None, "saved no readable checkpoint"
    if "zoo_fit" not in last:
        return None, "its checkpoint holds no random states"
    for state in last.get("callbacks", {}).values():  # the best checkpoint the last one points to must be there
        best = state.get("best_model_path") if isinstance(state, dict) else None
        if best and _readable(Path(best)) is None:
            return None, f"its best checkpoint {best!r} is missing or unreadable"
    return Resume(ckpts / "last.ckpt", int(last["global_step"]), int(last["epoch"])), ""


def _clear_training_files(out: Path) -> None:
    """A fresh fit: no metrics, checkpoints or snapshots of an earlier fit stay in its run folder."""
    for stale in ("metrics.csv", f"{CHECKPOINT_DIR}/best.ckpt", f"{CHECKPOINT_DIR}/last.ckpt"):
        (out / stale).unlink(missing_ok=True)
    for old in (
        *(out / SNAPSHOT_DIR).glob("step-*.safetensors"),
        *(out / CHECKPOINT_DIR).glob(FINGERPRINT_FILE),
        *(out / CHECKPOINT_DIR).glob(HISTORY_FILE),
    ):
        old.unlink()
    (out / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)


def _rewind(out: Path, resume: Resume) -> None:
    """Back to the checkpoint: snapshots after its step removed, the metrics of its epochs kept aside (Lightning's
    CSV logger starts ``metrics.csv`` over; :func:`_join_metrics` puts them back in front)."""
    for snap in (out / SNAPSHOT_DIR).glob("step-*.safetensors"):
        if int(snap.stem.removeprefix("step-")) > resume.step:
            snap.unlink()
    parts = [p for p in (out / CHECKPOINT_DIR / HISTORY_FILE, out / "metrics.csv") if p.is_file()]
    import pandas as pd  # fitting only: loading and sampling a generator never import pandas

    frames = [pd.read_csv(p) for p in parts if p.stat().st_size > 0]
    if frames:
        history = pd.concat(frames, ignore_index=True).drop_duplicates()
        history = history[history["epoch"] <= resume.epoch]
        write_atomic(out / CHECKPOINT_DIR / HISTORY_FILE, history.to_csv(index=False))
    (out / "metrics.csv").unlink(missing_ok=True)


def _join_metrics(out: Path) -> None:
    """``metrics.csv`` of a resumed fit: the epochs before the checkpoint, then the resumed ones."""
    history = out / CHECKPOINT_DIR / HISTORY_FILE
    if not history.is_file():
        return
    import pandas as pd

    frames = [pd.read_csv(p) for p in (history, out / "metrics.csv") if p.is_file() and p.stat().st_size > 0]
    write_atomic(out / "metrics.csv", pd.concat(frames, ignore_index=True).to_csv(index=False))
    history.unlink()


def _loaders(models: TrainingModels, cfg: Mapping, g: Generator, seed: int) -> tuple[DataLoader, DataLoader]:
    """Training loader (models drawn with replacement, ``steps_per_epoch`` batches) and validation loader."""
    mask = g.layout.parameter_mask()
    with torch.no_grad():
        train = g.encode(models.train[:, mask])
        val = g.encode(models.val[:, mask])
    tr = (train,) + ((models.train_condition,) if models.train_condition is not None else ())
    va = (val,) + ((models.val_condition,) if models.val_condition is not None else ())
    bs = int(cfg["generator"]["batch_size"])
    steps = int(cfg["steps_per_epoch"])
    sampler = RandomSampler(
        TensorDataset(*tr), replacement=True, num_samples=steps * bs, generator=torch.Generator().manual_seed(seed)
    )
    return (
        DataLoader(TensorDataset(*tr), batch_size=bs, sampler=sampler),
        DataLoader(TensorDataset(*va), batch_size=max(len(val), 1)),
    )


def _sampler_generator(loader: DataLoader) -> torch.Generator:
    """The generator that draws the training models (:func:`_loaders`), whose state a checkpoint carries."""
    sampler = loader.sampler
    if not isinstance(sampler, RandomSampler) or sampler.generator is None:
        raise TypeError("the training loader must draw with a RandomSampler of its own generator")
    return sampler.generator


def fit_config(cfg: Mapping) -> Generator:
    """Fit the generator a composed fit config describes; returns it (EMA weights of the best epoch), saved.

    The whole config is checked first (:func:`check_fit_config`): a bad value never reaches the run folder."""
    check_fit_config(cfg)
    cfg = with_device(cfg)  # device=cuda without a GPU: one line, before anything is read or written
    with torch_threads(cfg.get("threads", THREADS)):  # the fit's only (1 unless set, as on every command)
        return _fit(cfg)


def _monitor(cfg: Mapping, cls: type[Generator]) -> str:
    """The metric early stopping and the best checkpoint follow: ``monitor``, or with ``auto`` the generator's
    ``default_monitor`` (``val/loss`` where samples cannot be scored: no ``val_samples`` or a regression zoo)."""
    monitor, val_samples = str(cfg["monitor"]), int(cfg["generator"].get("val_samples", 0))
    if monitor == "auto":
        monitor = cls.default_monitor
        if monitor in SAMPLE_MONITORS and val_samples <= 0:
            monitor = "val/loss"
    if monitor not in MONITORS:
        raise ZooError(f"monitor must be auto or one of {sorted(MONITORS)}, got {monitor!r}")
    if monitor in SAMPLE_MONITORS and val_samples <= 0:
        raise ZooError(f"monitor={monitor} needs generator.val_samples > 0")
    return monitor


def _fit(cfg: Mapping) -> Generator:
    import lightning as L  # Lightning is for fitting only: loading and sampling a generator never import it
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from generators.lit import EMA, AtomicCheckpointIO, LitGenerator, Resumable, Snapshots, unwrap_state
    from zoo.app.trainer import make_trainer, quiet_fit

    cfg = dict(cfg)
    if not cfg.get("zoo"):
        raise ZooError("zoo=PATH is required (the zoo to learn from)")
    gcfg = dict(cfg["generator"])
    name = gcfg["name"]
    method = get(name)
    if method.fit is not None:  # a method with its own fitting (KNOWN: trajectory windows)
        return method.fit(cfg)
    ema = EMA(gcfg["ema_decay"])
    cls = method.cls
    if not issubclass(cls, Generator):
        raise TypeError(f"{cls.__qualname__} is registered without a fit of its own but is not a Generator")
    monitor = _monitor(cfg, cls)
    stem = Path(str(cfg["zoo"]).rstrip("/")).name.removesuffix(".zarr")
    out = Path(cfg.get("out") or Path("data/runs") / f"{name}-{stem}")
    refuse_finished(out, bool(cfg.get("overwrite", False)))  # before any work
    seed = int(cfg.get("seed", 0))
    L.seed_everything(seed, verbose=False)
    t0 = time.perf_counter()
    models = cls.load_training_models(str(cfg["zoo"]), gcfg, seed)  # d2nwg overrides it: a split by task
    origin = {**models.info, "shared": models.shared}
    mask = models.layout.parameter_mask()
    g = cls.from_data(gcfg, origin, models.train[:, mask], models.train.mean(0))
    if int(gcfg.get("val_samples", 0)) > 0 and models.info["dataset"]["kind"] == "classification":
        # every validation logs the samples' novelty beside their accuracy, whatever the monitor
        g.novelty_reference = NoveltyReference.from_models(models.layout, models.train, models.val, g.dataset())
    elif monitor in SAMPLE_MONITORS and str(cfg["monitor"]) == "auto":
        monitor = "val/loss"  # samples cannot be scored on this zoo (an INR zoo, a regression zoo): follow the loss
    elif monitor in NOVELTY_MONITORS:
        raise ZooError(f"monitor={monitor} needs a classification zoo (it scores accuracy); use monitor=val/loss")
    train_dl, val_dl = _loaders(models, cfg, g, seed)
    es = cfg["early_stopping"]
    mode = MONITORS[monitor]
    best = ModelCheckpoint(
        dirpath=str(out / CHECKPOINT_DIR),
        filename="best",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        save_last=True,
        save_weights_only=False,  # a weights-only checkpoint skips the callbacks' hooks: it would hold the raw weights
        enable_version_counter=False,
    )
    callbacks = [
        best,
        ema,
        EarlyStopping(monitor=monitor, mode=mode, patience=int(es["patience"]), min_delta=float(es["min_delta"])),
        Snapshots(out / SNAPSHOT_DIR, int(cfg["snapshot_every_n_steps"])),
        Resumable(_sampler_generator(train_dl)),
    ]
    trainer = make_trainer(  # settings checked here, before the run folder is touched
        cfg["trainer"],
        out,
        callbacks,
        progress="zoo fit",
        monitor=monitor,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        plugins=[AtomicCheckpointIO()],
    )
    fingerprint = _fingerprint(cfg, models.info)
    with owned_run(out, "zoo fit") as run:  # locked and marked INCOMPLETE until summary.json is in
        resume, why = _resume_point(out, fingerprint) if run.interrupted else (None, "")
        if resume is None:
            if run.interrupted:
                print(
                    f"[zoo fit] {out}: the earlier fit was interrupted and {why}; restarting from scratch",
                    file=sys.stderr,
                )
            _clear_training_files(out)
            write_atomic(out / CHECKPOINT_DIR / FINGERPRINT_FILE, fingerprint)
        else:
            print(
                f"[zoo fit] {out}: resuming the interrupted fit from its last checkpoint "
                f"(step {resume.step}, epoch {resume.epoch})",
                file=sys.stderr,
                flush=True,
            )
            _rewind(out, resume)
        print(
            f"[zoo fit] {name} on {cfg['zoo']}: {len(models.info['train_ids'])} train / "
            f"{len(models.info['val_ids'])} val models, {int(cfg['steps_per_epoch'])} steps per epoch; "
            f"following {monitor}",
            file=sys.stderr,
            flush=True,
        )
        with quiet_fit():
            trainer.fit(
                LitGenerator(g),
                train_dataloaders=train_dl,
                val_dataloaders=val_dl,
                ckpt_path=None if resume is None else str(resume.path),
                weights_only=True,  # a checkpoint is read as tensors and plain values: loading runs no code
            )
        if resume is not None:
            _join_metrics(out)
        if best.best_model_path:  # EMA weights of the best validation epoch (EMA puts the average in ``state_dict``)
            state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
            g.load_state_dict(unwrap_state(state))
        fit_s = time.perf_counter() - t0
        g.save(out)
        summary = {
            "generator": name,
            "zoo": str(cfg["zoo"]),
            "out": str(out),
            "fit_seconds": round(fit_s, 2),
            "steps": int(trainer.global_step),
            "epochs": int(trainer.current_epoch),
            "monitor": monitor,
            "best_score": float(best.best_model_score) if best.best_model_score is not None else None,
            "resumed_from_step": None if resume is None else resume.step,
            "train_models": len(models.info["train_ids"]),
            "val_models": len(models.info["val_ids"]),
            "canonical": models.info["canonical"],
            "dims": g.dims,
            "parameters": int(sum(p.numel() for p in g.parameters())),
            "config": cfg,
        }
        write_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2, default=str))
        return g.eval()
