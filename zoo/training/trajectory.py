"""Trajectory zoos (KNOWN's data): full-data training, then S stages on nested, shrinking random subsets.

A recipe with ``kind: trajectory`` trains every model as a grid recipe does for ``epochs`` epochs on its
full training set, then for ``stages`` stages of ``stage_epochs`` epoch(s) each. Stage s trains on a random
subset whose size is a fraction r_s ~ U(stage_rates) of stage s-1's subset (stage 0 = the full training
set), so each subset lies inside the previous one. The subsets are a pure function of the training-set
size and the model's ``subset_seed`` (a models-table column): :func:`stage_subsets` returns them.
Each stage continues from the previous stage's weights (the init is never reloaded) with a FRESH optimizer
state (momentum / Adam moments and step count reset, as the paper's one-epoch-per-stage Keras fits do); the
recipe's schedule restarts per stage, over the population's longest stage. A model's steps per stage epoch
are ``max(1, subset_size // batch_size)`` (a subset smaller than a batch is cycled to fill one); the models
of a population step together, and a model whose stage has fewer steps than the population's longest sits
out the rest (an exact no-op: weights, BatchNorm statistics and optimizer state untouched). The flat
vectors include BatchNorm buffers (num_batches_tracked counts steps): a nowcaster reads the parameters.

THE CONTRACT (the store's ``attrs["trajectory"]``, tested in tests/test_trajectories.py). Checkpoints are
stored in TRAINING order along the weights' checkpoint axis [n, C, P]:
- ``checkpoint_epochs[:k]`` are the recipe's checkpoints during full-data training, the last of which
  (``full_checkpoint`` = k-1, epoch ``epochs``) is the end of full-data training; ``init_checkpoint`` is 0
  when the recipe keeps epoch 0 (the initialization), else None;
- ``stage_checkpoints`` = [k, ..., k+S-1] are the ends of stages 1..S (epoch ``epochs + s * stage_epochs``);
  stage S is the smallest subset.
The reversed trajectory the nowcaster reads (small data -> full data) is
``[stage S, stage S-1, ..., stage 1, full]`` = ``stage_checkpoints[::-1] + [full_checkpoint]``, S+1 entries:
:func:`reversed_trajectories`. The models table adds ``stages``, ``stage_epochs``, ``subset_seed``,
``stage_rates`` (the sampled r_s, relative to the previous subset), ``stage_sizes`` (subset sizes) and
``stage_fractions`` (sizes over the full training set's), lists of S per model.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from zoo.errors import ZooError

KINDS = ("grid", "trajectory", "inr")  # inr: one SIREN per image (zoo.inr, zoo.training.recipe)
TRAJECTORY_KEYS = ("stages", "stage_epochs", "stage_rates")
DEFAULT_STAGE_EPOCHS = 1
DIRECTION = (
    "training order: init (if kept), full-data checkpoints, then stage 1..S ends (shrinking subsets);"
    " reversed trajectory (small data -> full data) = stage_checkpoints[::-1] + [full_checkpoint]"
)


@dataclass(frozen=True)
class StagePlan:
    """One model's stages: sampled rates r_s, subset sizes and the nested subsets (sorted train indices)."""

    rates: list[float]
    sizes: list[int]
    subsets: list[torch.Tensor]


def recipe_kind(recipe: Mapping) -> str:
    """``grid`` (every recipe without ``kind``), ``trajectory`` or ``inr``; a ZooError for anything else."""
    kind = recipe.get("kind") or "grid"
    if kind not in KINDS:
        raise ZooError(f"recipe.kind={kind!r} is invalid: expected one of {list(KINDS)}")
    return kind


def rate_range(recipe: Mapping) -> tuple[float, float]:
    """``stage_rates`` as (low, high): a number r means (r, r)."""
    v = recipe.get("stage_rates")
    lo, hi = (v, v) if isinstance(v, (int, float)) else tuple(v)
    return float(lo), float(hi)


def check_trajectory_recipe(recipe: Mapping) -> None:
    """One-line errors for a trajectory recipe's own keys, or for those keys on a grid recipe."""
    kind = recipe_kind(recipe)
    given = [k for k in TRAJECTORY_KEYS if recipe.get(k) is not None]
    if kind != "trajectory":
        if given:
            raise ZooError(f"recipe.{given[0]} is for recipe.kind=trajectory (this recipe is kind {kind})")
        return
    stages = recipe.get("stages")
    if not isinstance(stages, int) or isinstance(stages, bool) or stages < 1:
        raise ZooError(f"recipe.stages={stages!r} is invalid: expected an integer >= 1")
    se = recipe.get("stage_epochs", DEFAULT_STAGE_EPOCHS)
    if not isinstance(se, int) or isinstance(se, bool) or se < 1:
        raise ZooError(f"recipe.stage_epochs={se!r} is invalid: expected an integer >= 1")
    v = recipe.get("stage_rates")
    ok = (
        isinstance(v, (int, float))
        and not isinstance(v, bool)
        or isinstance(v, (list, tuple))
        and len(v) == 2
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    )
    if ok:
        lo, hi = rate_range(recipe)
        ok = 0 < lo <= hi <= 1
    if not ok:
        raise ZooError(
            f"recipe.stage_rates={v!r} is invalid: expected a rate or a range [low, high] with 0 < low <= high <= 1"
        )
    ckpts = recipe.get("checkpoint_epochs")
    ckpts = list(ckpts) if isinstance(ckpts, (list, tuple)) else [ckpts]
    if ckpts[-1] != recipe.get("epochs"):
        raise ZooError(
            f"recipe.checkpoint_epochs={ckpts} is invalid: a trajectory recipe must end them at"
            f" recipe.epochs={recipe.get('epochs')} (the full-data checkpoint)"
        )


def is_trajectory(recipe: Mapping) -> bool:
    return recipe_kind(recipe) == "trajectory"


def plan_checkpoints(recipe: Mapping, full: Sequence[int]) -> list[int]:
    """Every checkpoint epoch in training order: the recipe's, then one per stage end."""
    full = [int(c) for c in full]
    if not is_trajectory(recipe):
        return full
    epochs, se = int(recipe["epochs"]), int(recipe.get("stage_epochs", DEFAULT_STAGE_EPOCHS))
    return full + [epochs + s * se for s in range(1, int(recipe["stages"]) + 1)]


def trajectory_attrs(recipe: Mapping, full: Sequence[int]) -> dict | None:
    """The store's ``trajectory`` attribute (the contract above), None for a grid recipe."""
    if not is_trajectory(recipe):
        return None
    full = list(full) if isinstance(full, (list, tuple)) else [full]
    k, stages = len(full), int(recipe["stages"])
    return {
        "full_checkpoint": k - 1,
        "init_checkpoint": 0 if int(full[0]) == 0 else None,
        "stage_checkpoints": list(range(k, k + stages)),
        "stages": stages,
        "stage_epochs": int(recipe.get("stage_epochs", DEFAULT_STAGE_EPOCHS)),
        "stage_rates": list(rate_range(recipe)),
        "optimizer_state": "fresh per stage",
        "direction": DIRECTION,
    }


def subset_seed(model_id: int, seed: int) -> int:
    """The seed of a model's stage subsets: distinct per model, a pure function of its id and seed."""
    return int.from_bytes(hashlib.sha256(f"stages/{int(seed)}/{int(model_id)}".encode()).digest()[:4], "little")


def sample_hparams(
    learning_rates: Sequence[float], batch_sizes: Sequence[int], model_id: int, seed: int
) -> tuple[float, int]:
    """A model's (learning rate, batch size) under ``recipe.sample_hparams``: the rate log-uniform between the
    smallest and largest of ``learning_rates``, the batch size one of ``batch_sizes``; a pure function of the
    model's id and seed."""
    digest = hashlib.sha256(f"hparams/{int(seed)}/{int(model_id)}".encode()).digest()
    u = int.from_bytes(digest[:8], "little") / 2.0**64
    lo, hi = math.log(min(map(float, learning_rates))), math.log(max(map(float, learning_rates)))
    return math.exp(lo + u * (hi - lo)), int(batch_sizes[int.from_bytes(digest[8:12], "little") % len(batch_sizes)])


def iter_stage_subsets(
    n_train: int, stages: int, rates: tuple[float, float], seed: int
) -> Iterator[tuple[float, int, torch.Tensor]]:
    """(r_s, size, subset) of stages 1..S, one at a time (a trainer holds one subset per model, not S):
    subset s is a random ``round(r_s * |subset s-1|)`` of subset s-1 (at least 1), r_s ~ U(rates)."""
    g = torch.Generator().manual_seed(int(seed))
    lo, hi = rates
    current = torch.arange(int(n_train))
    for _ in range(int(stages)):
        r = lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))
        size = max(1, int(round(r * len(current))))
        current = current[torch.randperm(len(current), generator=g)[:size]].sort().values
        yield r, size, current


def stage_subsets(n_train: int, stages: int, rates: tuple[float, float], seed: int) -> StagePlan:
    """The nested subsets of one model (sorted training-set indices), deterministic in ``seed``."""
    out = StagePlan([], [], [])
    for r, size, subset in iter_stage_subsets(n_train, stages, rates, seed):
        out.rates.append(r)
        out.sizes.append(size)
        out.subsets.append(subset)
    return out


def stage_columns(table: pd.DataFrame, recipe: Mapping, n_train: Mapping[str, int]) -> pd.DataFrame:
    """The models table with the per-model stage columns of a trajectory recipe (unchanged for a grid)."""
    if not is_trajectory(recipe):
        return table
    df = table.copy()
    stages, rates = int(recipe["stages"]), rate_range(recipe)
    seeds = [subset_seed(i, s) for i, s in zip(df["model_id"], df["seed"])]
    plans = [stage_subsets(n_train[d], stages, rates, s) for d, s in zip(df["dataset"], seeds)]
    df["stages"] = stages
    df["stage_epochs"] = int(recipe.get("stage_epochs", DEFAULT_STAGE_EPOCHS))
    df["subset_seed"] = np.asarray(seeds, dtype=np.int64)
    df["stage_rates"] = [p.rates for p in plans]
    df["stage_sizes"] = [p.sizes for p in plans]
    df["stage_fractions"] = [[k / n_train[d] for k in p.sizes] for d, p in zip(df["dataset"], plans)]
    return df


def spec_fields(recipe: Mapping, model_ids: Sequence[int], seeds: Sequence[int]) -> dict:
    """The PopulationSpec fields of a trajectory population ({} for a grid recipe)."""
    if not is_trajectory(recipe):
        return {}
    return {
        "stages": int(recipe["stages"]),
        "stage_epochs": int(recipe.get("stage_epochs", DEFAULT_STAGE_EPOCHS)),
        "stage_rates": rate_range(recipe),
        "subset_seeds": [subset_seed(i, s) for i, s in zip(model_ids, seeds)],
    }


# ---------------------------------------------------------------------- reading (the nowcaster's side)
def trajectory_info(z) -> dict:
    """The zoo's ``trajectory`` attribute; a one-line ZooError for a zoo without trajectories."""
    info = z.attrs.get("trajectory")
    if not info:
        raise ZooError(
            f"zoo {z.path!r} has no trajectories: build it from a recipe with kind: trajectory"
            " (e.g. recipe=know-trajectories)"
        )
    return info


def reversed_order(z) -> list[int]:
    """Checkpoint indices of the reversed trajectory: stage S, ..., stage 1, full (small data -> full data)."""
    info = trajectory_info(z)
    return [int(c) for c in info["stage_checkpoints"][::-1]] + [int(info["full_checkpoint"])]


def reversed_trajectories(z, layout: str | None = None, ids: Sequence[int] | None = None) -> torch.Tensor:
    """[n, S+1, P] flat weights along the reversed trajectory (small data -> full data; the last entry is the
    full-data model) of models ``ids`` (default: every done model of ``layout``), in one store read."""
    order = reversed_order(z)
    models = z.models
    if layout is not None and layout not in z.layouts:
        raise ZooError(f"layout {layout!r} is not in zoo {z.path!r} (layouts: {sorted(z.layouts)})")
    if ids is None:
        if layout is None:
            if len(z.layouts) > 1:
                raise ZooError(f"zoo {z.path!r} has several layouts {sorted(z.layouts)}; name one")
            layout = next(iter(z.layouts))
        ids = models.model_id[(models.layout == layout) & (models.status == "done")].to_numpy()
        if len(ids) == 0:
            raise ZooError(f"zoo {z.path!r} has no complete trajectory of layout {layout}")
    ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
    if len(ids) and (ids.min() < 0 or ids.max() >= len(models)):
        raise ZooError(f"model ids must lie in 0..{len(models) - 1}")
    rows = models.set_index("model_id").loc[ids]
    if layout is not None and (rows.layout != layout).any():
        raise ZooError(f"model {int(rows.index[(rows.layout != layout).to_numpy()][0])} is not of layout {layout}")
    bad = rows.index[(rows.status != "done").to_numpy()]
    if len(bad):
        raise ZooError(f"model {int(bad[0])} is {rows.status[bad[0]]}: it has no complete trajectory")
    return z.weights(ids, checkpoint=None)[:, order]
