"""What a population is given and what it gives back: plain data, no Lightning (reading a zoo never imports it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from zoo.layout import Layout

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
    optimizer: str = "sgd"  # sgd | adam | adamw | rmsprop
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    alpha: float = 0.99  # rmsprop's smoothing constant (torch.optim.RMSprop's default)
    schedule: str = "constant"  # constant | cosine
    eval_memory_floats: int = 50_000_000  # bound on activations per evaluation chunk
    retain_memory: bool = True  # glibc keeps freed large blocks: -25..45% step and eval time (bench)
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (cuda when available): where the population trains
    extra: dict = field(default_factory=dict)
    grouped_cnn: bool = True  # zoo.forward.stacked_cnn_forward for plain CNNs; False: vmap (the reference)
    # trajectory stages (zoo.trajectory): after ``epochs``, ``stages`` x ``stage_epochs`` on nested subsets
    stages: int = 0
    stage_epochs: int = 1
    stage_rates: tuple[float, float] = (1.0, 1.0)
    subset_seeds: Sequence[int] = ()  # one per model: zoo.trajectory.stage_subsets' seed
    # recipe.hparams (zoo.training.hparams): per-model dropout rates and training subsets; empty: none / full data
    dropouts: Sequence[float] = ()
    dropout_seeds: Sequence[int] = ()  # one per model: its dropout masks' generator
    train_subsets: Sequence[torch.Tensor] = ()  # one per model: sorted training-set indices (an epoch is one pass)
    # INRs (zoo.inr): each model's own targets [M, N, K] over the dataset's shared inputs X_train [N, ...];
    # the dataset's kind is then "inr" and the metrics are each model's fit error and PSNR on its targets
    targets: torch.Tensor | None = None

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
