"""The generator interface every method shares: sample state dicts, save/load a run folder, write samples as a zoo.

A generator is a plain ``nn.Module`` that learns the trainable parameters of one layout (loading and sampling it
import no Lightning; ``generators.lit`` wraps it for ``Trainer.fit``). Subclasses implement
``generate(n, generator, condition) -> [n, P_params]`` and, to be fitted, ``training_loss``, ``validation_loss``
and ``optimizers``; this class turns that into full state dicts
(buffers from the training models' mean, BatchNorm statistics re-estimated on the TRAINING split), saves
run folders (``generators.registry``: ``config.json`` + ``model.safetensors``, no pickle; ``load`` reads them
back), and writes zoos of samples. It knows no method: each registers itself in its package's ``__init__``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

import zoo
from generators.registry import Pretrained, save_run
from generators.selection import NoveltyReference
from generators.training_models import TrainingModels, load_training_models
from zoo.app.memory import available_memory
from zoo.app.runtime import THREADS, resolve_device, torch_threads
from zoo.datasets import load_recorded
from zoo.errors import ZooError
from zoo.layout import Layout

# [n, P] float32 copies of the flat weights alive at once in sample_zoo (the generated parameters, the full flat
# weights, the finite ones being evaluated, the ones being written): n samples need at least this many times
# n x P x 4 bytes, so a count beyond the available memory is refused before anything is allocated
SAMPLE_COPIES = 4


SPLITS = ("train", "test")  # the splits sample_zoo scores by default


def _check_splits(metrics: Any) -> tuple[str, ...]:
    """The splits ``sample_zoo`` scores: a subset of train, test (a string is one comma-separated list)."""
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if str(m).strip()]
    if names == ["none"]:
        return ()
    bad = [m for m in names if m not in SPLITS]
    if bad:
        raise ZooError(f"unknown split {bad[0]!r} to score samples on; choose from train, test (or none)")
    return tuple(dict.fromkeys(names))


def finite_rows(flat: torch.Tensor) -> torch.Tensor:
    """[n] bool: the rows of [n, P] whose values are all finite (numpy on CPU: 0.02 s for 100 resnet-mnist
    samples where torch.isfinite takes 0.2 s)."""
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.isfinite(flat.detach().numpy()).all(1))
    return torch.isfinite(flat).all(1)


def _check_count(n: Any) -> int:
    """n as an int if it is a positive integer (not a bool, not a float), else a one-line ZooError."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
        raise ZooError(f"the number of samples must be a positive integer, got {n!r}")
    return int(n)


def _local(path: str | Path) -> Path | None:
    """The resolved local path of ``path``, None for an fsspec URL (compared as a string)."""
    text = str(path)
    if "://" in text and not text.startswith("file://"):
        return None
    return Path(text.removeprefix("file://")).expanduser().resolve()


def _overlaps(out: str | Path, path: str | Path, inside_too: bool) -> bool:
    """Whether writing a zoo at ``out`` would replace ``path``: the same place or a folder above it (with
    ``inside_too``, also a place within it)."""
    a, b = _local(out), _local(path)
    if a is None or b is None:
        x, y = str(out).rstrip("/"), str(path).rstrip("/")
        return x == y or y.startswith(x + "/") or (inside_too and x.startswith(y + "/"))
    return a == b or a in b.parents or (inside_too and b in a.parents)


class Generator(nn.Module, Pretrained, metaclass=abc.ABCMeta):
    """Base of all weight generators: ``sample``, ``save``/``save_pretrained``, ``from_pretrained``, ``sample_zoo``;
    subclasses define ``generate`` (and, to be fitted, the losses and optimizers)."""

    name: ClassVar[str] = ""
    param_mask: torch.Tensor  # [P] bool buffer: the layout's trainable entries
    buffer_fill: torch.Tensor  # [P] the training models' mean (their non-trainable entries fill samples)
    # samples for a dataset named at sampling time (``dataset_condition``; ``zoo sample --dataset``): d2nwg
    conditions_on_dataset: ClassVar[bool] = False
    # what ``zoo fit monitor=auto`` follows: a criterion that does not reward copying the training models
    default_monitor: ClassVar[str] = "val/novel_acc"

    def __init__(self, config: dict, origin: dict, dims: dict):
        super().__init__()
        # origin: what the generator knows of its training zoo (path, layout, model ids, canonical frame, dataset,
        # condition values, metric names); config.json stores it under "source" (old run folders still load)
        self.config, self.origin, self.dims = dict(config), dict(origin), dict(dims)
        self.layout = Layout.from_json(origin["layout"])
        self.run_dir: Path | None = None
        self._data: zoo.Dataset | None = None  # the training zoo's dataset, loaded on first use
        self.novelty_reference: NoveltyReference | None = None  # set while fitting (not saved)
        self.data_root: str | None = None  # where moved data on disk is now (zoo.datasets.locate); None: env/recorded
        mask = self.layout.parameter_mask()
        self.register_buffer("param_mask", mask, persistent=False)
        self.register_buffer("buffer_fill", torch.zeros(self.layout.size))  # mean buffers of the training models

    # ------------------------------------------------------------------ to implement
    @classmethod
    def load_training_models(cls, zoo_path: str, cfg: Mapping[str, Any], seed: int = 0) -> TrainingModels:
        """The training data a generator config selects from the zoo at ``zoo_path``, split into train/val
        by model id in one frame (``generators.training_models``); a method that splits otherwise overrides this."""
        return load_training_models(zoo_path, cfg, seed)

    @classmethod
    @abc.abstractmethod
    def from_data(cls, config: dict, origin: dict, train: torch.Tensor, buffers: torch.Tensor) -> Generator:
        """A new generator whose fixed statistics come from the training models' parameters [n, P_params]
        (``buffers``: [P] values for the layout's non-trainable entries)."""

    @abc.abstractmethod
    def generate(self, n: int, generator: torch.Generator, condition: torch.Tensor | None) -> torch.Tensor:
        """[n, P_params] trainable parameters of n new models (condition: [n] value indices or None)."""

    @abc.abstractmethod
    def training_loss(self, batch: Any) -> torch.Tensor:
        """The loss of one training batch (a tuple of the ``encode``d parameters [B, D] and, if any, conditions)."""

    @abc.abstractmethod
    def validation_loss(self, batch: Any, batch_idx: int) -> tuple[torch.Tensor, int]:
        """(the loss of one validation batch with draws fixed by ``batch_idx``, the batch size it averages over)."""

    @abc.abstractmethod
    def optimizers(self, total_steps: int) -> Any:
        """What Lightning's ``configure_optimizers`` returns, for a fit of ``total_steps`` optimizer steps."""

    def encode(self, params: torch.Tensor) -> torch.Tensor:
        """Parameters [n, P_params] -> the coordinates the generator is trained on (identity unless overridden)."""
        return params

    # ------------------------------------------------------------------ conditions
    @property
    def condition_values(self) -> list | None:
        """The values of the conditioning column seen in training, or None for an unconditional generator."""
        cond = self.origin.get("condition")
        return list(cond["values"]) if cond else None

    def _condition_index(self, n: int, condition: Any, generator: torch.Generator) -> tuple[torch.Tensor | None, list]:
        """([n] value indices, [n] values): a given value (or one per sample), or drawn as in training."""
        values = self.condition_values
        if values is None:
            if condition is not None:
                raise ZooError(f"this {self.name} generator is unconditional; sample it without a condition")
            return None, [None] * n
        if condition is None:
            counts = torch.as_tensor(self.origin["condition"]["counts"], dtype=torch.float64)
            idx = torch.multinomial(counts, n, replacement=True, generator=generator)
            return idx, [values[int(i)] for i in idx]
        wanted = list(condition) if isinstance(condition, (list, tuple)) else [condition] * n
        if len(wanted) != n:
            raise ZooError(f"give one condition or {n} (one per sample), got {len(wanted)}")
        picked = [self._match_value(v, values) for v in wanted]
        return torch.as_tensor(picked, dtype=torch.int64), [values[i] for i in picked]

    def _match_value(self, value: Any, values: list) -> int:
        """Index of ``value`` among the training values (``"0.1"`` matches 0.1: CLI values arrive as text)."""
        column = self.origin["condition"]["column"]
        for i, v in enumerate(values):
            if v == value or str(v) == str(value):
                return i
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                try:
                    if float(value) == float(v):
                        return i
                except (TypeError, ValueError):
                    pass
        raise ZooError(f"unknown condition value {value!r} for column {column!r}; the generator knows {values}")

    def dataset_condition(self, dataset: Any, shots: int | None = None) -> Any:
        """A condition for ``sample``/``sample_zoo`` naming a dataset (``shots`` examples per class); only a
        generator with ``conditions_on_dataset`` has one."""
        raise ZooError(f"this {self.name} generator is not conditioned on a dataset; d2nwg is")

    # ------------------------------------------------------------------ sampling
    def dataset(self) -> zoo.Dataset:
        """The data the training zoo was trained on (reloaded and fingerprint-checked; BN needs its training split).

        Data on disk that moved since the fit is found in ``self.data_root`` (``zoo sample --data-root``), else
        ``$WSZOO_DATA_ROOT``, under its recorded base name; other data is a one-line error, never used."""
        if self._data is not None:
            return self._data
        d = self.origin["dataset"]
        self._data = load_recorded(str(d["source"]), int(d["seed"]), str(d["fingerprint"]), self.data_root)
        return self._data

    @property
    def device(self) -> torch.device:
        """The device the generator's tensors are on (where ``generate`` must create its own)."""
        return self.buffer_fill.device

    def sample_flat(
        self, n: int, seed: int = 0, condition: Any = None, device: str | torch.device | None = None
    ) -> tuple[torch.Tensor, list]:
        """([n, P] flat weights in the zoo's layout on the CPU, [n] condition values) of n new models, seeded.

        ``device`` (cpu, cuda, cuda:N, auto; None: where the generator is) runs the sampling network and the
        BatchNorm re-estimate there, the generator moved back after; the random draws are made on the CPU from the
        seeded generator (the same draws on every device)."""
        n = _check_count(n)
        home = self.device
        dev = home if device is None else resolve_device(str(device))  # cuda without a GPU: one line, nothing run
        gen = torch.Generator().manual_seed(int(seed))  # a CPU generator: the same draws whatever the device
        idx, values = self._condition_index(int(n), condition, gen)
        was_training = self.training
        self.eval()
        self.to(dev)
        try:
            with torch.no_grad():
                params = self.generate(int(n), gen, None if idx is None else idx.to(dev)).to(torch.float32)
            flat = self.buffer_fill.expand(int(n), -1).clone()
            flat[:, self.param_mask] = params
            if self.has_batchnorm and bool(finite_rows(flat).all()):  # bn_points: a training subset (None: all)
                points = self.config.get("bn_points")
                flat = zoo.recalibrate_bn(
                    self.layout, flat, self.dataset(), points=None if points is None else int(points)
                )
        finally:
            self.to(home)
            self.train(was_training)
        return flat.cpu(), values

    @property
    def has_batchnorm(self) -> bool:
        return any(e.name.endswith("running_mean") for e in self.layout.entries)

    def sample(
        self,
        n: int,
        seed: int = 0,
        condition: Any = None,
        threads: int | None = THREADS,
        device: str | torch.device = "cpu",
    ) -> list[dict[str, torch.Tensor]]:
        """n new models as CPU state dicts in the zoo's layout (BatchNorm statistics from the training split), on
        ``threads`` torch threads (1 as on every command; 0 or None: torch's setting), restored after, the
        sampling network on ``device`` (cpu, cuda, cuda:N, auto; the draws stay on the CPU: same seed, same draws)."""
        with torch_threads(threads):
            flat, _ = self.sample_flat(n, seed, condition, device=device)
        states = self.layout.unflatten_batch(flat)
        return [{k: v[i].clone() for k, v in states.items()} for i in range(flat.shape[0])]

    def validation_metrics(self) -> dict[str, Any]:
        """What each validation epoch logs beside ``val/loss``: ``val_samples`` fixed-seed samples' TRAINING-split
        accuracy and, with a novelty reference (set by ``zoo fit``), how many are novel and good-and-novel
        (``generators.selection``); the test split is never read."""
        k = int(self.config.get("val_samples", 0))
        if k <= 0 or self.origin["dataset"]["kind"] != "classification":
            return {}
        flat, _ = self.sample_flat(k, seed=0)
        if self.novelty_reference is not None:
            return {f"val/{key}": value for key, value in self.novelty_reference.score(flat).items()}
        finite = finite_rows(flat)
        acc = torch.zeros(k, dtype=torch.float64)
        if finite.any():
            acc[finite] = zoo.evaluate(self.layout, flat[finite], self.dataset(), split="train")["acc"]
        return {"val/sample_train_acc": acc.mean().float()}

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (made if missing)."""
        self.run_dir = save_run(directory, self.name, self.config, self.origin, self.dims, self.state_dict())
        return self.run_dir

    # ------------------------------------------------------------------ samples as a zoo
    def check_sample_zoo(self, n: Any, out: str | Path, overwrite: bool = False) -> None:
        """Refuse a ``sample_zoo`` request before any compute: n not a positive integer or beyond memory, ``out``
        on the training zoo or the run folder (even with overwrite), or an existing zoo without overwrite."""
        n = _check_count(n)
        need = n * self.layout.size * 4 * SAMPLE_COPIES
        avail = available_memory()
        if avail is not None and need > avail:
            most = avail // (self.layout.size * 4 * SAMPLE_COPIES)
            raise ZooError(
                f"{n} samples of {self.layout.size} weights need at least {need / 2**30:.1f} GiB "
                f"({SAMPLE_COPIES} float32 copies), more than the {avail / 2**30:.1f} GiB available; "
                f"sample at most {most} at once"
            )
        inputs = [
            ("the generator's training zoo", self.origin.get("zoo"), True),
            ("its run folder", self.run_dir, False),
        ]
        for what, path, inside_too in inputs:
            if path is not None and _overlaps(out, path, inside_too):
                raise ZooError(f"--out {str(out)!r} would replace {what} {str(path)!r}; write the samples elsewhere")
        zoo.store.refuse_existing(str(out), overwrite)  # foreign files there are a ZooError too

    def sample_zoo(
        self,
        n: int,
        out: str | Path,
        seed: int = 0,
        condition: Any = None,
        overwrite: bool = False,
        threads: int | None = THREADS,
        metrics: Sequence[str] = SPLITS,
        device: str | torch.device = "cpu",
    ) -> zoo.Zoo:
        """Write n samples as a zoo at ``out``: weights, train/test metrics, status and provenance per model; on
        ``threads`` torch threads (1 as on every command; 0 or None: torch's setting), restored after.
        ``metrics``: the splits scored into the models table (others stay NaN); () skips the scoring, which for
        big networks costs far more than the sampling (100 resnet-mnist ResNets: ~150 s on one CPU thread for
        the 5,000 train and test images, ~4 s to sample them). ``device`` (cpu, cuda, cuda:N, auto): where the
        sampling network and the scoring run (the draws stay on the CPU; the weights come back to it to be written);
        cuda without a GPU is a one-line ZooError before anything is written."""
        splits = _check_splits(metrics)
        dev = resolve_device(str(device))
        with torch_threads(threads):
            return self._sample_zoo(n, out, seed, condition, overwrite, splits, dev)

    def _sample_zoo(
        self,
        n: int,
        out: str | Path,
        seed: int,
        condition: Any,
        overwrite: bool,
        splits: tuple[str, ...] = SPLITS,
        device: torch.device | None = None,
    ) -> zoo.Zoo:
        import pandas as pd  # the samples' models table; loading and sampling a generator never need pandas

        dev = torch.device("cpu") if device is None else device
        self.check_sample_zoo(n, out, overwrite)
        flat, values = self.sample_flat(n, seed, condition, device=dev)
        data = self.dataset()
        names = list(self.origin["metric_names"])
        metrics = np.full((n, 1, len(names)), np.nan)
        finite = finite_rows(flat)
        inr = self.origin.get("inr")
        if finite.any() and not inr:  # a sampled INR draws an image of its own: it has no target to score
            for split in splits:
                res = zoo.evaluate(self.layout, flat[finite].to(dev), data, split=split)
                for k, v in res.items():
                    if f"{split}_{k}" in names:
                        metrics[finite.numpy(), 0, names.index(f"{split}_{k}")] = v.cpu().numpy()
        run = str(self.run_dir) if self.run_dir is not None else None
        table = pd.DataFrame(
            {
                "generator": self.name,
                "run": run,
                "seed": int(seed),
                "sample": np.arange(n),
                **self.origin.get("shared", {}),
                "layout": self.origin["layout_key"],
            }
        )
        cond = self.origin.get("condition")
        if cond:
            table[cond["column"]] = values
        attrs = {
            "generator": {
                "name": self.name,
                "run": run,
                "seed": int(seed),
                "condition": None if condition is None else str(condition),
                "source_zoo": self.origin["zoo"],
                "canonical": self.origin.get("canonical"),
                "config": self.config,
            }
        }
        if inr:
            attrs["inr"] = dict(inr)  # the image shape: the samples render (zoo.render, zoo info --render)
        epoch = self.origin.get("epoch")
        # one writer at a time; a failure leaves out as before
        with zoo.store.staged(str(out), "zoo sample", overwrite) as partial:
            w = zoo.create(
                partial,
                table,
                {self.origin["layout_key"]: self.layout},
                [0 if epoch is None else int(epoch)],
                names,
                attrs=attrs,
                datasets=[data],
                overwrite=True,
            )
            ids = np.arange(n)
            for status, sel in (("done", finite.numpy()), ("diverged", ~finite.numpy())):
                if sel.any():
                    last = None if status == "done" else [-1] * int(sel.sum())
                    w.write(
                        ids[sel].tolist(),
                        (flat if sel.all() else flat[torch.from_numpy(sel)])[:, None],  # all finite: no copy
                        metrics[sel],
                        status=status,
                        last_checkpoint=last,
                    )
        return zoo.open(str(out))
