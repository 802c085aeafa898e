"""Dask executor: the write units (blocks) of one build trained on the workers of a distributed cluster.

Each task is ``train_unit(store path, config, unit index)`` (:func:`zoo.training.build.train_unit`, handed
in by the build). A worker re-derives the plan from the config (the plan is deterministic), trains that
unit's populations and writes only its block's shard and chunks, so workers never write the same object
and the store equals a local build's, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from distributed import Client, LocalCluster, as_completed

from zoo.app.progress import Progress
from zoo.datasets import Dataset
from zoo.errors import ZooError
from zoo.training.recipe import Plan


def run_dask(
    path: str,
    cfg: Mapping,
    plan: Plan,
    dataset: Dataset | Mapping[str, Dataset],
    pending: list[int],
    progress: bool,
    *,
    train_unit: Callable[[str, Mapping, int], dict],
) -> None:
    """Train the pending write units on the cluster ``cfg.executor`` names (or a local one), largest first."""

    ex = cfg.get("executor") or {}
    cluster = None
    try:
        if ex.get("address"):
            client = Client(ex["address"], timeout="30s")
        else:
            cluster = LocalCluster(
                n_workers=int(ex.get("n_workers", 2)),
                threads_per_worker=int(ex.get("threads_per_worker", 1)),
                processes=True,
                dashboard_address=None,
            )
            client = Client(cluster)
    except OSError as e:
        raise ZooError(f"cannot reach the Dask scheduler at {ex.get('address')!r}: {e}") from None
    try:
        # largest populations first so the workers finish together; pure=False: every dataset runs once
        order = sorted(pending, key=lambda p: -len(plan.populations[p]))
        futures = [client.submit(train_unit, path, cfg, p, pure=False, key=f"zoo-population-{p}") for p in order]
        with Progress(
            sum(plan.unit_size(p) for p in order), "models", prefix="zoo build (dask)", enabled=progress
        ) as bar:
            unit_of, diverged = {f.key: p for f, p in zip(futures, order)}, 0
            for future in as_completed(futures):
                diverged += future.result()["diverged"]  # re-raises a worker's error here
                bar.update(plan.unit_size(unit_of[future.key]), diverged=diverged)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
