"""``zoo upgrade PATH``: convert a schema-1 zoo (wszoo before the writer API) to the current schema.

Schema 1 kept the models table as one JSON attribute and one chunk per model for state, metrics and
weights. The conversion reads everything through zarr and writes it again with the writer API into a
sibling folder, then swaps the folders, keeping the old store as ``PATH.schema1`` until the user removes
it: nothing already written is lost if the conversion is interrupted.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
import zarr

from zoo.datasets import load_recorded
from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.store._group import DIVERGED, PENDING, location, path_exists, store_for
from zoo.store.reader import Zoo
from zoo.store.reader import open as open_zoo
from zoo.store.writer import create


def _read_v1(path: str) -> tuple[zarr.Group, dict]:
    if not path_exists(path):
        raise ZooError(f"no zoo at {path!r}: the path does not exist")
    try:
        group = zarr.open_group(store=store_for(path, read_only=True), mode="r")
        meta = dict(group.attrs["wszoo"])
    except Exception as e:
        raise ZooError(f"{path!r} is not a readable zoo ({e.__class__.__name__}: {e})") from None
    if meta.get("schema_version") != 1:
        raise ZooError(f"{path!r} has schema version {meta.get('schema_version')}; only schema 1 needs upgrading")
    if not meta.get("initialized"):
        raise ZooError(f"{path!r} is a schema-1 zoo whose creation was interrupted: nothing to convert")
    return group, meta


def _datasets(meta: Mapping) -> list:
    seed = int(((meta.get("config") or {}).get("recipe") or {}).get("task_seed", 0))
    out = []
    for name, fingerprint in (meta.get("datasets") or {}).items():
        out.append(load_recorded(name, seed, fingerprint))
    return out


def upgrade(path: str) -> Zoo:
    """Convert the schema-1 zoo at ``path`` in place (the old store is kept as ``path + '.schema1'``)."""
    path = str(path).rstrip("/")
    group, meta = _read_v1(path)
    models = pd.DataFrame(meta["models"])
    layouts = {k: Layout.from_json(v) for k, v in meta["layouts"].items()}
    attrs = {k: meta[k] for k in ("config", "config_hash", "versions") if k in meta}
    attrs["producer"] = "zoo upgrade (from schema 1)"
    tmp, old = path + ".upgrading", path + ".schema1"
    if path_exists(old):
        raise ZooError(f"{old!r} exists (an earlier upgrade's backup); move it away first")
    writer = create(
        tmp,
        models,
        layouts,
        meta["checkpoint_epochs"],
        meta["metric_names"],
        attrs=attrs,
        datasets=_datasets(meta),
        overwrite=True,
    )
    state = np.asarray(group["models/state"][:])
    metrics = np.asarray(group["metrics/values"][:])
    for key in layouts:
        ids = models.index[(models["layout"] == key) & (state[:, 0] != PENDING)].to_numpy()
        rows = models.loc[ids, "row"].to_numpy()
        for lo in range(0, len(ids), writer.block_size):
            sel, r = ids[lo : lo + writer.block_size], rows[lo : lo + writer.block_size]
            weights = np.asarray(group[f"layouts/{key}/weights"].oindex[r, :, :])
            codes = ["diverged" if s == DIVERGED else "done" for s in state[sel, 0]]
            writer.write(sel.tolist(), weights, metrics[sel], status=codes, last_checkpoint=state[sel, 1].tolist())
    for key in layouts:
        if f"layouts/{key}/canonical" in group:
            ids = models.index[models["layout"] == key].to_numpy()
            canonical = np.asarray(group[f"layouts/{key}/canonical"].oindex[models.loc[ids, "row"].to_numpy(), :, :])
            writer.write_canonical(ids.tolist(), torch.from_numpy(canonical))
    if "tables" in group:
        for name in group["tables"].group_keys():
            writer.write_table_json(name, group[f"tables/{name}"].attrs["table"])
    fs, root = location(path)
    fs.mv(root, location(old)[1], recursive=True)
    fs.mv(location(tmp)[1], root, recursive=True)
    return open_zoo(path)
