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
- :func:`lcsc_zoo` / :func:`write_lcsc_zoo`: the search for zoo models over their stored checkpoints, with
  fitness on a validation split carved (seeded, recorded) from the TRAINING data; the test split is read
  only afterwards, to report last / best EMA / best uniform / LCSC side by side.

Because the coefficients sum to 1, sum alpha_i theta_i = theta_0 + sum alpha_i (theta_i - theta_0) (the
paper's form). Written weights equal sum alpha_i theta_i exactly for trainable parameters; BatchNorm running
statistics are recomputed on the training split (a combination's statistics belong to no network).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

import zoo
from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.app.progress import Progress

EMA_DECAYS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)  # per saved checkpoint (not per step): checkpoints are few


@dataclass(frozen=True)
class SearchConfig:
    """Settings of the evolutionary search (defaults: 100 models x 21 checkpoints well under a minute on 2 cores)."""

    population: int = 32          # candidates per generation (at least the number of seed candidates)
    max_evals: int = 400          # cap on fitness evaluations per search (cached repeats are free)
    max_generations: int = 100    # a second cap; the search also stops after `patience` generations with no news
    elite_fraction: float = 0.25  # best share of a generation kept unchanged and used as parents
    crossover: float = 0.7        # probability that a child mixes two parents (uniform crossover), else copies one
    mutation: float = 0.1         # std of the Gaussian added to every coefficient in the first generation ...
    mutation_decay: float = 0.85  # ... multiplied by this each generation (coarse first, fine later)
    min_mutation: float = 0.005
    # bounds of every coefficient. Convex combinations by default: on the digits zoo (docs/lcsc.md) wider
    # bounds such as [-1, 2] fit the validation split (training data the models saw) and lost test accuracy
    lower: float = 0.0
    upper: float = 1.0
    ema_decays: tuple[float, ...] = EMA_DECAYS
    uniform_ks: int = 8           # uniform averages of the last k checkpoints, for up to this many values of k
    patience: int = 6             # generations without a new (uncached) candidate or a better best

    def check(self, n_checkpoints: int) -> None:
        """One-line ZooErrors for settings that cannot work with ``n_checkpoints`` checkpoints."""
        if n_checkpoints < 2:
            raise ZooError(f"LCSC needs at least 2 checkpoints to combine, got {n_checkpoints}")
        if not self.lower < self.upper:
            raise ZooError(f"coefficient bounds must satisfy lower < upper, got [{self.lower}, {self.upper}]")
        if not (n_checkpoints * self.lower <= 1.0 <= n_checkpoints * self.upper and self.upper >= 1.0):
            raise ZooError(f"coefficient bounds [{self.lower}, {self.upper}] cannot hold the last checkpoint alone"
                           f" with {n_checkpoints} coefficients summing to 1 (need lower <= 0 <= 1 <= upper)")
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
    a[n - k:] = 1.0 / k
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
            raise ZooError(f"max_evals must be at least the {len(self.seeds)} seed candidates"
                           f" (last, uniform and EMA averages), got {config.max_evals}")
        self.cache: dict[bytes, float] = {}
        self.evaluations = self.generation = self._stale = 0
        self.sigma = float(config.mutation)
        self.best: tuple[float, np.ndarray] = (math.inf, self.seeds[0])
        size = max(config.population, len(self.seeds))
        fill = self.seeds[self.rng.integers(len(self.seeds), size=size - len(self.seeds))]
        fill = fill + self.rng.normal(0.0, self.sigma, fill.shape)
        self.population = np.concatenate([project(self.seeds, config.lower, config.upper),
                                          project(fill, config.lower, config.upper)])
        self._pending: np.ndarray | None = None

    @staticmethod
    def key(alpha: np.ndarray) -> bytes:
        """Cache key of a coefficient vector (rounded: projections of one point agree to ~1e-15)."""
        return np.round(alpha, 12).tobytes()

    @property
    def done(self) -> bool:
        """Whether a cap (evaluations, generations) is reached or `patience` generations brought nothing new."""
        c = self.config
        return (self.evaluations >= c.max_evals or self.generation >= c.max_generations
                or self._stale >= c.patience)

    def fitness(self, alpha: np.ndarray) -> float:
        """Cached fitness of a vector already evaluated."""
        return self.cache[self.key(alpha)]

    def best_seed(self, kind: str) -> tuple[float, np.ndarray]:
        """(decay or window k, coefficients) of the best seed of a kind, 'ema' or 'uniform' (the baselines)."""
        found = [(self.fitness(a), float(name[len(kind):]), a)
                 for name, a in zip(self.seed_names, self.seeds) if name.startswith(kind)]
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


def run_searches(searches: Sequence[Search],
                 evaluate: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 on_round: Callable[[Sequence[Search]], None] | None = None) -> None:
    """Drive searches in lockstep: each round, ``evaluate(search index [m], alphas [m, C]) -> fitness [m]`` once;
    ``on_round(searches)`` after each round (progress displays)."""
    while not all(s.done for s in searches):
        active = [i for i, s in enumerate(searches) if not s.done]
        asks = [searches[i].ask() for i in active]
        idx = np.concatenate([np.full(len(a), i, dtype=np.int64) for i, a in zip(active, asks)])
        fitness = evaluate(idx, np.concatenate(asks)) if len(idx) else np.zeros(0)
        at = 0
        for i, a in zip(active, asks):
            searches[i].tell(fitness[at:at + len(a)])
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
    return dataclasses.replace(data, name=f"{data.name}[val {fraction:g} seed {seed}]",
                               X_test=data.X_train[idx], y_test=data.y_train[idx],
                               fingerprint=f"{data.fingerprint}:val:{fraction:g}:{seed}")


def metric_names(data: zoo.Dataset) -> tuple[str, str]:
    """(loss, score) names of a dataset's metrics: ('loss', 'acc') or ('loss', 'r2')."""
    return ("loss", "acc") if data.kind == "classification" else ("loss", "r2")


def combine(trajectory: torch.Tensor, alphas: np.ndarray | torch.Tensor) -> torch.Tensor:
    """sum_i alpha_i theta_i: trajectory [C, P], alphas [m, C] -> [m, P] float32 (accumulated in float64)."""
    a = torch.as_tensor(np.asarray(alphas, dtype=np.float64))
    return (a @ trajectory.to(torch.float64)).to(torch.float32)


# ---------------------------------------------------------------------------------------------- zoo models
@dataclass
class LCSCResult:
    """What :func:`lcsc_zoo` found: the ``lcsc`` table and the merged weights per model, in ``ids`` order."""

    ids: list[int]
    table: pd.DataFrame
    weights: dict[int, torch.Tensor]  # model id -> [P] merged weights as written (BN statistics recomputed)
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0


def _fitness_fn(layout: Layout, trajs: torch.Tensor, val: zoo.Dataset, metric: str, bn: bool,
                chunk: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Batched fitness of (model position [m], alphas [m, C]): val loss, or minus val accuracy / R^2."""
    tie = 1.0 / (10.0 * len(val.X_test))  # loss breaks accuracy ties: bounded below one sample's accuracy step

    def fitness(idx: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        out = np.empty(len(idx))
        for lo in range(0, len(idx), chunk):
            sel = slice(lo, lo + chunk)
            w = _combined(trajs, idx[sel], alphas[sel])
            res = zoo.evaluate(layout, w, val, split="test", recalibrate_bn=bn)
            loss = res["loss"].numpy()
            out[sel] = loss if metric == "loss" else -res[metric].numpy() + tie * loss / (1.0 + loss)
        return out

    return fitness


def _combined(trajs: torch.Tensor, idx: np.ndarray, alphas: np.ndarray) -> torch.Tensor:
    """[m, P] combined weights of candidates (model position idx[j], coefficients alphas[j])."""
    w = torch.empty(len(idx), trajs.shape[2])
    for i in np.unique(idx):
        rows = np.nonzero(idx == i)[0]
        w[torch.from_numpy(rows)] = combine(trajs[int(i)], alphas[rows])
    return w


def _has_bn(layout: Layout) -> bool:
    return any(e.name.endswith("running_mean") for e in layout.entries)


def select_models(z: zoo.Zoo, models: str | Sequence[int] = "all") -> list[int]:
    """Model ids to search: 'all' (every done model), '0,3,5-9' or a list; diverged/pending ids are errors."""
    table = z.models
    if isinstance(models, str):
        if models.strip() == "all":
            ids = table.loc[table["status"] == "done", "model_id"].astype(int).tolist()
            if not ids:
                raise ZooError(f"zoo {z.path!r} has no trained (done) models to combine")
            return ids
        ids = []
        for part in models.split(","):
            lo, dash, hi = part.strip().partition("-")
            try:
                ids += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
            except ValueError:
                raise ZooError(f"bad model ids {models!r}: expected 'all' or e.g. '0,3,5-9'") from None
    else:
        ids = [int(i) for i in models]
    if not ids:
        raise ZooError("no model ids given")
    if len(set(ids)) != len(ids):
        raise ZooError(f"model ids repeat in {models!r}")
    bad = [i for i in ids if not 0 <= i < len(table)]
    if bad:
        raise ZooError(f"model id {bad[0]} is out of range: this zoo has ids 0..{len(table) - 1}")
    status = table["status"].to_numpy()
    for i in ids:
        if status[i] != "done":
            raise ZooError(f"model {i} is {status[i]}: LCSC combines the checkpoints of trained (done) models only")
    return ids


def lcsc_zoo(z: zoo.Zoo | str, models: str | Sequence[int] = "all", config: SearchConfig = SearchConfig(),
             seed: int = 0, val_fraction: float = 0.2, val_seed: int = 0, metric: str = "loss",
             upto: int | None = None, data: zoo.Dataset | None = None, chunk: int = 2048,
             progress: bool = False) -> LCSCResult:
    """Search LCSC coefficients for zoo models over their checkpoints (up to index ``upto``), fitness on validation.

    The search sees only ``validation_view(data, val_fraction, val_seed)``; the test split is read after it,
    for the report. ``metric``: 'loss' (validation loss, the default: smooth), or 'acc' / 'r2'. Returns the
    ``lcsc`` table (one row per model; coefficients over ALL the zoo's checkpoints, zeros past ``upto``) and
    the merged weights. ``progress``: a display over models whose search finished (zoo.progress).
    """
    t0 = time.perf_counter()
    z = zoo.open(z) if isinstance(z, str) else z
    data = z.dataset() if data is None else data
    loss_name, score_name = metric_names(data)
    if metric not in (loss_name, score_name):
        raise ZooError(f"metric must be {loss_name!r} or {score_name!r} for a {data.kind} zoo, got {metric!r}")
    ids = select_models(z, models)
    n_ckpt = len(z.checkpoint_epochs)
    used = n_ckpt if upto is None else int(upto) + 1 if int(upto) >= 0 else n_ckpt + int(upto) + 1
    if not 1 <= used <= n_ckpt:
        raise ZooError(f"upto={upto} is out of range: this zoo has {n_ckpt} checkpoints")
    config.check(used)
    val = validation_view(data, val_fraction, val_seed)
    keys = z.models["layout"].to_numpy()
    rows, weights = [], {}
    bar = Progress(len(ids), "models searched", prefix="zoo lcsc", enabled=progress)
    for key in sorted({str(keys[i]) for i in ids}):
        group = [i for i in ids if str(keys[i]) == key]
        layout, bn = z.layouts[key], _has_bn(z.layouts[key])
        # [n, used, P]; one vectorized read per checkpoint: 28x faster here than the orthogonal [n, C, P] read
        trajs = torch.stack([z.weights(group, checkpoint=c) for c in range(used)], 1)
        searches = [Search(used, config, seed=[int(seed), int(i)]) for i in group]
        start, evals = bar.n, int(bar.postfix.get("evaluations", 0))

        def shown(ss: Sequence[Search], start: int = start, evals: int = evals) -> None:
            bar.update(start + sum(s.done for s in ss) - bar.n, evaluations=evals + sum(s.evaluations for s in ss))

        run_searches(searches, _fitness_fn(layout, trajs, val, metric, bn, chunk), on_round=shown)
        # the four combinations reported per model: last, best EMA, best uniform (both chosen on val), LCSC
        chosen = []
        for s in searches:
            (decay, ema), (k, uni) = s.best_seed("ema"), s.best_seed("uniform")
            chosen.append({"last": s.seeds[0], "ema": ema, "uniform": uni, "lcsc": s.best[1],
                           "ema_decay": decay, "uniform_k": k})
        methods = ("last", "ema", "uniform", "lcsc")
        idx = np.repeat(np.arange(len(group)), len(methods))
        alphas = np.stack([c[m] for c in chosen for m in methods])
        w = _combined(trajs, idx, alphas)
        if bn:
            w = zoo.recalibrate_bn(layout, w, data)
        res = {split: zoo.evaluate(layout, w, d, split="test")
               for split, d in (("val", val), ("test", data))}
        for j, (i, s, c) in enumerate(zip(group, searches, chosen)):
            row = {"model_id": int(i), "layout": key, "checkpoints": used,
                   "epoch": int(z.checkpoint_epochs[used - 1]), "fitness": metric}
            for mi, m in enumerate(methods):
                for split in ("val", "test"):
                    for name in (loss_name, score_name):
                        row[f"{m}_{split}_{name}"] = float(res[split][name][j * len(methods) + mi])
            row["ema_decay"], row["uniform_k"] = float(c["ema_decay"]), int(c["uniform_k"])
            row["evaluations"], row["generations"] = int(s.evaluations), int(s.generation)
            coef = np.zeros(n_ckpt)
            coef[:used] = c["lcsc"]
            row["coefficients"] = [float(x) for x in coef]
            rows.append(row)
            weights[int(i)] = w[j * len(methods) + methods.index("lcsc")].clone()
    table = pd.DataFrame(rows).set_index("model_id").loc[ids].reset_index()
    settings = {"source": z.path, "val_fraction": float(val_fraction), "val_seed": int(val_seed),
                "val_samples": int(len(val.X_test)), "metric": metric, "seed": int(seed),
                "checkpoints_used": used, "search": {k: (list(v) if isinstance(v, tuple) else v)
                                                     for k, v in dataclasses.asdict(config).items()}}
    bar.close()
    return LCSCResult(ids, table, weights, settings, time.perf_counter() - t0)


def write_lcsc_zoo(z: zoo.Zoo | str, result: LCSCResult, out: str, overwrite: bool = False) -> zoo.Zoo:
    """Write the merged weights of ``result`` as a zoo (one checkpoint per model) with the table ``lcsc``."""
    from zoo.store.writer import create

    z = zoo.open(z) if isinstance(z, str) else z
    data = z.dataset()
    src = z.models.set_index("model_id").loc[result.ids].reset_index()
    drop = ["status", "last_checkpoint", "row", *z.metric_names]
    table = src.drop(columns=[c for c in drop if c in src]).rename(columns={"model_id": "source_model_id"})
    layouts = {k: z.layouts[k] for k in sorted(set(table["layout"]))}
    epoch = int(result.table["epoch"].iloc[0])
    attrs = {"producer": "zoo lcsc", "lcsc": result.settings}
    w = create(out, table, layouts, [epoch], z.metric_names, attrs=attrs, datasets=[data], overwrite=overwrite)
    for key, layout in layouts.items():
        new_ids = np.nonzero(table["layout"].to_numpy() == key)[0]
        flat = torch.stack([result.weights[result.ids[j]] for j in new_ids])
        metrics = np.full((len(new_ids), 1, len(z.metric_names)), np.nan)
        for split in ("train", "test"):
            for name, v in zoo.evaluate(layout, flat, data, split=split).items():
                if f"{split}_{name}" in z.metric_names:
                    metrics[:, 0, z.metric_names.index(f"{split}_{name}")] = v.numpy()
        w.write(new_ids.tolist(), flat[:, None], metrics)
    w.write_table("lcsc", result.table)
    return w.zoo()
