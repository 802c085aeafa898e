"""LightningModule around any weight encoder: loss, optimizer and the target's metrics per split.

Every constructor argument is a plain type (str, float, list, dict), saved as hyperparameters, so a
checkpoint loads with ``torch.load(weights_only=True)`` and rebuilds the exact model (see wsl.predict).
Regression targets are standardized with training-split statistics; metrics are on the original scale.
``loss="bce"`` instead reads the encoder's output as a logit and fits targets in [0, 1] (accuracies) with binary
cross-entropy, predicting their sigmoid: the loss Zhou et al. (2023, NFN) train accuracy predictors with.
"""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch
import torch.nn.functional as F

from wsl.encoders import build_encoder
from wsl.space import WeightSpace
from wsl.targets import TargetSpec, classification_metrics, regression_metrics
from zoo.errors import ZooError

LOSSES = ("mse", "bce")  # regression losses: MSE on standardized targets | BCE on a sigmoid for targets in [0, 1]


class WeightModel(L.LightningModule):
    """Encoder + target head trained on normalized weight batches from a WeightDataModule."""

    def __init__(
        self,
        encoder: str,
        space: Mapping,
        target: Mapping,
        normalizer: Mapping,
        encoder_kwargs: Mapping | None = None,
        target_mean: float = 0.0,
        target_std: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        loss: str = "mse",
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ZooError(f"loss {loss!r} is unknown; choose one of {list(LOSSES)}")
        self.save_hyperparameters()
        self.space = WeightSpace.from_dict(space)
        self.target = TargetSpec.from_dict(target)
        if loss == "bce" and self.target.kind != "regression":
            raise ZooError(f"loss bce fits regression targets in [0, 1]; task {self.target.name} is a classification")
        self.encoder = build_encoder(encoder, self.space, self.target.out_dim, **dict(encoder_kwargs or {}))
        self._outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"val": [], "test": []}

    def forward(self, w: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        """Normalized weights -> [n] predictions (regression, original scale) or [n, classes] logits."""
        out = self.encoder(w, layout)
        if self.target.kind == "regression":
            if self.hparams.get("loss", "mse") == "bce":
                return torch.sigmoid(out[:, 0])
            return out[:, 0] * self.hparams["target_std"] + self.hparams["target_mean"]
        return out

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.target.kind == "regression":
            if self.hparams.get("loss", "mse") == "bce":
                return F.binary_cross_entropy_with_logits(out[:, 0], y.to(out.dtype))
            z = (y - self.hparams["target_mean"]) / self.hparams["target_std"]
            return F.mse_loss(out[:, 0], z)
        return F.cross_entropy(out, y)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(self.encoder(batch["w"], batch["layout"]), batch["y"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["y"]))
        return loss

    def _eval_step(self, batch: dict, split: str) -> None:
        out = self.encoder(batch["w"], batch["layout"])
        self.log(f"{split}/loss", self._loss(out, batch["y"]), on_step=False, on_epoch=True, batch_size=len(batch["y"]))
        pred = self(batch["w"], batch["layout"]) if self.target.kind == "regression" else out
        self._outputs[split].append((pred.detach().cpu(), batch["y"].cpu()))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def metrics(self, pred: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        if self.target.kind == "regression":
            return regression_metrics(pred, y)
        return classification_metrics(pred, y)

    def _epoch_end(self, split: str) -> None:
        outs = self._outputs[split]
        if not outs:
            return
        pred, y = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
        for k, v in self.metrics(pred, y).items():
            self.log(f"{split}/{k}", v)
        outs.clear()

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"])
