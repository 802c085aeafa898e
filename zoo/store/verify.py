"""``zoo verify PATH [--repair]``: check every committed model's stored data; optionally mark damage for rebuild.

Each block of a layout (see zoo.store.writer) is checked as a whole: its state chunk, its metrics chunk (which
the writer always writes, so a missing one is damage) and every committed model's weights at every
checkpoint it is committed for (checksums verified on read; NaN where data was committed is damage).
``--repair`` deletes the damaged block's weights shard and metrics chunk and marks its models pending, so
the next ``zoo build`` with the same config retrains exactly those models, bit-identical to before (the
block's other models go with it: they share the shard, which cannot be rewritten without reading it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from zoo.store._group import PENDING, location
from zoo.store.reader import Zoo
from zoo.store.writer import open_writer


@dataclass
class BlockReport:
    """Damage found in one block of one layout."""

    layout: str
    block: int
    model_ids: list[int]
    problems: list[str] = field(default_factory=list)


def _chunk_exists(z: Zoo, array: str, block: int, ndim: int) -> bool:
    fs, root = location(z.path)
    return fs.exists("/".join([root.rstrip("/"), array, "c", str(block), *("0" * (ndim - 1))]))


def _check_block(z: Zoo, key: str, block: int) -> list[str]:
    """Problems of one block, read through zarr (every checksum verified)."""
    lo, hi = block * z.block_size, (block + 1) * z.block_size  # zarr clips the last block
    problems: list[str] = []
    try:
        state = np.asarray(z._group[f"layouts/{key}/state"][lo:hi])
    except Exception as e:
        return [f"state chunk unreadable ({e.__class__.__name__})"]
    committed = state[:, 0] != PENDING
    # a block with nothing committed may still hold chunks of an interrupted write: they must read back too,
    # since resuming rewrites them (read-modify-write) and the models table reads every metrics chunk
    has_metrics = bool(z.metric_names)  # a zoo without metrics (an import without metrics.csv) has no chunks
    if committed.any() and has_metrics and not _chunk_exists(z, f"layouts/{key}/metrics", block, 3):
        problems.append("metrics chunk missing")
    else:
        try:
            np.asarray(z._group[f"layouts/{key}/metrics"][lo:hi])
        except Exception as e:
            problems.append(f"metrics chunk corrupt ({e.__class__.__name__})")
    try:
        weights = np.asarray(z._group[f"layouts/{key}/weights"][lo:hi])
    except Exception as e:
        return problems + [f"weights shard corrupt or missing ({e.__class__.__name__})"]
    upto = np.arange(weights.shape[1])[None, :] <= state[:, 1][:, None]
    holes = np.isnan(weights).any(axis=2) & upto & committed[:, None]
    for r in np.nonzero(holes.any(axis=1))[0]:
        problems.append(f"weights of row {lo + int(r)} missing at checkpoints {np.nonzero(holes[r])[0].tolist()}")
    return problems


def verify(z: Zoo) -> list[BlockReport]:
    """Every damaged block of the zoo (empty when all committed data reads back intact)."""
    keys, rows = z._where
    reports = []
    for key in z.layouts:
        ids = np.nonzero(keys == key)[0]
        if not len(ids):
            continue
        for block in range(int(rows[ids].max()) // z.block_size + 1):
            members = ids[rows[ids] // z.block_size == block]
            problems = _check_block(z, key, block)
            if problems:
                reports.append(BlockReport(key, block, sorted(int(i) for i in members), problems))
    return reports


def repair(z: Zoo, reports: list[BlockReport]) -> int:
    """Delete each damaged block's weights shard and metrics chunk and mark its models pending; returns models reset."""
    writer = open_writer(z.path)
    return sum(len(writer.mark_pending(r.layout, r.block)) for r in reports)
