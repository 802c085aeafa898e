"""A recipe is a grid; the plan expands it into models, layouts and populations, deterministically.

Models are numbered in grid order (dataset, width, depth, learning rate, batch size, weight decay, seed):
``recipe.dataset`` is one dataset, ``recipe.datasets`` a list of them (patterns expanded and held-out
tasks removed by zoo.datasets.expand_dataset_names) that share one input shape and output count. Within a
layout, rows are ordered by batch size, then id, and cut into blocks of ``block_size`` rows: a block is
the unit one writer owns (a weights shard, a metrics and a state chunk; see zoo.store.writer). Models of
one block that share a batch size and a dataset step in lockstep on that dataset's tensors, so they form
populations (at most ``population_size`` models, fewer when the activations would exceed the memory bound).
The plan depends only on the config, so every process (a resumed build, a Dask worker) derives the same
one. ``sample_hparams: true`` draws each model's learning rate and batch size
(zoo.training.trajectory.sample_hparams) instead of gridding them; ``hparams:`` draws any of optimizer,
learning rate, weight decay, batch size, activation, initialization, dropout and training fraction per model
from the distributions it names (zoo.training.hparams; each drawn axis of the grid collapses to its first
value); ``kind: trajectory`` adds stages on nested subsets after training (zoo.training.trajectory).
Populations never mix optimizers or architectures (a drawn activation gives each activation its own
layout, keyed ``<layout key>-<activation>`` when the tensors alone would not tell them apart); within a
layout, rows are ordered by batch size, optimizer, training fraction, then id.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import torch

from zoo.arch import arch_spec, build_model
from zoo.datasets import Dataset, expand_dataset_names, load_dataset
from zoo.errors import ZooError
from zoo.forward import activation_floats_per_sample
from zoo.inr import grid_dataset, inr_images
from zoo.layout import Layout, layout_of
from zoo.training import hparams as hp
from zoo.training.trajectory import check_trajectory_recipe, is_trajectory, plan_checkpoints, sample_hparams

OPTIMIZERS = hp.OPTIMIZERS
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class ModelPlan:
    model_id: int
    arch: dict
    learning_rate: float
    batch_size: int
    weight_decay: float
    seed: int
    layout: str
    row: int
    population: int
    dataset: str = ""  # the name the models table records and Zoo.dataset reloads
    optimizer: str = "sgd"  # the recipe's, or drawn (recipe.hparams)
    init: str = "default"  # zoo.training.hparams.init_state's rule
    init_std: float = 0.05  # used by init truncated_normal only
    dropout: float = 0.0
    train_fraction: float = 1.0
    image: int = -1  # kind: inr: the image this INR fits (zoo.inr numbering), its label and split
    label: int = -1
    split: str = ""


@dataclass(frozen=True)
class Plan:
    models: list[ModelPlan]
    layouts: dict[str, Layout]
    populations: list[list[int]]  # model ids per population, in population order
    checkpoint_epochs: list[int]
    units: list[list[int]]  # population indices per write unit (one block of one layout), in order

    def unit_size(self, unit: int) -> int:
        """Models in one write unit."""
        return sum(len(self.populations[p]) for p in self.units[unit])

    def models_table(self, recipe: Mapping) -> pd.DataFrame:
        """The models table's static part: ids, hyperparameters, layout and row, population."""
        cols: dict[str, list] = {
            k: []
            for k in (
                "model_id",
                "arch",
                "width",
                "depth",
                "activation",
                "learning_rate",
                "batch_size",
                "weight_decay",
                "optimizer",
                "momentum",
                "schedule",
                "seed",
                "dataset",
                "epochs",
                "layout",
                "row",
                "population",
            )
        }
        drawn = "hparams" in recipe and recipe["hparams"] is not None
        extra: tuple[str, ...] = ("init", "init_std", "dropout", "train_fraction") if drawn else ()
        if recipe.get("kind") == "inr":
            extra = ("label", "image", "split")
        cols.update({k: [] for k in extra})
        for m in self.models:
            for k in extra:
                cols[k].append(getattr(m, k))
            for k, v in (
                ("model_id", m.model_id),
                ("arch", m.arch["name"]),
                ("width", m.arch["width"]),
                ("depth", m.arch["depth"]),
                ("activation", m.arch["activation"]),
                ("learning_rate", m.learning_rate),
                ("batch_size", m.batch_size),
                ("weight_decay", m.weight_decay),
                ("optimizer", m.optimizer),
                ("momentum", float(recipe.get("momentum", 0.0))),
                ("schedule", recipe.get("schedule", "constant")),
                ("seed", m.seed),
                ("dataset", m.dataset or recipe["dataset"]),
                ("epochs", int(recipe["epochs"])),
                ("layout", m.layout),
                ("row", m.row),
                ("population", m.population),
            ):
                cols[k].append(v)
        return pd.DataFrame(cols)


def _as_list(recipe: Mapping, key: str) -> list:
    v = recipe.get(key)
    if v is None:
        raise ZooError(f"recipe.{key} is missing")
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    if not v:
        raise ZooError(f"recipe.{key} is empty")
    return v


def recipe_dataset_names(recipe: Mapping) -> list[str]:
    """The datasets a recipe trains on, in grid order: ``[recipe.dataset]`` or ``recipe.datasets`` expanded."""
    one, many = recipe.get("dataset"), recipe.get("datasets")
    if one is not None and many is not None:
        raise ZooError(
            "recipe.dataset and recipe.datasets are both given; keep one (recipe.dataset=null to use the list)"
        )
    if many is None:
        if one is None:
            raise ZooError("recipe.dataset (one name) or recipe.datasets (a list) is missing")
        return [str(one)]
    return expand_dataset_names(_as_list(recipe, "datasets"), list(recipe.get("held_out") or []))


def load_recipe_datasets(recipe: Mapping) -> dict[str, Dataset]:
    """Every dataset of a recipe by its key (a name, or a path made absolute), split with ``recipe.task_seed``;
    one architecture must fit them all."""
    seed = int(recipe.get("task_seed", 0))
    out: dict[str, Dataset] = {}
    for name in recipe_dataset_names(recipe):
        d = load_dataset(name, seed=seed)
        first = next(iter(out.values()), d)
        if (d.input_shape, d.num_outputs, d.kind) != (first.input_shape, first.num_outputs, first.kind):
            raise ZooError(
                f"dataset {name!r} has input shape {d.input_shape} and {d.num_outputs} outputs ({d.kind}),"
                f" but {first.location!r} has {first.input_shape} and {first.num_outputs} ({first.kind}):"
                " one recipe trains one architecture, so its datasets must agree"
            )
        if d.key in out:
            raise ZooError(f"dataset {name!r} is {d.key!r}, which recipe.datasets already lists")
        out[d.key] = d  # a path by its absolute location: the name the zoo records and reloads it by
    for name in recipe.get("held_out") or []:
        load_dataset(str(name), seed=seed)  # a misspelt held-out task is an error now, not in the generator bench
    return out


def _by_name(dataset: Dataset | Mapping[str, Dataset]) -> dict[str, Dataset]:
    return dict(dataset) if isinstance(dataset, Mapping) else {dataset.key: dataset}


def validate_recipe(recipe: Mapping, dataset: Dataset) -> None:
    """Clear errors for values a grid cannot use."""
    if recipe["optimizer"] not in OPTIMIZERS:
        raise ZooError(f"recipe.optimizer {recipe['optimizer']!r} is not one of {list(OPTIMIZERS)}")
    if recipe.get("schedule", "constant") not in SCHEDULES:
        raise ZooError(f"recipe.schedule {recipe.get('schedule')!r} is not one of {list(SCHEDULES)}")
    epochs = int(recipe["epochs"])
    if epochs < 0:
        raise ZooError(f"recipe.epochs must be >= 0, got {epochs}")
    ckpts = [int(c) for c in _as_list(recipe, "checkpoint_epochs")]
    if sorted(set(ckpts)) != ckpts or ckpts[0] < 0 or ckpts[-1] > epochs:
        raise ZooError(f"recipe.checkpoint_epochs must increase strictly within 0..{epochs}, got {ckpts}")
    if not isinstance(recipe["seeds"], int) or recipe["seeds"] < 1:
        raise ZooError(f"recipe.seeds is a count of seeds (an integer >= 1), got {recipe['seeds']!r}")
    for b in _as_list(recipe, "batch_sizes"):
        if int(b) < 1 or int(b) > len(dataset.X_train):
            raise ZooError(f"batch size {b} does not fit the {len(dataset.X_train)} training samples of {dataset.name}")
    for lr in _as_list(recipe, "learning_rates"):
        if float(lr) <= 0:
            raise ZooError(f"learning rates must be positive, got {lr}")
    check_trajectory_recipe(recipe)  # kind: grid (the default) or trajectory (zoo.trajectory)
    drawn = recipe_hparams(recipe)
    if drawn:
        if recipe.get("sample_hparams"):
            raise ZooError("recipe.sample_hparams and recipe.hparams are both given; keep one (hparams can draw both)")
        if ("dropout" in drawn or "train_fraction" in drawn) and is_trajectory(recipe):
            raise ZooError("recipe.hparams.dropout and .train_fraction are for grid recipes, not kind: trajectory")
        if "dropout" in drawn and recipe["arch"] != "cnn":
            raise ZooError(f"recipe.hparams.dropout needs arch cnn (per-model dropout masks), not {recipe['arch']!r}")
        for b in (drawn.get("batch_size") or {}).get("choice", [drawn.get("batch_size", 1)]):
            if int(b) > len(dataset.X_train):
                raise ZooError(
                    f"batch size {b} does not fit the {len(dataset.X_train)} training samples of {dataset.name}"
                )


def recipe_hparams(recipe: Mapping) -> dict:
    """``recipe.hparams`` checked (zoo.training.hparams), {} when the recipe draws nothing."""
    v = recipe.get("hparams")
    return {} if v is None else hp.check_hparams(v)


def make_plan(
    recipe: Mapping,
    dataset: Dataset | Mapping[str, Dataset],
    population_size: int,
    memory_floats: int,
    block_size: int = 256,
) -> Plan:
    """Expand the recipe grid into models, their layouts and the populations that train together.

    ``dataset``: the recipe's one dataset, or every dataset by name (``load_recipe_datasets``)."""
    data = _by_name(dataset)
    if not data:
        raise ZooError("a plan needs at least one dataset")
    if recipe.get("kind") == "inr":
        if len(data) != 1:
            raise ZooError(f"a kind: inr recipe fits the images of one dataset, this one names {len(data)}")
        return _make_inr_plan(recipe, next(iter(data.values())), population_size, memory_floats, block_size)
    validate_recipe(recipe, min(data.values(), key=lambda d: len(d.X_train)))
    dataset = next(iter(data.values()))  # all share input shape and output count: the architecture's
    models: list[dict] = []
    layouts: dict[str, Layout] = {}
    seed_base = int(recipe.get("seed_offset", 0))
    lrs, bss, sampled = (
        _as_list(recipe, "learning_rates"),
        _as_list(recipe, "batch_sizes"),
        recipe.get("sample_hparams"),
    )
    drawn = recipe_hparams(recipe)
    wds = _as_list(recipe, "weight_decays")
    grid = itertools.product(
        list(data),
        _as_list(recipe, "widths"),
        _as_list(recipe, "depths"),
        lrs[:1] if sampled or "learning_rate" in drawn else lrs,
        bss[:1] if sampled or "batch_size" in drawn else bss,
        wds[:1] if "weight_decay" in drawn else wds,
        range(int(recipe["seeds"])),
    )
    act_cache: dict[str, int] = {}
    key_of_spec: dict[str, str] = {}  # building a module per grid point would dominate a 100k-model plan
    for model_id, (name, width, depth, lr, bs, wd, s) in enumerate(grid):
        if sampled:  # per model: learning rate log-uniform within the listed ones' range, batch size among them
            lr, bs = sample_hparams(lrs, bss, model_id, seed_base + s)
        d = hp.draw(drawn, model_id, seed_base + s) if drawn else {}
        spec = arch_spec(
            recipe["arch"],
            dataset.input_shape,
            dataset.num_outputs,
            int(width),
            int(depth),
            d.get("activation", recipe.get("activation", "relu")),
            recipe.get("batchnorm", True),
            recipe.get("kernel_size", 3),
            recipe.get("stride", 1),
            recipe.get("padding", "same"),
            "dropout" in drawn,
            heads=int(recipe.get("heads", 4)),
            mlp_ratio=float(recipe.get("mlp_ratio", 2.0)),
            patch=int(recipe.get("patch", 2)),
            tokens=int(recipe.get("tokens", 2)),
            stages=int(recipe.get("resnet_stages", 1)),
        )
        spec_id = json.dumps(spec, sort_keys=True)
        if spec_id not in key_of_spec:
            key_of_spec[spec_id] = _layout_key(spec, layouts, act_cache, dataset)
        key = key_of_spec[spec_id]
        models.append(
            dict(
                model_id=model_id,
                arch=spec,
                learning_rate=float(d.get("learning_rate", lr)),
                batch_size=int(d.get("batch_size", bs)),
                weight_decay=float(d.get("weight_decay", wd)),
                seed=seed_base + s,
                layout=key,
                dataset=name,
                optimizer=str(d.get("optimizer", recipe["optimizer"])),
                init=str(d.get("init", "default")),
                init_std=float(d.get("init_std", 0.05)),
                dropout=float(d.get("dropout", 0.0)),
                train_fraction=float(d.get("train_fraction", 1.0)),
            )
        )
    populations: list[list[int]] = []
    units: list[list[int]] = []
    row_of: dict[int, int] = {}
    for key in layouts:
        ids = sorted(
            (m["model_id"] for m in models if m["layout"] == key),
            key=lambda i: (models[i]["batch_size"], models[i]["optimizer"], models[i]["train_fraction"], i),
        )
        row_of.update({i: r for r, i in enumerate(ids)})
        for lo in range(0, len(ids), block_size):
            unit = []
            for (bs, _, _), group in itertools.groupby(
                ids[lo : lo + block_size],
                key=lambda i: (models[i]["batch_size"], models[i]["dataset"], models[i]["optimizer"]),
            ):
                group = list(group)
                # cap the population so one training step's activations stay within the memory bound
                cap = max(1, min(population_size, memory_floats // max(1, bs * act_cache[key] * 3)))
                for i in range(0, len(group), cap):
                    unit.append(len(populations))
                    populations.append(group[i : i + cap])
            units.append(unit)
    pop_of = {i: p for p, ids in enumerate(populations) for i in ids}
    plans = [ModelPlan(population=pop_of[m["model_id"]], row=row_of[m["model_id"]], **m) for m in models]
    return Plan(plans, layouts, populations, plan_checkpoints(recipe, _as_list(recipe, "checkpoint_epochs")), units)


def _make_inr_plan(
    recipe: Mapping, dataset: Dataset, population_size: int, memory_floats: int, block_size: int
) -> Plan:
    """One SIREN per image (times ``recipe.seeds``), in image order (zoo.inr): one layout, blocks of
    ``block_size`` rows, populations capped by the memory bound as a grid's are."""
    if recipe.get("hparams") is not None or recipe.get("sample_hparams"):
        raise ZooError("recipe.hparams and recipe.sample_hparams are for grid recipes, not kind: inr")
    if recipe.get("arch") != "siren":
        raise ZooError(f"a kind: inr recipe fits SIRENs (recipe.arch=siren), not {recipe.get('arch')!r}")
    images = inr_images(
        dataset,
        float(recipe.get("validation_fraction", 0.1)),
        int(recipe.get("task_seed", 0)),
        recipe.get("max_images"),
    )
    grid = grid_dataset(dataset, images.shape)
    validate_recipe(recipe, grid)  # batch sizes count pixels per step
    for key in ("widths", "depths", "learning_rates", "batch_sizes", "weight_decays"):
        if len(_as_list(recipe, key)) != 1:
            raise ZooError(f"recipe.{key} of a kind: inr recipe is one value (every INR is fitted alike)")
    spec = arch_spec(
        "siren",
        [2],
        1,
        int(_as_list(recipe, "widths")[0]),
        int(_as_list(recipe, "depths")[0]),
        w0=float(recipe.get("w0", 30.0)),
        w0_hidden=float(recipe.get("w0_hidden", 30.0)),
    )
    layouts: dict[str, Layout] = {}
    act_cache: dict[str, int] = {}
    key = _layout_key(spec, layouts, act_cache, grid)
    lr, bs = float(_as_list(recipe, "learning_rates")[0]), int(_as_list(recipe, "batch_sizes")[0])
    wd, seed_base = float(_as_list(recipe, "weight_decays")[0]), int(recipe.get("seed_offset", 0))
    models: list[ModelPlan] = []
    populations: list[list[int]] = []
    units: list[list[int]] = []
    cap = max(1, min(population_size, memory_floats // max(1, bs * act_cache[key] * 3)))
    n = len(images) * int(recipe["seeds"])
    for lo in range(0, n, block_size):
        ids = list(range(lo, min(n, lo + block_size)))
        units.append([])
        for i in range(0, len(ids), cap):
            units[-1].append(len(populations))
            populations.append(ids[i : i + cap])
    pop_of = {i: p for p, ids in enumerate(populations) for i in ids}
    for model_id in range(n):
        image = model_id // int(recipe["seeds"])
        models.append(
            ModelPlan(
                model_id=model_id,
                arch=spec,
                learning_rate=lr,
                batch_size=bs,
                weight_decay=wd,
                # its own init and pixel order, or (shared_init) one initialization for every INR
                seed=seed_base if recipe.get("shared_init") else seed_base + model_id,
                layout=key,
                row=model_id,
                population=pop_of[model_id],
                dataset=dataset.key,
                optimizer=str(recipe["optimizer"]),
                image=int(images.index[image]),
                label=int(images.labels[image]),
                split=str(images.splits[image]),
            )
        )
    return Plan(models, layouts, populations, plan_checkpoints(recipe, _as_list(recipe, "checkpoint_epochs")), units)


def _layout_key(spec: dict, layouts: dict[str, Layout], act_cache: dict[str, int], dataset: Dataset) -> str:
    """The layout key of a spec (registered on first sight). Tensors alone name a layout; two specs with the
    same tensors but different activations (recipe.hparams.activation) get ``<key>-<activation>``."""
    module = build_model(spec)
    layout = layout_of(module, spec)
    key = layout.key()
    if key in layouts and layouts[key].arch != layout.arch:
        key = f"{key}-{spec['activation']}"
        if key in layouts and layouts[key].arch != layout.arch:
            raise ZooError(
                f"two architectures of this recipe share layout {key!r}; they differ in more than activation"
            )
    if key not in layouts:
        layouts[key] = layout
        act_cache[key] = activation_floats_per_sample(module, dataset.X_train)
    return key


def init_state(spec: Mapping, seed: int, init: str = "default", init_std: float = 0.05) -> dict[str, torch.Tensor]:
    """The initialization of a model: PyTorch's default init under ``seed`` (or another rule of
    zoo.training.hparams.init_state), independent of global state."""
    return hp.init_state(spec, seed, init, init_std)
