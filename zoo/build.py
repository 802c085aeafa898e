"""``zoo build``: create (or resume) a zoo store and train its populations into it.

Crash safety: the store's metadata is written first and marked initialized last; each model's weights
and metrics are written before its state row (the commit marker). A build that finds the same config
trains only the populations that still have pending models, so a killed build resumes where it stopped
and, training being deterministic, ends with the same bits as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
from typing import Callable, Mapping

import numpy as np
import torch
import zarr
from tqdm.auto import tqdm

from . import store as zstore
from .errors import ZooError
from .population import PopulationSpec, train_population
from .recipe import Plan, init_state, make_plan
from .datasets import Dataset, load_dataset

# config keys that change what is trained (and so the bits); others (out, progress, executor) do not
IDENTITY_KEYS = ("recipe", "population_size", "memory_floats")
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


def _remove(path: str) -> None:
    fs, root = zstore.location(path)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _existing_meta(path: str) -> dict | None:
    """The wszoo attributes of what is at ``path`` (None if nothing is there); refuse foreign content."""
    fs, root = zstore.location(path)
    if not fs.exists(root):
        return None
    if not zstore._exists(path):
        if fs.isdir(root) and not fs.ls(root):
            return None
        raise ZooError(f"{path!r} exists and is not a zoo; choose another out= or remove it")
    group = zarr.open_group(store=zstore._store_for(path, read_only=True), mode="r")
    meta = group.attrs.get("wszoo")
    if not isinstance(meta, Mapping):
        raise ZooError(f"{path!r} is a Zarr group but not a zoo; choose another out= or remove it")
    return dict(meta)


def create_store(path: str, cfg: Mapping, plan: Plan, dataset: Dataset, metric_names: list[str]) -> None:
    """Write an empty store for ``plan``: arrays sized, hyperparameter table and layouts in attributes."""
    group = zarr.open_group(store=zstore._store_for(path, read_only=False), mode="w")
    n, c = len(plan.models), len(plan.checkpoint_epochs)
    meta = {
        "schema_version": zstore.SCHEMA_VERSION,
        "initialized": False,
        "config": cfg,
        "config_hash": config_hash(cfg),
        "versions": _versions(),
        "datasets": {cfg["recipe"]["dataset"]: dataset.fingerprint},
        "task_kind": dataset.kind,
        "checkpoint_epochs": plan.checkpoint_epochs,
        "metric_names": metric_names,
        "num_models": n,
        "layouts": {k: v.to_json() for k, v in plan.layouts.items()},
        "models": plan.hyperparameter_table(cfg["recipe"]),
        "populations": plan.populations,
    }
    group.attrs["wszoo"] = meta
    state = group.create_array("models/state", shape=(n, 2), dtype="int32", chunks=(1, 2), compressors=None,
                               fill_value=0)
    state.attrs["columns"] = ["status", "last_checkpoint"]
    group.create_array("metrics/values", shape=(n, c, len(metric_names)), dtype="float64",
                       chunks=(1, c, len(metric_names)), compressors=None, fill_value=float("nan"))
    for key, layout in plan.layouts.items():
        rows = sum(1 for m in plan.models if m.layout == key)
        group.create_array(f"layouts/{key}/weights", shape=(rows, c, layout.size), dtype="float32",
                           chunks=(1, 1, layout.size), compressors=None, fill_value=float("nan"))
    meta["initialized"] = True
    group.attrs["wszoo"] = meta


def _metric_names(dataset: Dataset) -> list[str]:
    return list(zstore.REGRESSION_METRICS if dataset.kind == "regression" else zstore.CLASSIFICATION_METRICS)


def prepare(cfg: Mapping) -> tuple[str, Plan, Dataset, list[int]]:
    """Create or validate the store at cfg.out; return its path, plan, dataset and the pending populations."""
    path, recipe = str(cfg["out"]), cfg["recipe"]
    dataset = load_dataset(recipe["dataset"], seed=int(recipe.get("task_seed", 0)))
    plan = make_plan(recipe, dataset, int(cfg["population_size"]), int(cfg["memory_floats"]))
    meta = _existing_meta(path)
    if meta is not None and cfg.get("overwrite"):
        _remove(path)
        meta = None
    if meta is not None:
        if meta.get("config_hash") != config_hash(cfg):
            raise ZooError(f"{path!r} holds a zoo built from a different config; pass overwrite=true to replace it"
                           " or choose another out=")
        if int(meta.get("schema_version", 0)) != zstore.SCHEMA_VERSION:
            raise ZooError(f"{path!r} has schema version {meta.get('schema_version')}, this wszoo writes"
                           f" {zstore.SCHEMA_VERSION}; build into a new out=")
        if not meta.get("initialized"):
            meta = None  # creation itself was interrupted: nothing of value inside, start again
    if meta is None:
        create_store(path, cfg, plan, dataset, _metric_names(dataset))
    group = zarr.open_group(store=zstore._store_for(path, read_only=True), mode="r")
    status = np.asarray(group["models/state"][:, 0])
    pending = [p for p, ids in enumerate(plan.populations) if (status[ids] == zstore.PENDING).any()]
    return path, plan, dataset, pending


def population_spec(cfg: Mapping, plan: Plan, index: int) -> PopulationSpec:
    recipe = cfg["recipe"]
    models = [plan.models[i] for i in plan.populations[index]]
    layout = plan.layouts[models[0].layout]
    return PopulationSpec(
        template=layout.build(), layout=layout,
        init_states=[init_state(m.arch, m.seed) for m in models],
        learning_rates=[m.learning_rate for m in models], weight_decays=[m.weight_decay for m in models],
        data_seeds=[1_000_003 + m.seed for m in models], batch_size=models[0].batch_size,
        epochs=int(recipe["epochs"]), checkpoint_epochs=plan.checkpoint_epochs, optimizer=recipe["optimizer"],
        momentum=float(recipe.get("momentum", 0.0)), schedule=recipe.get("schedule", "constant"),
        eval_memory_floats=int(cfg["memory_floats"]), retain_memory=bool(cfg.get("retain_memory", True)))


def train_and_write(path: str, cfg: Mapping, plan: Plan, dataset: Dataset, index: int, progress: bool = False) -> dict:
    """Train population ``index`` and write its pending models; returns counts (done, diverged)."""
    previous = torch.get_num_threads()
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    try:
        return _train_and_write(path, cfg, plan, dataset, index, progress)
    finally:
        torch.set_num_threads(previous)


def _train_and_write(path: str, cfg: Mapping, plan: Plan, dataset: Dataset, index: int, progress: bool) -> dict:
    ids = plan.populations[index]
    group = zarr.open_group(store=zstore._store_for(path, read_only=False), mode="r+")
    state = group["models/state"]
    status = np.asarray(state.oindex[np.asarray(ids), 0])
    if (status != zstore.PENDING).all():
        return {"done": 0, "diverged": 0}
    result = train_population(population_spec(cfg, plan, index), dataset, progress=progress)
    metrics = group["metrics/values"]
    weights = {key: group[f"layouts/{key}/weights"] for key in {plan.models[i].layout for i in ids}}
    counts = {"done": 0, "diverged": 0}
    for j, model_id in enumerate(ids):
        if status[j] != zstore.PENDING:
            continue
        m = plan.models[model_id]
        weights[m.layout][m.row] = result.weights[j].numpy()
        metrics[model_id] = result.metrics[j].numpy()
        code = zstore.DIVERGED if bool(result.diverged[j]) else zstore.DONE
        state[model_id] = np.asarray([code, int(result.last_checkpoint[j])], dtype=np.int32)  # commit marker
        counts["diverged" if code == zstore.DIVERGED else "done"] += 1
    return counts


def run_local(path: str, cfg: Mapping, plan: Plan, dataset: Dataset, pending: list[int], progress: bool) -> None:
    bar = tqdm(pending, desc="populations", disable=not progress, unit="pop")
    for index in bar:
        bar.set_postfix(models=len(plan.populations[index]))
        train_and_write(path, cfg, plan, dataset, index, progress=progress)


EXECUTORS = ("local", "dask")


def _executor(name: str) -> Callable[..., None]:
    """The function that runs pending populations; dask is imported only when asked for."""
    if name == "local":
        return run_local
    if name == "dask":
        from .distributed import run_dask

        return run_dask
    raise ZooError(f"unknown executor {name!r}; choose one of {list(EXECUTORS)}")


def build(cfg: Mapping) -> "zstore.Zoo":
    """Build (or resume) the zoo that ``cfg`` describes and return it opened."""
    cfg = dict(cfg)
    run = _executor((cfg.get("executor") or {}).get("name", "local"))  # before anything is written
    path, plan, dataset, pending = prepare(cfg)
    progress = bool(cfg.get("progress", True))
    if pending:
        run(path, cfg, plan, dataset, pending, progress)
    z = zstore.open(path)
    landscape = dict(cfg["recipe"].get("landscape") or {})
    if landscape.get("enabled") and z.landscape is None:
        from .landscape.compute import compute_landscape, resolve_config

        compute_landscape(z, resolve_config(landscape), progress=progress)
        z = zstore.open(path)
    return z
