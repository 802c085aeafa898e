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
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from zoo.arch import MLP
from zoo.layout import Layout
from zoo.app.memory import retain_freed_memory
from zoo.datasets import Dataset
from zoo.errors import ZooError


LOG_EVERY = 10  # steps between progress-bar loss updates


@dataclass
class PopulationSpec:
    """What a population needs: one template architecture, per-model hyperparameters, shared settings."""

    template: nn.Module
    layout: Layout
    init_states: Sequence[dict[str, torch.Tensor]]  # one state dict per model (its initialization)
    learning_rates: Sequence[float]
    weight_decays: Sequence[float]
    data_seeds: Sequence[int]
    batch_size: int
    epochs: int
    checkpoint_epochs: Sequence[int]
    optimizer: str = "sgd"  # sgd | adam | adamw
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: str = "constant"  # constant | cosine
    eval_memory_floats: int = 50_000_000  # bound on activations per evaluation chunk
    retain_memory: bool = True  # glibc keeps freed large blocks: -25..45% step and eval time (bench)
    device: str = "cpu"  # cpu | cuda | auto (cuda when available): where the population trains
    extra: dict = field(default_factory=dict)
    # trajectory stages (zoo.trajectory): after ``epochs``, ``stages`` x ``stage_epochs`` on nested subsets
    stages: int = 0
    stage_epochs: int = 1
    stage_rates: tuple[float, float] = (1.0, 1.0)
    subset_seeds: Sequence[int] = ()  # one per model: zoo.trajectory.stage_subsets' seed

    @property
    def total_epochs(self) -> int:
        """Full-data epochs plus every stage's epochs."""
        return self.epochs + self.stages * self.stage_epochs


@dataclass
class PopulationResult:
    """Checkpoints [M, C, P] (NaN where a model had diverged), metrics [M, C, K], per-model status."""

    weights: torch.Tensor
    metrics: torch.Tensor
    metric_names: list[str]
    diverged: torch.Tensor  # bool [M]
    last_checkpoint: torch.Tensor  # int [M], index of the last finite checkpoint (-1: none)


def stacked_mlp_forward(template: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
                        shared_input: bool, feature_major: bool = False) -> torch.Tensor:
    """The zoo MLP for M models at once with fused batched GEMMs: x [M, b, ...] or shared [b, ...] -> [M, b, K].

    Same function as ``template`` with each model's parameters (tested). ``feature_major`` computes
    ``h <- W h + b`` on [M, features, b] activations: every weight gradient then comes out in the
    parameter's own [out, in] layout (no transposed copy per layer) and the output is a view whose
    transpose is the loss's [M, K, b]; 1.6x faster for training steps. Batch-major, the default, sums in
    the order ``nn.Linear`` does, so stored evaluation metrics match ``Zoo.module`` exactly.
    """
    m = next(iter(params.values())).shape[0]
    h = x.flatten(1) if shared_input else x.flatten(2)
    if shared_input:
        h = h.expand(m, *h.shape)
    if feature_major:
        h = h.transpose(1, 2)
    for i, layer in enumerate(template.layers):
        if isinstance(layer, nn.Linear):
            w, b = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
            h = torch.baddbmm(b.unsqueeze(-1), w, h) if feature_major else torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        else:
            h = layer(h)  # elementwise activation
    return h.transpose(1, 2) if feature_major else h


def population_forward(template: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                       x: torch.Tensor, shared_input: bool = True, feature_major: bool = False) -> torch.Tensor:
    """Outputs [M, b, K] of M models of ``template``'s architecture: x [M, b, ...] or shared [b, ...].

    ``params``/``buffers`` hold stacked [M, *shape] tensors. MLPs take the fused GEMM path
    (``stacked_mlp_forward``; ``feature_major`` for training steps), everything else ``vmap`` over
    ``functional_call``, so the template's mode decides BatchNorm: eval uses the running statistics, train
    normalizes by the batch and updates the stacked buffers in place. The one forward of the trainer's
    steps and checkpoint metrics and of ``zoo.evaluate``.
    """
    if isinstance(template, MLP):
        return stacked_mlp_forward(template, params, x, shared_input, feature_major=feature_major)

    def f(p, b, xi):
        return functional_call(template, (p, b), (xi,))

    return vmap(f, in_dims=(0, 0, None if shared_input else 0))(params, buffers, x)


def activation_floats_per_sample(module: nn.Module, x: torch.Tensor) -> int:
    """Elements of all intermediate outputs for one sample: sizes evaluation chunks to a memory bound."""
    total = 0

    def hook(_m, _i, out):
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out[0].numel()

    handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            was_training = module.training
            module.eval()
            module(x[:1])
            module.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return max(total, 1)


def _quiet_lightning() -> None:
    """Keep Lightning's banners (GPU available, tips) out of a build's output; its progress bar stays."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for msg in (".*configure_optimizers.*", ".*does not have many workers.*", ".*treespec.*", ".*LeafSpec.*",
                ".*module\\(s\\) in eval mode.*"):  # the frozen template is switched to train() per step
        warnings.filterwarnings("ignore", message=msg)


def _epoch_callbacks(L, on_epoch: Callable[[int, int], None] | None) -> list:
    """A Lightning callback calling ``on_epoch(epochs done, total)`` after every training epoch (none if None)."""
    if on_epoch is None:
        return []

    class EpochDone(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            on_epoch(trainer.current_epoch + 1, trainer.max_epochs)

    return [EpochDone()]


DEVICES = ("cpu", "cuda", "auto")


def resolve_device(device: str) -> str:
    """'cpu' or 'cuda' for a build's ``device`` setting; a one-line ZooError for cuda without a GPU."""
    if device not in DEVICES:
        raise ZooError(f"device={device!r} is invalid: expected one of {list(DEVICES)}")
    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        raise ZooError("device=cuda was asked for but torch sees no CUDA GPU (torch.cuda.is_available() is False"
                       f" with torch {torch.__version__}); use device=cpu or device=auto")
    return "cuda" if device == "cuda" or (device == "auto" and available) else "cpu"


def train_population(spec: PopulationSpec, dataset: Dataset, progress: bool = True,
                     on_epoch: Callable[[int, int], None] | None = None) -> PopulationResult:
    """Train every model of a population to ``spec.epochs`` and return its checkpoints and metrics.
    ``on_epoch(epochs done, total epochs)`` after each epoch (the build's progress display)."""
    import lightning as L  # imported here: commands that only read zoos start ~2 s faster without it

    from zoo.training.population_module import PopulationModule

    _quiet_lightning()
    if spec.retain_memory:
        retain_freed_memory()
    module = PopulationModule(spec, dataset)
    if spec.total_epochs == 0:
        module.checkpoint_if_due(0)
        return module.result()
    accelerator = "gpu" if resolve_device(spec.device) == "cuda" else "cpu"  # Lightning moves the module
    trainer = L.Trainer(max_epochs=spec.total_epochs, accelerator=accelerator, devices=1, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=_epoch_callbacks(L, on_epoch))
    trainer.fit(module)
    return module.result()
