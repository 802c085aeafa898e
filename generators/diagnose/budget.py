"""How much forward work a diagnosis spends on its yardsticks (the baselines, the noise scales, the noise
frontier), sized to the networks: big networks get fewer baseline networks, and the report says so.

The yardsticks' default work, counted in multiply-accumulates (MACs) of the networks' forwards: choosing the
noise scales (GRID + BISECT + 1 forwards of SIGMA_MODELS models on the held-out share of the training split),
the noise baselines (one test-split forward each), the average and gaussian baselines (a BatchNorm
recalibration on the training split, then the test split) and the noise frontier ((NOISE_CURVE_LEVELS + 1) x
NOISE_CURVE_N noisy models on the test split). At or under ``budget`` MACs everything keeps its default; over
it every count is scaled by budget / default work, down to a floor each (a few baseline networks still give
a mean). The MACs per input are counted once, from one forward of the layout's module (Conv2d and Linear
layers), so the plan is a pure function of the layout and the data sizes: the same inputs give the same plan.
Measured on resnet-mnist (308,538-parameter BatchNorm ResNets, 3.5 MMAC per 28x28 image, 1,000 test and 4,000
training images, 100 samples): the defaults are 2.0e13 MACs of yardsticks, ~1.7 h on one CPU thread at
3,300 model-images/s; the 64-32-32-10 digits MLPs' full defaults are 5e9 MACs and an MNIST MLP of width 64's
3e11, both left untouched by the default budget of 1e12.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from zoo.datasets import Dataset
from zoo.layout import Layout

FORWARD_BUDGET_MACS = 1e12  # the yardsticks' forwards, above which their counts are scaled down
MIN_BASELINE = 20  # baseline networks per baseline (per noise level) at least
MIN_CURVE = 10  # noisy networks per sigma of the noise frontier at least
MIN_SIGMA_MODELS = 8  # training models whose validation drop picks the noise sigmas at least
MIN_VAL_POINTS = 200  # held-out training inputs that pick the noise sigmas at least
MIN_BN_POINTS = 512  # training inputs of the average and gaussian baselines' BatchNorm statistics at least


def forward_macs(layout: Layout, dataset: Dataset) -> int:
    """Multiply-accumulates of one forward of one input through the layout's network (Conv2d and Linear)."""
    module = layout.build().eval()
    total = 0

    def hook(m: nn.Module, _inp: object, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            total += int(out[0].numel()) * k
        elif isinstance(m, nn.Linear):
            total += int(out[0].numel()) * m.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            module(dataset.X_train[:1])
    finally:
        for h in handles:
            h.remove()
    return max(total, 1)


@dataclass(frozen=True)
class Plan:
    """The yardsticks' sizes for one diagnosis, and the work they cost."""

    macs_per_input: int
    scale: float  # 1.0: the defaults; below: every count scaled by this, down to its floor
    n_baseline: int  # networks per baseline (per noise level)
    curve_n: int  # noisy networks per sigma of the noise frontier
    sigma_models: int
    val_points: int | None  # held-out training inputs that pick the noise sigmas (None: the whole share)
    bn_points: int | None  # training inputs of the average/gaussian BatchNorm statistics (None: all)
    default_macs: float
    planned_macs: float
    budget_macs: float
    defaults: dict

    @property
    def reduced(self) -> bool:
        return self.scale < 1.0

    def to_json(self) -> dict:
        """JSON-ready record, with a one-line note of what was reduced."""
        return {**asdict(self), "reduced": self.reduced, "note": self.note()}

    def note(self) -> str:
        """One line for the printed table: the yardsticks' sizes and why."""
        if not self.reduced:
            return f"yardsticks at their defaults ({self.planned_macs:.2g} MACs, budget {self.budget_macs:.2g})"
        d = self.defaults
        parts = [
            f"{self.n_baseline} per baseline (default {d['n_baseline']})",
            f"noise frontier {self.curve_n} per sigma ({d['curve_n']})",
            f"noise sigmas from {self.sigma_models} models ({d['sigma_models']})",
        ]
        if self.val_points is not None:
            parts.append(f"on {self.val_points} held-out training inputs ({d['val_points']})")
        if self.bn_points is not None:
            parts.append(f"average/gaussian BatchNorm on {self.bn_points} training inputs ({d['bn_points']})")
        return (
            f"big networks ({self.macs_per_input / 1e6:.2g} MMAC per input): yardsticks scaled to the budget of "
            f"{self.budget_macs:.2g} MACs ({self.default_macs:.2g} at the defaults): " + ", ".join(parts)
        )


def plan(
    layout: Layout,
    dataset: Dataset,
    names: Sequence[str],
    n_default: int,
    n_given: bool,
    drops: int,
    *,
    budget: float | None = FORWARD_BUDGET_MACS,
    curve_n: int,
    curve_levels: int,
    sigma_models: int,
    val_fraction: float,
    grid: int,
    bisect: int,
) -> Plan:
    """The yardsticks' counts for baselines ``names`` (noise at ``drops`` levels, average, gaussian): their
    defaults when their forwards cost at most ``budget`` MACs (None or 0: no limit), else scaled down to it.
    ``n_given``: the caller set the networks per baseline, which then stays as given."""
    macs = forward_macs(layout, dataset) if len(names) else 1
    n_test, n_train = len(dataset.y_test), len(dataset.X_train)
    n_val = max(1, int(round(val_fraction * n_train)))
    noise, recal = "noise" in names, sum(1 for n in names if n in ("average", "gaussian"))

    def work(n: int, c: int, s: int, v: int, bn: int) -> float:
        inputs = recal * n * (bn + n_test)
        if noise:
            inputs += (grid + bisect + 1) * s * v + drops * n * n_test + (curve_levels + 1) * c * n_test
        return float(inputs) * macs

    default = work(n_default, curve_n, sigma_models, n_val, n_train)
    defaults = {"n_baseline": n_default, "curve_n": curve_n, "sigma_models": sigma_models}
    defaults.update(val_points=n_val, bn_points=n_train)
    if not budget or default <= budget:
        return Plan(macs, 1.0, n_default, curve_n, sigma_models, None, None, default, default, budget or 0.0, defaults)
    f = float(budget) / default

    def scaled(x: int, floor: int) -> int:
        return min(x, max(floor, math.ceil(x * f)))

    n = n_default if n_given else scaled(n_default, MIN_BASELINE)
    c, s = scaled(curve_n, MIN_CURVE), scaled(sigma_models, MIN_SIGMA_MODELS)
    v, bn = scaled(n_val, MIN_VAL_POINTS), scaled(n_train, MIN_BN_POINTS)
    return Plan(
        macs,
        f,
        n,
        c,
        s,
        v if v < n_val else None,
        bn if bn < n_train else None,
        default,
        work(n, c, s, v, bn),
        float(budget),
        defaults,
    )
