"""Population training: many models of one layout train together as one stacked population.

All models' parameters live in one ``[M, P]`` tensor; the forward pass is ``torch.func.vmap`` over
``functional_call`` of the template module (BatchNorm buffers are batched too and update in place), so one
batched kernel serves every model. Each model keeps its own initialization, data order (its own
generator), learning rate and weight decay; the optimizer step is one fused update over ``[M, P]`` with
per-model rates. A model whose loss turns NaN/inf is frozen and recorded as diverged; the others go on.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

from zoo.app.memory import retain_freed_memory
from zoo.app.runtime import lightning_device
from zoo.datasets import Dataset
from zoo.training.spec import PopulationResult, PopulationSpec


def _quiet_lightning() -> None:
    """Keep Lightning's banners (GPU available, tips) out of a build's output; its progress bar stays."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for msg in (
        ".*configure_optimizers.*",
        ".*does not have many workers.*",
        ".*treespec.*",
        ".*LeafSpec.*",
        ".*module\\(s\\) in eval mode.*",
    ):  # the frozen template is switched to train() per step
        warnings.filterwarnings("ignore", message=msg)


def _epoch_callbacks(L, on_epoch: Callable[[int, int], None] | None) -> list:
    """A Lightning callback calling ``on_epoch(epochs done, total)`` after every training epoch (none if None)."""
    if on_epoch is None:
        return []

    class EpochDone(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            on_epoch(trainer.current_epoch + 1, trainer.max_epochs)

    return [EpochDone()]


def train_population(
    spec: PopulationSpec, dataset: Dataset, progress: bool = True, on_epoch: Callable[[int, int], None] | None = None
) -> PopulationResult:
    """Train every model of a population to ``spec.epochs`` and return its checkpoints and metrics.
    ``on_epoch(epochs done, total epochs)`` after each epoch (the build's progress display)."""
    import lightning as L  # Lightning only when training: commands that only read zoos start ~2 s faster

    from zoo.training.population_module import PopulationModule  # a LightningModule: imports Lightning

    _quiet_lightning()
    if spec.retain_memory:
        retain_freed_memory()
    module = PopulationModule(spec, dataset)
    if spec.total_epochs == 0:
        module.checkpoint_if_due(0)
        return module.result()
    accelerator, devices = lightning_device(spec.device)  # Lightning moves the module
    trainer = L.Trainer(
        max_epochs=spec.total_epochs,
        accelerator=accelerator,
        devices=devices,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=_epoch_callbacks(L, on_epoch),
    )
    trainer.fit(module)
    return module.result()
