"""The Lightning side of fitting, and only of fitting: a generator (or KNOWN) is a plain ``nn.Module``, so
``generators.load(run).sample(n)`` never imports Lightning (seconds of CPU in a fresh process).

:class:`LitGenerator` wraps the network for ``Trainer.fit``: it calls the network's ``training_loss``,
``validation_loss``, ``validation_metrics`` and ``optimizers`` and logs what they return; the network holds every
weight (its state dict is the wrapper's under ``model.``, :func:`unwrap_state`). :class:`EMA` and
:class:`Snapshots` are the callbacks ``generators.fit`` trains with; :class:`Resumable` and
:class:`AtomicCheckpointIO` make a killed fit resume with the bits of an uninterrupted one.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks.weight_averaging import WeightAveraging
from lightning.pytorch.plugins.io import TorchCheckpointIO
from safetensors.torch import save
from torch import nn

from generators.registry import write_atomic
from zoo.errors import ZooError

PREFIX = "model."  # the network's keys in the wrapper's state dict (and so in Lightning's checkpoints)
PROGRESS_BAR = ("train/loss", "val/loss", "val/novel_acc", "val/sample_train_acc")  # shown while fitting


class Trainable(Protocol):
    """What a network offers to be fitted by :class:`LitGenerator`."""

    def training_loss(self, batch: Any) -> torch.Tensor: ...

    def validation_loss(self, batch: Any, batch_idx: int) -> tuple[torch.Tensor, int]: ...

    def validation_metrics(self) -> Mapping[str, Any]: ...

    def optimizers(self, total_steps: int) -> Any: ...


class LitGenerator(L.LightningModule):
    """A generator network as a LightningModule, for ``Trainer.fit`` only (the network is ``self.model``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model: Any = model  # a Trainable nn.Module (registered as a submodule: its weights are ours)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.model.training_loss(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, size = self.model.validation_loss(batch, batch_idx)
        self.log("val/loss", loss, prog_bar=True, on_epoch=True, batch_size=size)

    def on_validation_epoch_end(self) -> None:
        for key, value in self.model.validation_metrics().items():
            self.log(key, value, prog_bar=key in PROGRESS_BAR)

    def configure_optimizers(self) -> Any:
        return self.model.optimizers(max(int(self.trainer.estimated_stepping_batches), 1))


def unwrap_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's state dict from the wrapper's (a Lightning checkpoint's ``state_dict``)."""
    if not all(k.startswith(PREFIX) for k in state):
        raise ZooError("a fitting checkpoint without the wrapper's keys: it was not written by this fit")
    return {k.removeprefix(PREFIX): v for k, v in state.items()}


class Snapshots(L.Callback):
    """Save the raw (non-EMA) generator weights every ``every`` optimizer steps (LCSC combines them)."""

    def __init__(self, directory: Path, every: int) -> None:
        self.directory, self.every = Path(directory), int(every)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self.every > 0 and step % self.every == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().contiguous().clone() for k, v in unwrap_state(pl_module.state_dict()).items()}
            write_atomic(self.directory / f"step-{step:07d}.safetensors", save(state))  # whole or absent


def _ema_step(average: torch.Tensor, current: torch.Tensor, num_averaged: Any, weight: float) -> torch.Tensor:
    """One EMA update, ``average + weight * (current - average)``: exact where a weight did not move."""
    return torch.lerp(average, current, weight)


class EMA(WeightAveraging):
    """EMA of the generator's parameters, updated after every optimizer step and in place for all of validation.

    Lightning's ``EMAWeightAveraging`` swaps the raw weights back at ``on_validation_epoch_end``, and callbacks run
    that hook before the module's own, where ``val/sample_train_acc`` is logged: the sample accuracy would be the raw
    weights' and ``val/loss`` the EMA's. Here the average stays in until ``on_validation_end``, so both metrics,
    early stopping and the best checkpoint follow the EMA (ModelCheckpoint, which Lightning runs last, then saves
    the average as the checkpoint's ``state_dict`` and the raw weights as ``current_model_state``). The first update
    copies the weights after step 1; ``lerp`` keeps a weight that never moves (d2nwg's frozen VAE) bit-exact; buffers
    (data statistics) are copied, not averaged.
    """

    def __init__(self, decay: Any) -> None:
        if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not 0.0 <= decay <= 1.0:
            raise ZooError(f"generator.ema_decay must be a number in [0, 1], got {decay!r}")
        super().__init__(use_buffers=False, avg_fn=partial(_ema_step, weight=1.0 - float(decay)))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Keep the average in: the module's ``on_validation_epoch_end`` (sample accuracy) runs after this."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Swap the raw weights back in, before the checkpoints are saved."""
        super().on_validation_epoch_end(trainer, pl_module)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, each file written whole or not at all (a temporary name, then
    ``os.replace``): a fit killed while saving keeps its previous ``last.ckpt``/``best.ckpt`` to resume from."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Save to a temporary sibling, then rename over ``path``."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, target)


class Resumable(L.Callback):
    """What a real resume needs beyond Lightning's own checkpoint, carried in it under ``zoo_fit``: the random
    states (torch, numpy, Python and the training sampler's generator: the flow's noise and the model draws of
    the next epoch) and whether early stopping had already stopped the fit; the metrics logged so far are
    flushed to ``metrics.csv`` before each checkpoint, so a kill loses none of the epochs it can resume after."""

    def __init__(self, sampler: torch.Generator) -> None:
        self.sampler, self.stopped = sampler, False

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        version, mt, py_gauss = random.getstate()
        checkpoint["zoo_fit"] = {
            "torch": torch.get_rng_state(),
            "sampler": self.sampler.get_state(),
            "numpy": [
                str(name),
                torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                int(pos),
                int(has_gauss),
                float(gauss),
            ],
            "python": [int(version), list(mt), py_gauss],
            "should_stop": bool(trainer.should_stop),
        }
        if trainer.logger is not None:
            trainer.logger.save()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        state = checkpoint.get("zoo_fit")
        if state is None:
            raise ZooError(
                "the checkpoint holds no random states (written by an older zoo fit): fit again from scratch"
            )
        torch.set_rng_state(state["torch"])
        self.sampler.set_state(state["sampler"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, mt, py_gauss = state["python"]
        random.setstate((version, tuple(mt), py_gauss))
        self.stopped = bool(state["should_stop"])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stopped:  # killed after early stopping had ended the fit: nothing left to train
            trainer.should_stop = True
