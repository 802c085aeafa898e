"""Baselines that need no training, built from a training zoo: the yardsticks every generator is measured against.

- ``noise``: aligned (canonical) training weights plus Gaussian noise on every trainable parameter, at the
  scales sigma that cost a given accuracy drop (e.g. 0, 1 and 5 percentage points). Sigma is chosen on
  VALIDATION data carved from the training split (never the test split), with the same noise draws at every
  sigma so that the accuracy curve is smooth, by a grid over log(sigma) refined by bisection. Buffers
  (BatchNorm running statistics) stay those of the source model: at sigma -> 0 a noise sample is its source,
  exactly. Like the other baselines (and a generator fitted to canonical weights) the samples live in the
  canonical frame: a source is a fixed point of the weight matching that aligned it, so a small perturbation
  keeps its alignment and its nearest-neighbour distance is the noise's norm (noise on raw weights would be
  re-aligned independently of its source, and where the matching has near-ties it lands elsewhere).
- ``average``: the mean of k random distinct aligned (canonical) training models; BatchNorm statistics
  recomputed on the training split, since the averaged ones belong to no network; with ``repair=True``
  REPAIRed instead (zoo.rebasin.repair: every unit reset to the mean of its k members' statistics on the
  training split; the averaged weights are the same, the BatchNorm affine parameters and head are rescaled).
- ``gaussian``: a per-parameter Gaussian (mean and std of each coordinate) fitted to the aligned training
  weights; buffers from the training mean, then BatchNorm statistics recomputed on the training split.

Everything is a pure function of tensors ``[n, P]`` in a layout's flat order; randomness comes from a
seeded ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

import zoo
from zoo.datasets import Dataset
from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.rebasin.repair import repair_mix

BASELINES = ("noise", "average", "gaussian")
VAL_FRACTION = 0.2  # share of the training split held out to choose the noise scales
SIGMA_MODELS = 32  # training models whose validation accuracy drop picks sigma
GRID = 28  # log-spaced sigmas from 1e-4 to ~3 times the parameters' RMS
BISECT = 8  # bisection steps in log(sigma) between the last grid point within a target and the next


@dataclass
class NoiseScales:
    """The sigma chosen for each target drop (percentage points of validation accuracy) and how it was found."""

    sigmas: dict[float, float]  # target drop (pp) -> sigma
    val_drop: dict[float, float]  # target drop (pp) -> measured drop at that sigma (pp)
    base_val_acc: float  # mean validation accuracy of the unperturbed models
    models: int  # training models the drop is averaged over
    val_samples: int  # held-out training points
    curve: list[tuple[float, float]] = field(default_factory=list)  # (sigma, drop pp) over the grid

    def to_json(self) -> dict:
        """JSON-ready record: sigmas and measured drops keyed by the target drop."""
        return {
            "sigmas": {_pct(k): v for k, v in self.sigmas.items()},
            "val_drop_pp": {_pct(k): v for k, v in self.val_drop.items()},
            "base_val_acc": self.base_val_acc,
            "models": self.models,
            "val_samples": self.val_samples,
            "selected_on": f"validation: {VAL_FRACTION:.0%} of the training split (seeded), never the test split",
            "curve": [[s, d] for s, d in self.curve],
        }


def _pct(drop: float) -> str:
    """A target drop as a method-name suffix: 0 -> '0%', 0.5 -> '0.5%'."""
    return f"{drop:g}%"


def noise_name(drop: float) -> str:
    """Method name of the noise baseline at one target drop, e.g. ``noise-1%``."""
    return f"noise-{_pct(drop)}"


def validation_split(
    dataset: Dataset, fraction: float = VAL_FRACTION, seed: int = 0, points: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(X_val, y_val): a seeded ``fraction`` of the TRAINING split, the only data the noise scales see; ``points``:
    at most that many of them (the first of the same seeded order)."""
    if dataset.kind != "classification":
        raise ZooError("noise scales are chosen by accuracy drop: the dataset must be a classification task")
    n = len(dataset.X_train)
    k = max(1, int(round(fraction * n)))
    if points is not None:
        k = max(1, min(k, int(points)))
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:k]
    return dataset.X_train[idx], dataset.y_train[idx]


def _accuracy(layout: Layout, weights: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Accuracy [n] (float64) of flat weights [n, P] on (X, y), one batched forward."""
    return (zoo.predict(layout, weights, X).argmax(-1) == y).double().mean(1)


def add_noise(layout: Layout, weights: torch.Tensor, sigma: float, noise: torch.Tensor) -> torch.Tensor:
    """weights [n, P] + sigma * noise [n, P] on the trainable parameters only (buffers untouched)."""
    mask = layout.parameter_mask()
    out = weights.clone()
    out[:, mask] += float(sigma) * noise[:, mask]
    return out


def choose_noise_scales(
    layout: Layout,
    weights: torch.Tensor,
    dataset: Dataset,
    drops: Sequence[float] = (0, 1, 5),
    seed: int = 0,
    models: int = SIGMA_MODELS,
    val_points: int | None = None,
) -> NoiseScales:
    """The largest sigma whose mean validation-accuracy drop is <= each target (percentage points).

    ``weights`` [m, P] are training models; ``models`` of them (seeded) each get one fixed noise direction, and
    the drop of their mean accuracy on held-out TRAINING data is measured along a log grid of sigmas, then
    refined by bisection. ``val_points``: at most that many held-out inputs. The test split is never read.
    """
    drops = sorted({float(d) for d in drops})
    if not drops or drops[0] < 0:
        raise ZooError(f"noise drops must be >= 0 percentage points, got {list(drops)}")
    X, y = validation_split(dataset, seed=seed, points=val_points)
    gen = torch.Generator().manual_seed(int(seed) + 1)
    pick = torch.randperm(weights.shape[0], generator=gen)[: max(1, int(models))]
    W = weights[pick].to(torch.float32)
    eps = torch.randn(W.shape, generator=gen)
    mask = layout.parameter_mask()
    rms = float(W[:, mask].square().mean().sqrt()) or 1.0
    base = float(_accuracy(layout, W, X, y).mean())

    def drop_at(sigmas: Sequence[float]) -> list[float]:
        """Drop (pp) of the mean validation accuracy at each sigma, all sigmas in one batched forward."""
        batch = torch.cat([add_noise(layout, W, s, eps) for s in sigmas])
        acc = _accuracy(layout, batch, X, y).view(len(sigmas), -1).mean(1)
        return [100.0 * (base - float(a)) for a in acc]

    grid = (rms * np.logspace(-4, 0.5, GRID)).tolist()
    curve = drop_at(grid)
    lo_hi = {}
    for d in drops:
        ok = [i for i, v in enumerate(curve) if v <= d]
        if not ok:  # even the smallest sigma costs more than the target: keep the smallest
            lo_hi[d] = (grid[0], grid[0], curve[0])
            continue
        i = max(ok)
        lo_hi[d] = (grid[i], grid[i + 1] if i + 1 < len(grid) else grid[i], curve[i])
    for _ in range(BISECT):  # one batched forward per step for all targets at once
        open_ = [d for d in drops if lo_hi[d][1] > lo_hi[d][0] * (1 + 1e-6)]
        if not open_:
            break
        mids = [float(np.sqrt(lo_hi[d][0] * lo_hi[d][1])) for d in open_]
        for d, s, v in zip(open_, mids, drop_at(mids)):
            lo, hi, best = lo_hi[d]
            lo_hi[d] = (s, hi, v) if v <= d else (lo, s, best)
    return NoiseScales(
        sigmas={d: lo_hi[d][0] for d in drops},
        val_drop={d: lo_hi[d][2] for d in drops},
        base_val_acc=base,
        models=int(W.shape[0]),
        val_samples=len(X),
        curve=list(zip(grid, curve)),
    )


def noise_baseline(
    layout: Layout, weights: torch.Tensor, n: int, sigma: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """n noisy copies of random training models: ([n, P] weights, [n] index of each one's source row)."""
    m = weights.shape[0]
    src = torch.randperm(m, generator=generator)[:n] if n <= m else torch.randint(m, (n,), generator=generator)
    eps = torch.randn(n, weights.shape[1], generator=generator)
    return add_noise(layout, weights[src], sigma, eps), src


def average_baseline(
    layout: Layout,
    canonical: torch.Tensor,
    n: int,
    k: int,
    generator: torch.Generator,
    dataset: Dataset,
    repair: bool = False,
    points: int | None = None,
) -> torch.Tensor:
    """[n, P]: each the mean of k random distinct aligned training models, BatchNorm recalibrated on train (on a
    seeded subset of ``points`` training inputs when given) or REPAIRed to the members' mean unit statistics on
    train, with ``repair``."""
    m = canonical.shape[0]
    k = min(int(k), m)
    if k < 1:
        raise ZooError(f"the average baseline needs k >= 1 models, got {k}")
    pick = torch.rand(n, m, generator=generator).argsort(1)[:, :k]  # k distinct rows per sample
    if repair:
        return repair_mix(layout, canonical.to(torch.float32)[pick], torch.full((n, k), 1.0 / k), dataset)
    avg = canonical.to(torch.float64)[pick].mean(1).to(torch.float32)
    return zoo.recalibrate_bn(layout, avg, dataset, points=points)


def gaussian_baseline(
    layout: Layout,
    canonical: torch.Tensor,
    n: int,
    generator: torch.Generator,
    dataset: Dataset,
    points: int | None = None,
) -> torch.Tensor:
    """[n, P] from a per-parameter Gaussian fitted to aligned training weights; BatchNorm recalibrated on train
    (on a seeded subset of ``points`` training inputs when given)."""
    mean = canonical.to(torch.float64).mean(0)
    std = canonical.to(torch.float64).std(0, unbiased=canonical.shape[0] > 1)
    mask = layout.parameter_mask()
    out = mean.expand(n, -1).clone()
    eps = torch.randn(n, int(mask.sum()), generator=generator, dtype=torch.float64)
    out[:, mask] += std[mask] * eps
    return zoo.recalibrate_bn(layout, out.to(torch.float32), dataset, points=points)


def parse_baselines(spec: str | Sequence[str] | None) -> list[str]:
    """Baseline names from 'noise,average,gaussian' (or a list); '' / 'none' / None -> []."""
    if spec is None:
        return []
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    if names == ["none"]:
        return []
    unknown = [s for s in names if s not in BASELINES]
    if unknown:
        raise ZooError(f"unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)} (or none)")
    return list(dict.fromkeys(names))


def build_baselines(
    names: Sequence[str],
    layout: Layout,
    canonical: torch.Tensor,
    dataset: Dataset,
    n: int,
    seed: int = 0,
    drops: Sequence[float] = (0, 1, 5),
    k: int = 16,
    repair: bool = False,
    sigma_models: int = SIGMA_MODELS,
    val_points: int | None = None,
    bn_points: int | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """({method name: [n, P] weights}, JSON-ready info) for the named baselines, from aligned training weights
    ``canonical`` [m, P]; only the training split of ``dataset`` is read. ``repair``: REPAIR the averages.
    ``sigma_models`` / ``val_points``: training models and held-out inputs that pick the noise sigmas;
    ``bn_points``: training inputs of the average and gaussian BatchNorm statistics (None: all; a diagnosis of
    big networks sizes these, generators.diagnose.budget)."""
    if n < 1:
        raise ZooError(f"baselines need n >= 1 samples, got {n}")
    out: dict[str, torch.Tensor] = {}
    info: dict = {}
    gen = torch.Generator().manual_seed(int(seed))
    for name in parse_baselines(list(names)):
        if name == "noise":
            scales = choose_noise_scales(
                layout, canonical, dataset, drops, seed=seed, models=sigma_models, val_points=val_points
            )
            info["noise"] = {**scales.to_json(), "added_to": "aligned training weights (trainable parameters)"}
            for d, s in scales.sigmas.items():
                out[noise_name(d)], _ = noise_baseline(layout, canonical, n, s, gen)
        elif name == "average":
            out["average"] = average_baseline(layout, canonical, n, k, gen, dataset, repair, bn_points)
            on = _on_train(None if repair else bn_points)
            info["average"] = {"k": min(int(k), canonical.shape[0]), "bn_recalibrated_on": on}
            if repair:
                info["average"]["repair"] = "units reset to the members' mean statistics on train (REPAIR)"
        else:
            out["gaussian"] = gaussian_baseline(layout, canonical, n, gen, dataset, bn_points)
            info["gaussian"] = {"fitted_to": "aligned training weights", "bn_recalibrated_on": _on_train(bn_points)}
    return out, info


def _on_train(points: int | None) -> str:
    return "train" if points is None else f"train ({int(points)} seeded inputs)"
