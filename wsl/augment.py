"""Batch augmentations in weight space, applied to raw padded weights before normalization.

Config (``conf/augment/*.yaml``), each op applied to a sample with probability ``p`` (0 disables it),
in this fixed order (mixup first, so a mix made in re-based coordinates is then permuted and perturbed):
  mixup:    {p, alpha, mode, repair}  lam ~ Beta(alpha, alpha) mix with a partner of the same layout;
                                   mode plain | permuted (partner randomly permuted first) |
                                   aligned (both re-based: the store's canonical weights when present,
                                   else the partner weight-matched to the sample); repair: true REPAIRs
                                   each mix (zoo.rebasin.repair: units reset to the lam-weighted endpoint
                                   statistics on REPAIR_SAMPLES seeded TRAINING samples of the zoo's data;
                                   several forwards per mixed network, so slower; needs buffers)
  permute:  {p}                    random hidden-unit permutation (function-preserving)
  sign_flip: {p, tanh}             each unit with an odd activation (sine networks, INRs; with tanh: true
                                   also tanh units) flips sign with probability 1/2 (function-preserving;
                                   no-op for other networks)
  rescale:  {p, log_std}           each ReLU unit scaled by c = exp(log_std * N(0, 1)): incoming weights and
                                   bias (or its BatchNorm's affine parameters) times c, outgoing over c
                                   (function-preserving; zoo.rebasin.symmetries; no-op without ReLU units)
  noise:    {p, scale}             w + scale * std(tensor) * N(0, 1), std per model and tensor
  dropout:  {p, rate}              zero each weight with probability ``rate``
  sparsify: {p, fraction}          zero the ``fraction`` smallest-magnitude weights of each tensor
Noise, dropout and sparsification touch trainable parameters only (not BatchNorm running statistics).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from wsl.space import WeightSpace
from wsl.symmetry import align_to, flip_signs, permute, rescale
from zoo.app.checks import number, one_of, optional, typed
from zoo.app.schema import Schema, defaults, key, section, validate
from zoo.datasets import Dataset
from zoo.errors import ZooError
from zoo.rebasin.repair import repair_mix

REPAIR_SAMPLES = 512  # training samples whose statistics REPAIR a mix (seeded subset; bounds the cost per batch)
MIXUP_MODES = ("plain", "permuted", "aligned")
P = number(float, 0, 1)
P_DOC = "probability per training sample (0: off)"


@dataclass(frozen=True)
class PermuteConfig(Schema):
    WHERE = "augment.permute."
    p: float = key(0.0, P, P_DOC)


@dataclass(frozen=True)
class SignFlipConfig(Schema):
    WHERE = "augment.sign_flip."
    p: float = key(0.0, P, P_DOC)
    tanh: bool = key(False, one_of(True, False), "also flip tanh units (odd activations)")


@dataclass(frozen=True)
class RescaleConfig(Schema):
    WHERE = "augment.rescale."
    p: float = key(0.0, P, P_DOC)
    log_std: float = key(0.5, number(float, 0), "each ReLU unit scaled by exp(log_std * N(0, 1))")


@dataclass(frozen=True)
class NoiseConfig(Schema):
    WHERE = "augment.noise."
    p: float = key(0.0, P, P_DOC)
    scale: float = key(0.05, number(float, 0), "noise std relative to each tensor's std")


@dataclass(frozen=True)
class DropoutConfig(Schema):
    WHERE = "augment.dropout."
    p: float = key(0.0, P, P_DOC)
    rate: float = key(0.05, number(float, 0, 1), "probability of zeroing each weight")


@dataclass(frozen=True)
class SparsifyConfig(Schema):
    WHERE = "augment.sparsify."
    p: float = key(0.0, P, P_DOC)
    fraction: float = key(0.2, number(float, 0, 1), "share of smallest-magnitude weights zeroed per tensor")


@dataclass(frozen=True)
class MixupConfig(Schema):
    WHERE = "augment.mixup."
    p: float = key(0.0, P, P_DOC)
    alpha: float = key(0.4, number(float, 0, low_open=True), "lam ~ Beta(alpha, alpha)")
    mode: str = key("plain", one_of(*MIXUP_MODES), "plain | permuted (partner permuted first) | aligned (re-based)")
    repair: bool = key(False, one_of(True, False), "REPAIR each mix (slower; needs data.buffers=true)")


@dataclass(frozen=True)
class AugmentConfig(Schema, group="augment", name="base"):
    """A conf/augment/<name>.yaml: each op applied to a training sample with probability ``p`` (order: see above)."""

    WHERE = "augment."

    name: str | None = key(None, optional(typed(str, "a string")), "a label only (augment=NAME chooses the file)")
    permute: PermuteConfig = section(PermuteConfig, "random hidden-unit permutation")
    sign_flip: SignFlipConfig = section(SignFlipConfig, "sign flips of odd-activation units")
    rescale: RescaleConfig = section(RescaleConfig, "ReLU unit rescaling")
    noise: NoiseConfig = section(NoiseConfig, "Gaussian noise")
    dropout: DropoutConfig = section(DropoutConfig, "weight dropout")
    sparsify: SparsifyConfig = section(SparsifyConfig, "magnitude sparsification")
    mixup: MixupConfig = section(MixupConfig, "weight-space MixUp")


DEFAULTS: dict[str, dict] = {op: v for op, v in defaults(AugmentConfig).items() if op != "name"}


def augment_config(cfg: Mapping | None) -> dict[str, dict]:
    """Defaults merged with ``cfg``; ZooError on unknown ops, keys or values (:class:`AugmentConfig`)."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS) - {"name"})
    if unknown:
        raise ZooError(f"unknown augmentation {unknown[0]!r}; choose from {sorted(DEFAULTS)}")
    validate(AugmentConfig, cfg)
    return {op: {**params, **dict(cfg.get(op) or {})} for op, params in DEFAULTS.items()}


class Augmenter:
    """Callable on a batch dict (``w`` [n, P] raw padded, ``y``, ``layout`` [n], optional ``w_canon``).

    ``datasets``: layout index -> the data its models were trained on, read (training split only) by
    ``mixup.repair``."""

    def __init__(
        self,
        space: WeightSpace,
        cfg: Mapping | None = None,
        num_classes: int | None = None,
        seed: int = 0,
        datasets: Mapping[int, Dataset] | None = None,
    ):
        self.space = space
        self.cfg = augment_config(cfg)
        self.datasets: dict[int, Dataset] = {}
        if self.cfg["mixup"]["repair"] and float(self.cfg["mixup"]["p"]) > 0:
            if not space.buffers:
                raise ZooError("mixup.repair needs the BatchNorm buffers in the weight vectors (data.buffers=true)")
            for k, d in dict(datasets or {}).items():
                pick = torch.randperm(len(d.X_train), generator=torch.Generator().manual_seed(int(seed)))
                pick = pick[:REPAIR_SAMPLES]
                self.datasets[int(k)] = dataclasses.replace(d, X_train=d.X_train[pick], y_train=d.y_train[pick])
        self.num_classes = num_classes
        self.generator = torch.Generator().manual_seed(int(seed))
        self._rng = np.random.default_rng(int(seed))
        self._param_slots = [s for s in space.slots if s.kind == "parameter"]

    @property
    def active(self) -> bool:
        return any(float(v["p"]) > 0 for v in self.cfg.values())

    @property
    def needs_canonical(self) -> bool:
        m = self.cfg["mixup"]
        return float(m["p"]) > 0 and m["mode"] == "aligned"

    def _rows(self, n: int, p: float) -> torch.Tensor:
        return torch.rand(n, generator=self.generator) < p

    def _per_tensor(
        self, w: torch.Tensor, mask: torch.Tensor, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        out = w.clone()
        for s in self._param_slots:
            sl = slice(s.offset, s.stop)
            out[:, sl] = fn(w[:, sl], mask[:, sl])
        return out

    def _noise(self, w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scale = float(self.cfg["noise"]["scale"])

        def fn(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            cnt = m.sum(1, keepdim=True).clamp(min=1)
            mu = (v * m).sum(1, keepdim=True) / cnt
            sd = (((v - mu) * m) ** 2).sum(1, keepdim=True).div(cnt).sqrt()
            return v + scale * sd * torch.randn(v.shape, generator=self.generator) * m

        return self._per_tensor(w, mask, fn)

    def _dropout(self, w: torch.Tensor) -> torch.Tensor:
        keep = torch.rand(w.shape, generator=self.generator) >= float(self.cfg["dropout"]["rate"])
        pmask = torch.zeros(w.shape[1], dtype=torch.bool)
        for s in self._param_slots:
            pmask[s.offset : s.stop] = True
        return torch.where(pmask[None] & ~keep, torch.zeros_like(w), w)

    def _sparsify(self, w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = float(self.cfg["sparsify"]["fraction"])

        def fn(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            mag = torch.where(m, v.abs(), torch.full_like(v, float("nan")))
            thr = torch.nanquantile(mag, q, dim=1, keepdim=True)
            return torch.where(v.abs() <= thr, torch.zeros_like(v), v)

        return self._per_tensor(w, mask, fn)

    def _partners(self, layout: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(len(layout))
        out = idx.clone()
        for k in layout.unique():
            members = idx[layout == k]
            out[members] = members[torch.randperm(len(members), generator=self.generator)]
        return out

    def _soft(self, y: torch.Tensor) -> torch.Tensor:
        if y.dtype.is_floating_point:
            return y
        return torch.nn.functional.one_hot(y, -1 if self.num_classes is None else self.num_classes).float()

    def _mixup(self, batch: dict, rows: torch.Tensor) -> dict:
        cfg = self.cfg["mixup"]
        w, y, layout = batch["w"], batch["y"], batch["layout"]
        part = self._partners(layout)
        alpha = float(cfg["alpha"])
        lam = torch.from_numpy(self._rng.beta(alpha, alpha, len(w))).float() if alpha > 0 else torch.ones(len(w))
        lam = torch.where(rows, lam, torch.ones_like(lam))
        if cfg["mode"] == "plain":
            a, b = w, w[part]
        elif cfg["mode"] == "permuted":
            a, b = w, permute(self.space, w[part], layout, self.generator)
        elif "w_canon" in batch:
            a, b = batch["w_canon"], batch["w_canon"][part]
        else:
            a = w
            b = w[part].clone()
            sel = rows.nonzero().flatten()
            if len(sel):
                b[sel] = align_to(self.space, w[sel], w[part][sel], layout[sel], self.generator)
        out = dict(batch)
        out["w"] = torch.where(rows[:, None], lam[:, None] * a + (1 - lam[:, None]) * b, w)
        if cfg["repair"]:
            out["w"] = self._repair(out["w"], a, b, lam, rows, layout)
        if y.dtype.is_floating_point and y.ndim == 1:
            out["y"] = lam * y + (1 - lam) * y[part]
        else:
            ys = self._soft(y)
            out["y"] = lam[:, None] * ys + (1 - lam[:, None]) * ys[part]
        return out

    def _repair(
        self,
        mixed: torch.Tensor,
        a: torch.Tensor,
        b: torch.Tensor,
        lam: torch.Tensor,
        rows: torch.Tensor,
        layout: torch.Tensor,
    ) -> torch.Tensor:
        """The mixed rows REPAIRed per layout: units at the lam-weighted statistics of the two endpoints."""
        out = mixed.clone()
        for k in layout[rows].unique().tolist():
            sel = (rows & (layout == k)).nonzero().flatten()
            if k not in self.datasets:
                raise ZooError(f"mixup.repair needs the training data of layout {k}; none was handed in")
            members = torch.stack([self.space.unpad(a[sel], k), self.space.unpad(b[sel], k)], dim=1)
            coef = torch.stack([lam[sel], 1 - lam[sel]], dim=1)
            lay = self.space.layouts[k]
            fixed = repair_mix(lay, members, coef, self.datasets[k], spec=self.space.spec(k))
            out[sel] = self.space.pad(fixed, k)
        return out

    def __call__(self, batch: dict) -> dict:
        """Augmented copy of ``batch`` (CPU tensors)."""
        if not self.active:
            return batch
        batch = dict(batch)
        c = self.cfg
        n = len(batch["w"])
        if c["mixup"]["p"] > 0:
            rows = self._rows(n, float(c["mixup"]["p"]))
            if rows.any():
                batch = self._mixup(batch, rows)
            elif not batch["y"].dtype.is_floating_point and self.num_classes:
                batch["y"] = self._soft(batch["y"])
        w, layout = batch["w"], batch["layout"]
        mask = self.space.mask(layout)
        if c["permute"]["p"] > 0:
            rows = self._rows(n, float(c["permute"]["p"]))
            w = torch.where(rows[:, None], permute(self.space, w, layout, self.generator), w)
        if c["sign_flip"]["p"] > 0:
            rows = self._rows(n, float(c["sign_flip"]["p"]))
            flipped = flip_signs(self.space, w, layout, self.generator, tanh=bool(c["sign_flip"]["tanh"]))
            w = torch.where(rows[:, None], flipped, w)
        if c["rescale"]["p"] > 0:
            rows = self._rows(n, float(c["rescale"]["p"]))
            scaled = rescale(self.space, w, layout, self.generator, float(c["rescale"]["log_std"]))
            w = torch.where(rows[:, None], scaled, w)
        if c["noise"]["p"] > 0:
            rows = self._rows(n, float(c["noise"]["p"]))
            w = torch.where(rows[:, None], self._noise(w, mask), w)
        if c["dropout"]["p"] > 0:
            rows = self._rows(n, float(c["dropout"]["p"]))
            w = torch.where(rows[:, None], self._dropout(w), w)
        if c["sparsify"]["p"] > 0:
            rows = self._rows(n, float(c["sparsify"]["p"]))
            w = torch.where(rows[:, None], self._sparsify(w, mask), w)
        batch["w"] = w
        return batch
