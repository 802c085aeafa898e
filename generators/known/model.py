"""KNOWN: a per-parameter nowcaster that extrapolates weights one step past the full-data training.

A trajectory zoo holds, per model, its weights after training on the full data and after S sequential
stages on nested shrinking subsets. Read reversed (smallest subset -> ... -> full data) the trajectory
is a sequence of T = S + 1 weight vectors; KNOWN learns, for every scalar weight, the next change from its
last ``history`` (H = 5) values and their H - 1 first differences, and is applied recursively past the
full-data weights ("knowledge-overflowed" weights).

Network (per weight kind, as the paper's separate predictors): two streams, values [H] and differences
[H-1], each Linear -> gated activation (tanh(a) * sigmoid(b)) -> Linear -> LeakyReLU; concatenated ->
Linear -> tanh, times the kind's bound. Kinds come from the modules a layout builds (conv kernel: a
parameter of >= 3 dims; dense weight: 2 dims; normalization parameter: any parameter of a norm layer;
bias: another 1-dim parameter), never from names. Scales, fixed from the TRAINING windows per kind:
values are divided by their std, differences by their mean |difference|, the MAE loss is taken in those
units, and the bound on the predicted change is ``bound_factor`` x the ``bound_quantile`` quantile of
|next change|. Buffers (BatchNorm statistics) are not predicted: they keep their last value, and
``zoo nowcast`` recomputes them on the training split.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from generators.registry import Pretrained, save_run
from zoo.errors import ZooError
from zoo.layout import Layout

KINDS = ("conv", "dense", "bias", "norm")
FALLBACK = {"conv": "dense", "dense": "conv", "bias": "norm", "norm": "bias"}  # for a kind never trained on
PREDICT_CHUNK = 4096  # weights per forward when predicting: 1M weights in 4k chunks ran 2.5x faster than in 64k


def weight_kinds(layout: Layout) -> torch.Tensor:
    """[P] kind index per flat coordinate (into KINDS), -1 for buffers; derived from the built module's layers."""
    module = layout.build()
    owners = dict(module.named_modules())
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
    kinds = torch.full((layout.size,), -1, dtype=torch.int64)
    for e in layout.entries:
        if e.kind != "parameter":
            continue
        owner = owners.get(e.name.rpartition(".")[0])
        if isinstance(owner, norm_types):
            k = "norm"
        elif len(e.shape) >= 3:
            k = "conv"
        elif len(e.shape) == 2:
            k = "dense"
        else:
            k = "bias"
        kinds[e.offset : e.stop] = KINDS.index(k)
    return kinds


class Stream(nn.Module):
    """Linear -> gated activation tanh(a) * sigmoid(b) -> Linear -> LeakyReLU: [B, d] -> [B, out]."""

    def __init__(self, d: int, hidden: int, out: int):
        super().__init__()
        self.inp = nn.Linear(d, 2 * hidden)
        self.out = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.inp(x).chunk(2, dim=-1)
        return F.leaky_relu(self.out(torch.tanh(a) * torch.sigmoid(b)), 0.2)


class Nowcaster(nn.Module):
    """History [B, H] -> bounded change in (-1, 1) [B]: a values stream on hist / value_scale and a differences
    stream on diff(hist) / diff_scale, concatenated, Linear, tanh."""

    def __init__(self, history: int, hidden: int, out: int):
        super().__init__()
        self.values = Stream(history, hidden, out)
        self.diffs = Stream(history - 1, hidden, out)
        self.head = nn.Linear(2 * out, 1)
        nn.init.zeros_(self.head.weight)  # starts by predicting no change (the full-data weights)
        nn.init.zeros_(self.head.bias)

    def forward(self, hist: torch.Tensor, value_scale: torch.Tensor, diff_scale: torch.Tensor) -> torch.Tensor:
        both = torch.cat([self.values(hist / value_scale), self.diffs(hist.diff(dim=1) / diff_scale)], -1)
        return torch.tanh(self.head(both)).squeeze(-1)


class Known(nn.Module, Pretrained):
    """The KNOWN nowcaster: ``predict(trajectory)`` -> next weights; a plain module (``generators.lit`` wraps it
    for meta-training).

    Windows are [B, H + 1] float (H history values, then the next value) with a kind index [B]; the
    predicted change is bound[kind] * tanh(net_kind(values / value_scale, diffs / diff_scale)).
    """

    name: ClassVar[str] = "known"

    def __init__(self, config: dict, origin: dict, dims: dict):
        super().__init__()
        self.config, self.origin, self.dims = dict(config), dict(origin), dict(dims)
        self.history = int(dims["history"])
        self.nets = nn.ModuleList(Nowcaster(self.history, int(config["hidden"]), int(config["out"])) for _ in KINDS)
        for name in ("value_scale", "diff_scale", "bound", "seen"):  # per kind, fixed from training windows
            self.register_buffer(name, torch.ones(len(KINDS)))
        self.run_dir: Path | None = None

    def save(self, directory: str | Path) -> Path:
        """Write the run folder (``config.json`` + ``model.safetensors``) that ``generators.load`` reads back."""
        self.run_dir = save_run(directory, self.name, self.config, self.origin, self.dims, self.state_dict())
        return self.run_dir

    # ------------------------------------------------------------------ scales from data
    def set_scales(self, windows: torch.Tensor, kinds: torch.Tensor) -> None:
        """Fix the per-kind input scales and output bounds from TRAINING windows [N, H+1] with kinds [N]."""
        q = float(self.config["bound_quantile"])
        gen = torch.Generator().manual_seed(0)
        for k in range(len(KINDS)):
            w = windows[kinds == k]
            if len(w) == 0:
                self.seen[k] = 0.0
                continue
            if len(w) > 1_000_000:  # quantiles of a fixed random subset (torch.quantile has a size limit)
                w = w[torch.randperm(len(w), generator=gen)[:1_000_000]]
            hist = w[:, : self.history]
            step = (w[:, -1] - w[:, -2]).abs()
            self.value_scale[k] = hist.std().clamp_min(1e-8)
            self.diff_scale[k] = hist.diff(dim=1).abs().mean().clamp_min(1e-10)
            self.bound[k] = (float(self.config["bound_factor"]) * torch.quantile(step, q)).clamp_min(1e-10)
            self.seen[k] = 1.0

    # ------------------------------------------------------------------ the forward
    def _kind_change(self, hist: torch.Tensor, k: int) -> torch.Tensor:
        """Predicted next change [B] of weights of kind ``k`` with history [B, H] (an unseen kind borrows
        its FALLBACK's predictor)."""
        k = k if self.seen[k] > 0 else KINDS.index(FALLBACK[KINDS[k]])
        return self.nets[k](hist, self.value_scale[k], self.diff_scale[k]) * self.bound[k]

    def change(self, hist: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
        """Predicted next change [B] of weights with history [B, H] and kind indices [B] (all >= 0)."""
        out = torch.zeros(hist.shape[0], dtype=hist.dtype, device=hist.device)
        for k in torch.unique(kinds).tolist():
            sel = kinds == k
            out[sel] = self._kind_change(hist[sel], k)
        return out

    def _change_of_kind(self, hist: torch.Tensor, k: int) -> torch.Tensor:
        """``_kind_change`` in chunks of PREDICT_CHUNK weights (the activations stay in cache)."""
        return torch.cat(
            [self._kind_change(hist[i : i + PREDICT_CHUNK], k) for i in range(0, len(hist), PREDICT_CHUNK)]
        )

    def _loss(self, batch) -> torch.Tensor:
        windows, kinds = batch
        hist, target = windows[:, : self.history], windows[:, -1] - windows[:, -2]
        err = (self.change(hist, kinds) - target) / self.diff_scale[kinds]  # in each kind's step units
        return err.square().mean() if self.config.get("loss", "mae") == "mse" else err.abs().mean()

    # ------------------------------------------------------------------ fitting (generators.lit wraps these)
    def training_loss(self, batch) -> torch.Tensor:
        """The loss of a batch of training windows."""
        return self._loss(batch)

    def validation_loss(self, batch, batch_idx: int) -> tuple[torch.Tensor, int]:
        """(the loss of a batch of validation windows, their count)."""
        return self._loss(batch), batch[0].shape[0]

    def validation_metrics(self) -> dict:
        """Nothing beyond ``val/loss``."""
        return {}

    def optimizers(self, total_steps: int) -> torch.optim.Optimizer:
        """Adam over the per-kind nets (the scales are fixed buffers)."""
        return torch.optim.Adam(self.nets.parameters(), lr=float(self.config["lr"]))

    # ------------------------------------------------------------------ prediction
    def layout_for(self, size: int, layout: Layout | None = None) -> Layout:
        """The layout of [.., P=size] weights: the one given, else the training zoo's layout of that size."""
        if layout is not None:
            if layout.size != size:
                raise ZooError(f"weights have {size} coordinates but the layout has {layout.size}")
            return layout
        found = [
            Layout.from_json(v) for v in self.origin.get("layouts", {}).values() if Layout.from_json(v).size == size
        ]
        if len(found) != 1:
            raise ZooError(f"no unique training layout has {size} coordinates; pass layout= (the models' Layout)")
        return found[0]

    def nowcast(
        self,
        trajectory: torch.Tensor,
        layout: Layout | None = None,
        steps: int = 1,
        device: torch.device | None = None,
    ) -> torch.Tensor:
        """[n, steps, P] weights on the CPU past the end of reversed trajectories [n, T, P] (or one model's
        [T, P]), applied recursively: each prediction is appended and the oldest value dropped. ``device``: where
        the predictor runs (None: where it is; it is moved back after)."""
        traj = torch.as_tensor(trajectory)
        if traj.ndim == 2:
            traj = traj[None]
        if traj.ndim != 3:
            raise ZooError(f"a trajectory is [n, T, P] (or [T, P] for one model), got shape {tuple(traj.shape)}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ZooError(f"steps must be a positive integer, got {steps!r}")
        n, t, p = traj.shape
        if t < self.history:
            raise ZooError(
                f"a trajectory of {t} checkpoints is too short: this nowcaster reads the last {self.history}"
            )
        if not torch.isfinite(traj[:, -self.history :]).all():
            raise ZooError("the trajectory's last checkpoints hold NaN/inf weights")
        home = self.seen.device
        dev = home if device is None else device
        traj = traj[:, -self.history :].to(dev)
        kinds = weight_kinds(self.layout_for(p, layout)).to(dev)
        unseen = sorted({KINDS[k] for k in torch.unique(kinds[kinds >= 0]).tolist() if self.seen[k] == 0})
        if unseen:
            warnings.warn(
                f"KNOWN never trained on {unseen}; using the predictor of {[FALLBACK[k] for k in unseen]} for them",
                stacklevel=2,
            )
        window = traj[:, -self.history :].to(torch.float32).clone()  # [n, H, P]
        out = torch.empty(n, steps, p, dtype=torch.float32, device=dev)
        groups = [(k, torch.nonzero(kinds == k).squeeze(1)) for k in range(len(KINDS)) if (kinds == k).any()]
        was_training = self.training
        self.eval()
        self.to(dev)
        try:
            with torch.inference_mode():
                for s in range(steps):
                    nxt = window[:, -1].clone()
                    for k, idx in groups:
                        hist = window[:, :, idx].permute(0, 2, 1).reshape(-1, self.history)  # [n * P_k, H]
                        nxt[:, idx] += self._change_of_kind(hist, k).view(n, -1)
                    out[:, s] = nxt
                    window = torch.cat([window[:, 1:], nxt[:, None]], 1)
        finally:
            self.to(home)
            self.train(was_training)
        return out.cpu()

    def predict(self, trajectory: torch.Tensor, layout: Layout | None = None, steps: int = 1) -> torch.Tensor:
        """The weights ``steps`` recursive steps past reversed trajectories [n, T, P] (or [T, P]): [n, P]."""
        return self.nowcast(trajectory, layout, steps)[:, -1]
