"""``zoo build``: create (or resume) a zoo store and train its populations into it.

The store is made with the writer API (zoo.writer), like every other producer of weights. The unit of
work is one block of one layout (a write unit): its populations train, then its models are written in
one write and committed by their state rows. A build that finds the same config trains only the units
that still have pending models, so a killed build resumes where it stopped and, training being
deterministic, ends with the same bits as an uninterrupted one. Units never share a stored object, so
Dask workers write them in parallel.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from zoo import store as zstore
from zoo.app.checks import list_of, number, one_of, optional, typed
from zoo.app.progress import Progress
from zoo.app.runtime import THREADS, device_rule, resolve_device, torch_threads
from zoo.app.schema import Schema, group, key, validate
from zoo.datasets import Dataset, metric_names
from zoo.errors import ZooError
from zoo.inr import grid_dataset, inr_images
from zoo.landscape.compute import compute_landscape, resolve_config
from zoo.store.lock import writing
from zoo.store.writer import DEFAULT_BLOCK_SIZE
from zoo.training import hparams as hp
from zoo.training import trajectory
from zoo.training.population import train_population
from zoo.training.recipe import Plan, init_state, load_recipe_datasets, make_plan
from zoo.training.spec import PopulationSpec


def _dataset_names(v: Any) -> str | None:
    """A list (possibly empty) of dataset names: tasks a recipe keeps out of its zoo."""
    ok = isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)
    return None if ok else "a list of dataset names (possibly empty)"


def _stage_rates(v: Any) -> str | None:
    ok = isinstance(v, (int, float, list, tuple)) and not isinstance(v, bool)
    return None if ok else "a rate or a range [low, high] with 0 < low <= high <= 1"


@dataclass(frozen=True)
class RecipeConfig(Schema, group="recipe", name="base"):
    """A conf/recipe/<name>.yaml: what zoo to train; defaults are conf/recipe/default.yaml's (null: the key is absent,
    its feature off or zoo.arch's default)."""

    WHERE = "recipe."

    name: str = key("mlp-digits", typed(str, "a string"), "the zoo's name (out defaults to data/zoos/<name>.zarr)")
    dataset: str | None = key(
        "digits",
        optional(typed(str, "a dataset name or a path to a .npz file")),
        "a task name (see zoo.datasets.DATASETS) or a path to a .npz file",
    )
    task_seed: int = key(0, number(int), "the train/test split's seed")
    arch: str = key(
        "mlp",
        one_of("mlp", "cnn", "resnet", "siren", "vit", "transformer"),
        "mlp | cnn | resnet | siren | vit | transformer",
    )
    activation: str = key("relu", typed(str, "an activation name"), "")
    batchnorm: bool = key(False, typed(bool, "true or false"), "cnn only")
    kernel_size: int = key(3, number(int, 1), "cnn only")
    widths: list[int] = key([8, 16, 32, 64], list_of(number(int, 1)), "")
    depths: list[int] = key([2], list_of(number(int, 0)), "")
    learning_rates: list[float] = key([0.003, 0.01, 0.03, 0.1], list_of(number(float, 0, low_open=True)), "")
    batch_sizes: list[int] = key([32, 128], list_of(number(int, 1)), "")
    weight_decays: list[float] = key([0.0, 0.001], list_of(number(float, 0)), "")
    seeds: int = key(8, number(int, 1), "a count: seeds 0..seeds-1 (plus seed_offset)")
    seed_offset: int = key(0, number(int, 0), "")
    optimizer: str = key("sgd", one_of(*hp.OPTIMIZERS), "sgd | adam | adamw")
    momentum: float = key(0.9, number(float, 0, 1), "sgd only")
    schedule: str = key("constant", one_of("constant", "cosine"), "constant | cosine")
    epochs: int = key(20, number(int, 0), "")
    checkpoint_epochs: list[int] = key([0, 1, 2, 3, 5, 8, 12, 16, 20], list_of(number(int, 0), sorted_unique=True), "")
    datasets: list[str] | None = key(
        None,
        optional(list_of(typed(str, "dataset names or patterns"))),
        "several tasks in one zoo (instead of dataset): names or patterns",
    )
    held_out: list[str] | None = key(None, optional(_dataset_names), "tasks a recipe keeps out of its zoo")
    heads: int | None = key(
        None, optional(number(int, 1)), "vit/transformer: attention heads (width must be a multiple; 4)"
    )
    mlp_ratio: float | None = key(
        None, optional(number(float, 0, low_open=True)), "vit/transformer: MLP hidden = ratio * width (2)"
    )
    patch: int | None = key(None, optional(number(int, 1)), "vit: patch side (must divide the image; 2)")
    tokens: int | None = key(
        None, optional(number(int, 1)), "transformer: one-hot tokens the flat input splits into (2)"
    )
    w0: float | None = key(
        None, optional(number(float, 0, low_open=True)), "siren: the first layer's frequency (zoo.arch; 30)"
    )
    w0_hidden: float | None = key(
        None, optional(number(float, 0, low_open=True)), "siren: the hidden layers' frequency (30)"
    )
    validation_fraction: float | None = key(
        None, optional(number(float, 0, 1)), "kind: inr: training images kept for validation"
    )
    shared_init: bool | None = key(
        None, optional(typed(bool, "true or false")), "kind: inr: every INR starts from one initialization"
    )
    max_images: int | None = key(
        None, optional(number(int, 3)), "kind: inr: about this many images (quick zoos; zoo.inr)"
    )
    stride: int | None = key(
        None, optional(number(int, 1)), "cnn: every conv's stride; resnet: the stem's (zoo.arch; 1 when absent)"
    )
    resnet_stages: int | None = key(
        None, optional(number(int, 1)), "resnet: stages, each doubling width and halving the map (1 when absent)"
    )
    padding: str | None = key(None, optional(one_of("same", "valid")), "cnn: same (kernel_size // 2) or valid (none)")
    hparams: Any = key(
        None,
        optional(typed(Mapping, "a mapping of hyperparameter -> distribution")),
        "hyperparameters drawn per model (zoo.training.hparams)",
    )
    kind: str | None = key(
        None,
        optional(one_of("grid", "trajectory", "inr")),
        "grid (null) | trajectory: full-data training, then nested stages (zoo.training.trajectory) | inr: one SIREN "
        "per image (zoo.inr)",
    )
    stages: int | None = key(None, optional(number(int, 1)), "kind: trajectory: nested data stages")
    stage_epochs: int | None = key(None, optional(number(int, 1)), "kind: trajectory: epochs per stage")
    sample_hparams: bool | None = key(
        None, optional(typed(bool, "true or false")), "draw lr and batch size per model (zoo.training.recipe)"
    )
    stage_rates: Any = key(
        None, optional(_stage_rates), "kind: trajectory: a rate or a range [low, high] with 0 < low <= high <= 1"
    )
    landscape: Any = key(
        None,
        optional(typed(Mapping, "a mapping of landscape settings")),
        "metrics and phases after training (enabled: true); every key of conf/landscape/default.yaml",
    )


@dataclass(frozen=True)
class ExecutorConfig(Schema, group="executor", name="base"):
    """A conf/executor/<name>.yaml: where the populations train (null keys: the dask executor's defaults)."""

    WHERE = "executor."

    name: str = key("local", one_of("local", "dask"), "local: one after another in this process | dask: on a cluster")
    address: str | None = key(
        None,
        optional(typed(str, "tcp://HOST:PORT")),
        "dask: a running scheduler; null starts a local cluster",
    )
    n_workers: int | None = key(None, optional(number(int, 1)), "dask, local cluster only: workers (2)")
    threads_per_worker: int | None = key(None, optional(number(int, 1)), "dask, local cluster only: threads (1)")


@dataclass(frozen=True)
class BuildConfig(Schema, group="", name="build"):
    """conf/build.yaml: the run settings of ``zoo build``; ``recipe:`` is checked by :class:`RecipeConfig`."""

    recipe: Any = group("a recipe: recipe=NAME")
    executor: Any = group("an executor config: executor=NAME")
    out: str = key(
        "data/zoos/${recipe.name}.zarr",
        typed(str, "a path or fsspec URL"),
        "local path or fsspec URL (file://, memory://, s3://, ...)",
    )
    overwrite: bool = key(False, typed(bool, "true or false"), "replace a store built from a different config")
    population_size: int = key(256, number(int, 1), "most models trained at once as one stacked population")
    block_size: int = key(
        256, number(int, 1), "models per stored block: the unit one writer (process) owns, trains and commits"
    )
    memory_floats: int = key(
        50000000, number(int, 1), "bound on activation floats per step; caps populations of big models"
    )
    retain_memory: bool = key(
        True,
        typed(bool, "true or false"),
        "glibc malloc keeps freed large blocks (process-wide): ~25-45% faster steps here",
    )
    threads: int | None = key(
        1,
        optional(number(int, 1)),
        "torch threads per process (null: torch's default); 1 is fastest for these small GEMMs here",
    )
    device: str = key(
        "cpu",
        device_rule,
        "cpu | cuda | cuda:N | auto (cuda when torch sees a GPU): where populations train (Lightning's accelerator); "
        "results come back to the CPU. cuda's bits differ from cpu's",
    )
    progress: bool = key(
        True,
        typed(bool, "true or false"),
        "one bar over models in a terminal; in a log a line every 5 s at most (zoo.progress)",
    )


def check_build_config(cfg: Mapping) -> None:
    """Every key and value of a composed ``zoo build`` config, recipe included."""
    validate(BuildConfig, cfg)
    validate(RecipeConfig, cfg["recipe"])
    validate(ExecutorConfig, cfg.get("executor") or {})
    recipe = cfg["recipe"]
    trajectory.check_trajectory_recipe(recipe)
    if recipe.get("hparams") is not None:
        hp.check_hparams(recipe["hparams"])
    if (recipe.get("dataset") is None) == (recipe.get("datasets") is None):
        raise ZooError(
            "recipe.dataset and recipe.datasets are both given; keep one (recipe.dataset=null to use the list)"
            if recipe.get("dataset") is not None
            else "recipe.dataset (one name) or recipe.datasets (a list of names) is missing"
        )
    ckpts = (
        recipe["checkpoint_epochs"] if isinstance(recipe["checkpoint_epochs"], list) else [recipe["checkpoint_epochs"]]
    )
    if ckpts[-1] > recipe["epochs"]:
        raise ZooError(
            f"recipe.checkpoint_epochs={ckpts} is invalid: checkpoints must lie within 0..{recipe['epochs']}"
            " (recipe.epochs)"
        )


# config keys that change what is trained (and so the bits); others (out, progress, executor) do not
IDENTITY_KEYS = ("recipe", "population_size", "memory_floats", "block_size")
PACKAGES = ("wszoo", "torch", "lightning", "zarr", "numpy", "scikit-learn")


def config_hash(cfg: Mapping) -> str:
    """Hash of what determines the trained bits (a recipe's analysis settings, ``landscape``, excluded)."""
    ident = {k: cfg.get(k) for k in IDENTITY_KEYS}
    ident["recipe"] = {k: v for k, v in (ident["recipe"] or {}).items() if k != "landscape"}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def _versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = "unknown"
    return out


def create_store(
    path: str, cfg: Mapping, plan: Plan, dataset: Dataset | Mapping[str, Dataset], metric_names: list[str]
) -> None:
    """Write an empty store for ``plan`` through the writer API, with the build config as provenance."""
    recipe, data = cfg["recipe"], dataset if isinstance(dataset, Mapping) else {dataset.key: dataset}
    table = trajectory.stage_columns(plan.models_table(recipe), recipe, {k: len(d.X_train) for k, d in data.items()})
    traj = trajectory.trajectory_attrs(recipe, recipe["checkpoint_epochs"])  # the nowcaster's contract
    zstore.create(
        path,
        table,
        plan.layouts,
        plan.checkpoint_epochs,
        metric_names,
        attrs={
            "config": cfg,
            "config_hash": config_hash(cfg),
            "versions": _versions(),
            "producer": "zoo build",
            **({"trajectory": traj} if traj else {}),
            **({"inr": _inr_attrs(recipe, data)} if recipe.get("kind") == "inr" else {}),
        },
        datasets=list(dataset.values()) if isinstance(dataset, Mapping) else [dataset],
        overwrite=True,
        block_size=int(cfg.get("block_size", DEFAULT_BLOCK_SIZE)),
    )


def _metric_names(dataset: Dataset, recipe: Mapping) -> list[str]:
    return list(metric_names("inr" if recipe.get("kind") == "inr" else dataset.kind))


def _inr_attrs(recipe: Mapping, data: Mapping[str, Dataset]) -> dict:
    """The ``inr`` attribute of an INR zoo: what renders its models without the dataset (zoo.inr)."""
    source = next(iter(data.values()))
    return {
        "image_shape": [int(s) for s in source.X_train.shape[2:]],
        "dataset": source.key,
        "validation_fraction": float(recipe.get("validation_fraction", 0.1)),
        "coordinates": "row-major (row, column) in [-1, 1]",
        "peak": 1.0,
    }


def _inr_data(recipe: Mapping, source: Dataset) -> tuple[Dataset, torch.Tensor]:
    """An INR recipe's shared coordinate grid and every image's intensities [n_images, H * W, 1] (zoo.inr)."""
    images = inr_images(source, float(recipe.get("validation_fraction", 0.1)), int(recipe.get("task_seed", 0)))
    return grid_dataset(source, images.shape), images.pixels  # every image: models index it by ``image``


def make_build_plan(cfg: Mapping, dataset: Dataset | Mapping[str, Dataset]) -> Plan:
    """The plan of a build config (deterministic: every process derives the same one)."""
    return make_plan(
        cfg["recipe"],
        dataset,
        int(cfg["population_size"]),
        int(cfg["memory_floats"]),
        int(cfg.get("block_size", DEFAULT_BLOCK_SIZE)),
    )


def refuse_other_zoo(cfg: Mapping) -> None:
    """Refuse a store at ``cfg.out`` built by another wszoo schema or from another config, unless ``overwrite``:
    a zoo is resumed by the same config only, never replaced without asking (checked before any work)."""
    path = str(cfg["out"])
    meta = zstore.existing_meta(path)
    if meta is None or cfg.get("overwrite") or not meta.get("initialized"):
        return
    if int(meta.get("schema_version", 0)) != zstore.SCHEMA_VERSION:
        raise ZooError(
            f"{path!r} has schema version {meta.get('schema_version')}, this wszoo writes"
            f" {zstore.SCHEMA_VERSION}; build into a new out= or pass overwrite=true"
        )
    if meta.get("config_hash") != config_hash(cfg):
        raise ZooError(
            f"{path!r} holds a zoo built from a different config; pass overwrite=true to replace it"
            " or choose another out="
        )


def prepare(cfg: Mapping) -> tuple[str, Plan, dict[str, Dataset], list[int]]:
    """Create or validate the store at cfg.out; return its path, plan, datasets by name and the pending write units."""
    path, recipe = str(cfg["out"]), cfg["recipe"]
    datasets = load_recipe_datasets(recipe)
    if len(datasets) > 1 and (recipe.get("landscape") or {}).get("enabled"):
        raise ZooError(
            "recipe.landscape.enabled is for zoos over one dataset; this recipe has"
            f" {len(datasets)} (set recipe.landscape.enabled=false)"
        )
    plan = make_build_plan(cfg, datasets)
    refuse_other_zoo(cfg)
    meta = zstore.existing_meta(path)
    if meta is not None and cfg.get("overwrite"):
        zstore.remove(path)
        meta = None
    if meta is not None and meta.get("initialized"):
        for dataset in datasets.values():
            stored = ((meta.get("datasets") or {}).get(dataset.location) or {}).get("fingerprint")
            if stored != dataset.fingerprint:
                raise ZooError(
                    f"the data of {dataset.location!r} changed since this zoo was started (fingerprint"
                    f" {str(stored)[:12]}... now {dataset.fingerprint[:12]}...); restore it or build into"
                    " a new out="
                )
    else:  # nothing there, or a creation that was interrupted (nothing of value inside): start again
        create_store(path, cfg, plan, datasets, _metric_names(next(iter(datasets.values())), recipe))
    status = zstore.open(path).models["status"].to_numpy()
    pending = [
        u for u, pops in enumerate(plan.units) if any((status[plan.populations[p]] == "pending").any() for p in pops)
    ]
    return path, plan, datasets, pending


def population_dataset(plan: Plan, index: int, dataset: Dataset | Mapping[str, Dataset]) -> Dataset:
    """The dataset population ``index`` trains on (a population never mixes datasets); an INR population's is its
    source's coordinate grid."""
    if not isinstance(dataset, Mapping):
        source = dataset
    else:
        source = dataset[plan.models[plan.populations[index][0]].dataset]
    if plan.models[plan.populations[index][0]].image >= 0:
        return grid_dataset(source, source.X_train.shape[2:])
    return source


def population_spec(
    cfg: Mapping, plan: Plan, index: int, dataset: Dataset | Mapping[str, Dataset] | None = None
) -> PopulationSpec:
    """The PopulationSpec of population ``index``; ``dataset`` sizes per-model training subsets
    (recipe.hparams.train_fraction, which needs it)."""
    recipe = cfg["recipe"]
    models = [plan.models[i] for i in plan.populations[index]]
    layout = plan.layouts[models[0].layout]
    drawn = recipe.get("hparams") or {}
    if "train_fraction" in drawn and dataset is None:
        raise ZooError("recipe.hparams.train_fraction: population_spec needs the dataset to draw training subsets")
    n_train = len(population_dataset(plan, index, dataset).X_train) if dataset is not None else 0
    targets = None
    if recipe.get("kind") == "inr":
        if dataset is None:
            raise ZooError("a kind: inr population needs its dataset: population_spec(cfg, plan, index, dataset)")
        source = dataset if not isinstance(dataset, Mapping) else dataset[models[0].dataset]
        _, pixels = _inr_data(recipe, source)
        targets = pixels[torch.tensor([m.image for m in models])]
    return PopulationSpec(
        template=layout.build(),
        layout=layout,
        init_states=[init_state(m.arch, m.seed, m.init, m.init_std) for m in models],
        learning_rates=[m.learning_rate for m in models],
        weight_decays=[m.weight_decay for m in models],
        data_seeds=[1_000_003 + m.seed for m in models],
        batch_size=models[0].batch_size,
        epochs=int(recipe["epochs"]),
        checkpoint_epochs=plan.checkpoint_epochs,
        optimizer=models[0].optimizer,  # a population never mixes optimizers (zoo.training.recipe)
        momentum=float(recipe.get("momentum", 0.0)),
        schedule=recipe.get("schedule", "constant"),
        eval_memory_floats=int(cfg["memory_floats"]),
        retain_memory=bool(cfg.get("retain_memory", True)),
        device=str(cfg.get("device", "cpu")),
        **trajectory.spec_fields(recipe, [m.model_id for m in models], [m.seed for m in models]),
        dropouts=[m.dropout for m in models] if "dropout" in drawn else [],
        dropout_seeds=[hp.dropout_seed(m.seed) for m in models] if "dropout" in drawn else [],
        train_subsets=(
            [hp.train_subset(n_train, m.train_fraction, m.seed) for m in models] if "train_fraction" in drawn else []
        ),
        targets=targets,
    )


def train_and_write(
    path: str,
    cfg: Mapping,
    plan: Plan,
    dataset: Dataset,
    unit: int,
    progress: bool = False,
    on_population: Callable[[float], None] | None = None,
) -> dict:
    """Train the populations of write unit ``unit`` that hold pending models, write those models in one
    write per block; returns counts (done, diverged). ``on_population(n)`` advances progress displays by
    n models: a population of m models advances m / epochs per epoch, a skipped one m at once."""
    with torch_threads(cfg.get("threads", THREADS)):  # 1 unless set, as on every command; restored after
        return _train_and_write(path, cfg, plan, dataset, unit, progress, on_population)


def _train_and_write(
    path: str,
    cfg: Mapping,
    plan: Plan,
    dataset: Dataset,
    unit: int,
    progress: bool,
    on_population: Callable[[float], None] | None = None,
) -> dict:
    writer = zstore.open_writer(path)
    z = zstore.open(path)
    status = z.models["status"].to_numpy()
    ids, weights, metrics, codes, lasts = [], [], [], [], []
    for index in plan.units[unit]:
        members = plan.populations[index]
        if not (status[members] == "pending").any():
            if on_population is not None:
                on_population(len(members))
            continue
        shown = [0.0]  # models' worth of progress shown so far: each epoch advances len(members) / epochs

        def epoch_done(epoch: int, total: int, n: int = len(members), shown: list = shown) -> None:
            step = n * epoch / max(total, 1) - shown[0]
            shown[0] += step
            on_population(step)

        result = train_population(
            population_spec(cfg, plan, index, dataset),
            population_dataset(plan, index, dataset),
            progress=progress,
            on_epoch=epoch_done if on_population is not None else None,
        )
        if on_population is not None:
            on_population(len(members) - shown[0])
        for j, model_id in enumerate(members):
            if status[model_id] != "pending":
                continue
            ids.append(model_id)
            weights.append(result.weights[j])
            metrics.append(result.metrics[j])
            codes.append("diverged" if bool(result.diverged[j]) else "done")
            lasts.append(int(result.last_checkpoint[j]))
    if ids:
        writer.write(ids, torch.stack(weights), torch.stack(metrics), status=codes, last_checkpoint=lasts)
    return {"done": codes.count("done"), "diverged": codes.count("diverged")}


def train_unit(path: str, cfg: Mapping, unit: int) -> dict:
    """Train and write one write unit from the config alone (a Dask worker runs this: everything it needs comes
    from the config, which re-derives the same plan, nothing from the client's memory)."""
    datasets = load_recipe_datasets(cfg["recipe"])
    return train_and_write(path, cfg, make_build_plan(cfg, datasets), datasets, unit, progress=False)


def run_local(path: str, cfg: Mapping, plan: Plan, dataset: Dataset, pending: list[int], progress: bool) -> None:
    """Train the pending units in order under one progress display over models (zoo.progress: a bar in a
    terminal, a line every few seconds in a log) that advances as populations finish; Lightning's own
    per-population bars stay off, so a build of thousands of models logs at most about 100 lines."""
    total, diverged = sum(plan.unit_size(u) for u in pending), 0
    with Progress(total, "models", prefix="zoo build", enabled=progress) as bar:
        for unit in pending:
            counts = train_and_write(path, cfg, plan, dataset, unit, progress=False, on_population=bar.update)
            diverged += counts["diverged"]
            bar.set_postfix(diverged=diverged)


EXECUTORS = ("local", "dask")


def _executor(name: str) -> Callable[..., None]:
    """The function that runs pending populations; dask is imported only when asked for."""
    if name == "local":
        return run_local
    if name == "dask":
        from zoo.training.distributed import run_dask  # dask is heavy: imported only when asked for

        return functools.partial(run_dask, train_unit=train_unit)
    raise ZooError(f"unknown executor {name!r}; choose one of {list(EXECUTORS)}")


def build(cfg: Mapping) -> zstore.Zoo:
    """Build (or resume) the zoo that ``cfg`` describes and return it opened."""
    cfg = dict(cfg)
    check_build_config(cfg)  # types, ranges, unknown keys: before anything is written
    resolve_device(str(cfg.get("device", "cpu")))  # device=cuda without a GPU: one line, nothing written
    run = _executor((cfg.get("executor") or {}).get("name", "local"))
    with writing(str(cfg["out"]), "zoo build"):  # one writer at a time
        path, plan, dataset, pending = prepare(cfg)
        progress = bool(cfg.get("progress", True))
        if pending:
            run(path, cfg, plan, dataset, pending, progress)
        z = zstore.open(path)
        landscape = dict(cfg["recipe"].get("landscape") or {})
        if landscape.get("enabled") and z.landscape is None:
            compute_landscape(z, resolve_config(landscape), progress=progress)
            z = zstore.open(path)
    return z
