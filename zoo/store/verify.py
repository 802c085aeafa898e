"""``zoo verify PATH [--repair]``: check every committed model's stored data; optionally mark damage for rebuild.

Each block of a layout (see zoo.store.writer) is checked as a whole: its state chunk, its metrics chunk (which
the writer always writes, so a missing one is damage) and every committed model's weights at every
checkpoint it is committed for (checksums verified on read; NaN where data was committed is damage).
``--repair`` works at the smallest unit the writer can rewrite: where only some models' weight chunks are damaged
(a flipped bit, a hole) and the block's state and metrics chunks read back, only those models are reset to pending
(their chunks rewritten empty; the shard's other chunks are kept as they are); a damaged state or metrics chunk, or
a shard whose index cannot be read, takes the whole block (its weights shard and metrics chunk deleted). The next
``zoo build`` with the same config retrains exactly the pending models, bit-identical to before; other kinds of
zoo are restored by the command that made them (:func:`restore_advice`).
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
    damaged: list[int] | None = None  # the models whose weights alone are damaged; None: the whole block


def _chunk_exists(z: Zoo, array: str, block: int, ndim: int) -> bool:
    fs, root = location(z.path)
    return fs.exists("/".join([root.rstrip("/"), array, "c", str(block), *("0" * (ndim - 1))]))


def _damaged_rows(z: Zoo, key: str, rows: np.ndarray, upto: np.ndarray) -> list[int] | None:
    """The committed rows whose weight chunks do not read back (one row at a time: zarr reads only that row's chunks
    of the shard) or hold NaN where committed; None when no row reads (the shard or its index is gone)."""
    array = z._group[f"layouts/{key}/weights"]
    bad, read = [], 0
    for r, u in zip(rows, upto):
        try:
            w = np.asarray(array[int(r)])
            read += 1
        except Exception:  # a corrupt or missing chunk of this row: zarr names no row, so read each alone
            bad.append(int(r))
            continue
        if np.isnan(w[: int(u) + 1]).any():
            bad.append(int(r))
    return bad if read else None


def _check_block(z: Zoo, key: str, block: int) -> tuple[list[str], list[int] | None]:
    """Problems of one block, read through zarr (every checksum verified), and the damaged rows when the damage is
    in some models' weights only (None: the block as a whole)."""
    problems = _block_problems(z, key, block)
    if not problems or not all(p.startswith("weights") for p in problems):  # state or metrics: the block's own
        return problems, None
    lo, hi = block * z.block_size, (block + 1) * z.block_size
    state = np.asarray(z._group[f"layouts/{key}/state"][lo:hi])
    committed = np.nonzero(state[:, 0] != PENDING)[0]
    rows = _damaged_rows(z, key, lo + committed, state[committed, 1])
    return problems, (rows if rows else None)


def _block_problems(z: Zoo, key: str, block: int) -> list[str]:
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
            problems, bad_rows = _check_block(z, key, block)
            if problems:
                damaged = None if bad_rows is None else sorted(int(i) for i in ids[np.isin(rows[ids], bad_rows)])
                reports.append(BlockReport(key, block, sorted(int(i) for i in members), problems, damaged))
    return reports


def repair(z: Zoo, reports: list[BlockReport]) -> int:
    """Mark damaged models pending, returning how many: only the models named in ``damaged`` where a report has
    them (their chunks rewritten empty), else the whole block (its weights shard and metrics chunk deleted)."""
    writer = open_writer(z.path)
    keys, rows = z._where
    reset = 0
    for r in reports:
        if r.damaged is not None:
            try:
                reset += len(writer.mark_rows_pending(r.layout, [int(rows[i]) for i in r.damaged]))
                continue
            except Exception:  # the shard cannot be rewritten around the damage: the block goes as a whole
                pass
        reset += len(writer.mark_pending(r.layout, r.block))
    return reset


def restore_advice(z: Zoo) -> str:
    """How the models a repair marked pending come back, by the kind of zoo (the provenance its writer recorded)."""
    a, path = z.attrs, z.path
    if isinstance(a.get("imported_from"), dict):  # first: an import keeps the provenance of what it imported
        return f"import it again: zoo import {a['imported_from'].get('path', 'SOURCE')} --out {path} --overwrite"
    if isinstance(a.get("generator"), dict):
        g = a["generator"]
        cond = f" --condition {g['condition']}" if g.get("condition") is not None else ""
        return (
            f"sample it again with its recorded run and seed: zoo sample {g.get('run')} -n {len(z)} --seed "
            f"{g.get('seed')}{cond} --out {path} --overwrite"
        )
    if isinstance(a.get("nowcast"), dict):
        n = a["nowcast"]
        return f"nowcast it again: zoo nowcast {n.get('run')} --zoo {n.get('source_zoo')} --out {path} --overwrite"
    if a.get("producer") == "zoo lcsc":
        return f"run the same `zoo lcsc SOURCE --out {path} --overwrite` again (settings in the zoo's attrs 'lcsc')"
    return f"run the same `zoo build` again (out={path}) to retrain them"
