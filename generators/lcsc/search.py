"""LCSC: linear combinations of saved checkpoints, theta = sum_i alpha_i theta_i, alpha found by evolutionary search.

LCSC (ICLR 2025) claims such combinations beat the last checkpoint and the EMA, so fewer training steps plus
LCSC match full training; its search was never released. This module is that search:

- the evolutionary search itself (:class:`Search`, ask/tell) over coefficient vectors alpha [C]: a population
  seeded with the last checkpoint, uniform averages of the last k checkpoints and EMA-like geometric decays,
  selection of the best fraction (kept unchanged: elitism), uniform crossover, Gaussian mutation with a
  shrinking scale, every vector projected onto {sum alpha = 1, lower <= alpha_i <= upper}; fitness is
  cached (a repeated vector costs nothing) and capped at ``max_evals`` evaluations; seeded;
- :func:`run_searches`, which drives many searches in lockstep so that every generation of every model is
  one batched fitness call (for zoos: one ``zoo.evaluate`` over all candidates' combined weight vectors);
- the validation view (a seeded carve-out of the TRAINING split) and ``combine``, shared by the zoo search
  (:mod:`generators.lcsc.zoo`) and the generator-snapshot search (:mod:`generators.lcsc.snapshots`).

Because the coefficients sum to 1, sum alpha_i theta_i = theta_0 + sum alpha_i (theta_i - theta_0) (the
paper's form). Written weights equal sum alpha_i theta_i exactly for trainable parameters; BatchNorm running
statistics are recomputed on the training split (a combination's statistics belong to no network).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

import zoo
from zoo.app.checks import list_of, number
from zoo.app.schema import Schema, key
from zoo.errors import ZooError

EMA_DECAYS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)  # per saved checkpoint (not per step): checkpoints are few


@dataclass(frozen=True)
class SearchConfig(Schema, group="", name="lcsc"):
    """Settings of the evolutionary search (defaults: 100 models x 21 checkpoints well under a minute on 2 cores);
    a typed config (``zoo.app.schema``): a bad value is a one-line ZooError when it is built, and ``zoo lcsc
    --help`` reads its docs and defaults. What depends on the zoo (bounds vs checkpoints) is :meth:`check`."""

    population: int = key(32, number(int, 2), "candidates per generation (at least the number of seed candidates)")
    max_evals: int = key(400, number(int, 1), "cap on fitness evaluations per search (cached repeats are free)")
    max_generations: int = key(
        100, number(int, 1), "a second cap; the search also stops after `patience` generations with no news"
    )
    elite_fraction: float = key(
        0.25, number(float, 0, 1, low_open=True, high_open=True), "best share of a generation kept and used as parents"
    )
    crossover: float = key(
        0.7, number(float, 0, 1), "probability that a child mixes two parents (uniform crossover), else copies one"
    )
    mutation: float = key(
        0.1, number(float, 0), "std of the Gaussian added to every coefficient in the first generation ..."
    )
    mutation_decay: float = key(
        0.85, number(float, 0, 1, low_open=True), "... multiplied by this each generation (coarse first, fine later)"
    )
    min_mutation: float = key(0.005, number(float, 0), "the mutation std never shrinks below this")
    # bounds of every coefficient. Convex combinations by default: on the digits zoo (docs/lcsc.md) wider
    # bounds such as [-1, 2] fit the validation split (training data the models saw) and lost test accuracy
    lower: float = key(0.0, number(float), "lower bound of a coefficient (<= 0: single checkpoints are seeds)")
    upper: float = key(1.0, number(float), "upper bound of a coefficient (>= 1)")
    ema_decays: tuple[float, ...] = key(
        EMA_DECAYS,
        list_of(number(float, 0, 1, low_open=True, high_open=True)),
        "EMA-like geometric decays per saved checkpoint among the seed candidates",
    )
    uniform_ks: int = key(8, number(int, 0), "uniform averages of the last k checkpoints, for up to this many k")
    patience: int = key(6, number(int, 1), "generations without a new (uncached) candidate or a better best")

    def check(self, n_checkpoints: int) -> None:
        """One-line ZooErrors for settings that cannot work with ``n_checkpoints`` checkpoints."""
        if n_checkpoints < 2:
            raise ZooError(f"LCSC needs at least 2 checkpoints to combine, got {n_checkpoints}")
        if not self.lower < self.upper:
            raise ZooError(f"coefficient bounds must satisfy lower < upper, got [{self.lower}, {self.upper}]")
        if not (n_checkpoints * self.lower <= 1.0 <= n_checkpoints * self.upper and self.upper >= 1.0):
            raise ZooError(
                f"coefficient bounds [{self.lower}, {self.upper}] cannot hold the last checkpoint alone"
                f" with {n_checkpoints} coefficients summing to 1 (need lower <= 0 <= 1 <= upper)"
            )
        if self.lower > 0:
            raise ZooError(f"lower bound must be <= 0 (single checkpoints are seeds), got {self.lower}")
        if self.population < 2 or self.max_evals < 1 or self.max_generations < 1:
            raise ZooError("population must be >= 2, max_evals and max_generations >= 1")
        if not 0 < self.elite_fraction < 1 or not 0 <= self.crossover <= 1 or self.mutation < 0:
            raise ZooError("elite_fraction must be in (0, 1), crossover in [0, 1], mutation >= 0")
        if not all(0 < d < 1 for d in self.ema_decays):
            raise ZooError(f"EMA decays must lie in (0, 1), got {list(self.ema_decays)}")


# a generator's candidate costs an ODE solve of all its samples: a smaller search than for zoo models
GENERATOR_SEARCH = SearchConfig(population=12, max_evals=96)


# ---------------------------------------------------------------------------------------------- coefficients
def project(v: np.ndarray, lower: float, upper: float) -> np.ndarray:
    """Euclidean projection of rows of v [m, C] onto {sum = 1, lower <= a_i <= upper} (bisection on the shift)."""
    v = np.asarray(v, dtype=np.float64)
    feasible = ((np.abs(v.sum(1) - 1) <= 1e-12) & (v >= lower).all(1) & (v <= upper).all(1))[:, None]
    lo = (v.min(1) - upper)[:, None]  # shift at which every coordinate clips to upper: sum >= 1
    hi = (v.max(1) - lower)[:, None]  # every coordinate at lower: sum <= 1
    for _ in range(100):
        mid = (lo + hi) / 2
        s = np.clip(v - mid, lower, upper).sum(1, keepdims=True)
        big = s > 1
        lo, hi = np.where(big, mid, lo), np.where(big, hi, mid)
    a = np.clip(v - (lo + hi) / 2, lower, upper)
    # remove the last float residual on the coordinates with room to move, so sum(a) == 1 to rounding
    free = (a > lower) & (a < upper)
    resid = 1.0 - a.sum(1, keepdims=True)
    a = a + np.where(free, resid / np.maximum(free.sum(1, keepdims=True), 1), 0.0)
    return np.where(feasible, v, a)  # feasible rows unchanged (a seed stays exactly itself)


def ema_coefficients(n: int, decay: float) -> np.ndarray:
    """EMA over n checkpoints started at the first: ema = d ema + (1-d) theta_i -> [n] coefficients (sum 1)."""
    i = np.arange(n)
    a = (1 - decay) * decay ** (n - 1 - i)
    a[0] = decay ** (n - 1)
    return a


def uniform_coefficients(n: int, k: int) -> np.ndarray:
    """The uniform average of the last k of n checkpoints -> [n] coefficients."""
    a = np.zeros(n)
    a[n - k :] = 1.0 / k
    return a


def uniform_ks(n: int, count: int) -> list[int]:
    """Up to ``count`` window lengths k in 2..n, geometrically spaced (short windows matter most)."""
    if n < 2:
        return []
    return sorted({int(round(k)) for k in np.geomspace(2, n, max(count, 1))})


def seed_candidates(n: int, config: SearchConfig) -> tuple[np.ndarray, list[str]]:
    """([s, n] coefficient vectors, names) the population starts from: last, uniform last-k, EMA decays."""
    rows, names = [np.eye(n)[-1]], ["last"]
    for k in uniform_ks(n, config.uniform_ks):
        rows.append(uniform_coefficients(n, k))
        names.append(f"uniform{k}")
    for d in config.ema_decays:
        rows.append(ema_coefficients(n, d))
        names.append(f"ema{d:g}")
    return np.stack(rows), names


# ---------------------------------------------------------------------------------------------- the search
class Search:
    """Evolutionary search over coefficient vectors [C] minimizing a fitness, driven by ``ask`` / ``tell``."""

    def __init__(self, n_checkpoints: int, config: SearchConfig = SearchConfig(), seed: int | Sequence[int] = 0):
        config.check(n_checkpoints)
        self.n, self.config = int(n_checkpoints), config
        self.rng = np.random.default_rng(seed)
        self.seeds, self.seed_names = seed_candidates(self.n, config)
        if config.max_evals < len(self.seeds):
            raise ZooError(
                f"max_evals must be at least the {len(self.seeds)} seed candidates"
                f" (last, uniform and EMA averages), got {config.max_evals}"
            )
        self.cache: dict[bytes, float] = {}
        self.evaluations = self.generation = self._stale = 0
        self.sigma = float(config.mutation)
        self.best: tuple[float, np.ndarray] = (math.inf, self.seeds[0])
        size = max(config.population, len(self.seeds))
        fill = self.seeds[self.rng.integers(len(self.seeds), size=size - len(self.seeds))]
        fill = fill + self.rng.normal(0.0, self.sigma, fill.shape)
        self.population = np.concatenate(
            [project(self.seeds, config.lower, config.upper), project(fill, config.lower, config.upper)]
        )
        self._pending: np.ndarray | None = None

    @staticmethod
    def key(alpha: np.ndarray) -> bytes:
        """Cache key of a coefficient vector (rounded: projections of one point agree to ~1e-15)."""
        return np.round(alpha, 12).tobytes()

    @property
    def done(self) -> bool:
        """Whether a cap (evaluations, generations) is reached or `patience` generations brought nothing new."""
        c = self.config
        return self.evaluations >= c.max_evals or self.generation >= c.max_generations or self._stale >= c.patience

    def fitness(self, alpha: np.ndarray) -> float:
        """Cached fitness of a vector already evaluated."""
        return self.cache[self.key(alpha)]

    def best_seed(self, kind: str) -> tuple[float, np.ndarray]:
        """(decay or window k, coefficients) of the best seed of a kind, 'ema' or 'uniform' (the baselines)."""
        found = [
            (self.fitness(a), float(name[len(kind) :]), a)
            for name, a in zip(self.seed_names, self.seeds)
            if name.startswith(kind)
        ]
        _, param, alpha = min(found, key=lambda t: t[0])  # the first of equals, in seed order
        return param, alpha

    def ask(self) -> np.ndarray:
        """[m, C] distinct candidates of this generation not yet evaluated (within the evaluation budget)."""
        seen, rows = set(), []
        for a in self.population:
            k = self.key(a)
            if k not in self.cache and k not in seen:
                seen.add(k)
                rows.append(a)
        rows = rows[: max(self.config.max_evals - self.evaluations, 0)]
        self._pending = np.stack(rows) if rows else np.zeros((0, self.n))
        return self._pending

    def tell(self, fitness: np.ndarray) -> None:
        """Record the fitness [m] of the last ``ask`` (lower is better; NaN counts as worst), then breed."""
        pending = self._pending if self._pending is not None else np.zeros((0, self.n))
        fitness = np.asarray(fitness, dtype=np.float64).reshape(-1)
        if len(fitness) != len(pending):
            raise ZooError(f"tell got {len(fitness)} fitness values for {len(pending)} candidates")
        for a, f in zip(pending, fitness):
            self.cache[self.key(a)] = float(f) if np.isfinite(f) else math.inf
        self.evaluations += len(pending)
        self._pending = None
        # candidates dropped by the budget leave the population; the rest are all cached now
        pop = np.stack([a for a in self.population if self.key(a) in self.cache])
        scores = np.asarray([self.cache[self.key(a)] for a in pop])
        order = np.argsort(scores, kind="stable")
        improved = scores[order[0]] < self.best[0]
        if improved:
            self.best = (float(scores[order[0]]), pop[order[0]].copy())
        self._stale = 0 if (improved or len(pending)) else self._stale + 1
        self.generation += 1
        if not self.done:
            self.population = self._breed(pop[order])
        self.sigma = max(self.sigma * self.config.mutation_decay, self.config.min_mutation)

    def _breed(self, ranked: np.ndarray) -> np.ndarray:
        """Next generation from a ranked population: elites kept, children by crossover and mutation."""
        c = self.config
        size = max(c.population, len(self.seeds))
        n_elite = max(2, min(len(ranked), int(math.ceil(c.elite_fraction * size))))
        elites = ranked[:n_elite]
        m = size - n_elite
        p1 = elites[self.rng.integers(n_elite, size=m)]
        p2 = elites[self.rng.integers(n_elite, size=m)]
        mix = (self.rng.random((m, 1)) < c.crossover) & (self.rng.random((m, self.n)) < 0.5)
        children = np.where(mix, p2, p1) + self.rng.normal(0.0, self.sigma, (m, self.n))
        return np.concatenate([elites, project(children, c.lower, c.upper)])


def run_searches(
    searches: Sequence[Search],
    evaluate: Callable[[np.ndarray, np.ndarray], np.ndarray],
    on_round: Callable[[Sequence[Search]], None] | None = None,
) -> None:
    """Drive searches in lockstep: each round, ``evaluate(search index [m], alphas [m, C]) -> fitness [m]`` once;
    ``on_round(searches)`` after each round (progress displays)."""
    while not all(s.done for s in searches):
        active = [i for i, s in enumerate(searches) if not s.done]
        asks = [searches[i].ask() for i in active]
        idx = np.concatenate([np.full(len(a), i, dtype=np.int64) for i, a in zip(active, asks)])
        fitness = evaluate(idx, np.concatenate(asks)) if len(idx) else np.zeros(0)
        at = 0
        for i, a in zip(active, asks):
            searches[i].tell(fitness[at : at + len(a)])
            at += len(a)
        if on_round is not None:
            on_round(searches)


# ---------------------------------------------------------------------------------------------- data
def validation_view(data: zoo.Dataset, fraction: float = 0.2, seed: int = 0) -> zoo.Dataset:
    """A Dataset whose 'test' part is a seeded ``fraction`` of the TRAINING split; the real test split is dropped.

    Its training part is the whole training split (BatchNorm statistics are recomputed on it, as for the
    written weights). The zoo's models were trained on these points too: the split keeps the search off the
    test data, it is not unseen data.
    """
    if not 0 < float(fraction) < 1:
        raise ZooError(f"the validation fraction must be in (0, 1), got {fraction}")
    n = len(data.X_train)
    n_val = max(1, int(round(float(fraction) * n)))
    if n_val >= n:
        raise ZooError(f"the training split has {n} samples: too few to carve a validation split from")
    idx = torch.from_numpy(np.sort(np.random.default_rng(int(seed)).permutation(n)[:n_val]))
    return dataclasses.replace(
        data,
        name=f"{data.name}[val {fraction:g} seed {seed}]",
        X_test=data.X_train[idx],
        y_test=data.y_train[idx],
        fingerprint=f"{data.fingerprint}:val:{fraction:g}:{seed}",
    )


def metric_names(data: zoo.Dataset) -> tuple[str, str]:
    """(loss, score) names of a dataset's metrics: ('loss', 'acc') or ('loss', 'r2')."""
    return ("loss", "acc") if data.kind == "classification" else ("loss", "r2")


def combine(trajectory: torch.Tensor, alphas: np.ndarray | torch.Tensor) -> torch.Tensor:
    """sum_i alpha_i theta_i: trajectory [C, P], alphas [m, C] -> [m, P] float32 (accumulated in float64)."""
    a = torch.as_tensor(np.asarray(alphas, dtype=np.float64))
    return (a @ trajectory.to(torch.float64)).to(torch.float32)
