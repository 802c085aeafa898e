"""The models table as columnar Zarr arrays: one 1-D array per column, read in bulk without any weights.

Numbers and booleans are stored as they are; anything else (strings, lists, None, mixed values) as
int32 codes into a list of JSON-encoded categories kept in the column's attributes, so a 100,000-row
table is a few small files and any column a producer of weights cares to record (a sample's generator,
seed and condition; an imported model's source file) round-trips exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo.errors import ZooError

if TYPE_CHECKING:  # imported where used: reading a local zoo's table (zoo info) needs neither
    import pandas as pd
    import zarr

ROW_CHUNK = 1 << 20  # rows per chunk: one file per column up to a million models
# names zarr keeps for its own metadata: a node called so would overwrite or shadow its parent's
ZARR_OWN_NAMES = frozenset({"zarr.json", ".zgroup", ".zarray", ".zattrs", ".zmetadata"})


def check_node_name(name: Any, what: str) -> None:
    """Refuse a name that becomes a store path (a column, table or layout key) but is not one plain path segment:
    empty, with '/' or '\\', '.' or '..', a leading '__' (zarr's reserved prefix) or one of zarr's own files."""
    ok = (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(ch in name for ch in "/\\\x00")
        and not name.startswith("__")
        and name not in ZARR_OWN_NAMES
    )
    if not ok:
        raise ZooError(
            f"{what} {name!r} cannot name a part of the store (one path segment: no '/', '..', leading '__' "
            "or zarr's own file names); rename it"
        )


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars unwrapped and non-finite floats as None: JSON has no NaN, and bare NaN
    would make a zarr.json unreadable to other tools."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [json_safe(x) for x in value]
    if isinstance(value, dict):
        return {str(k): json_safe(x) for k, x in value.items()}
    return value


def _encode(values: pd.Series) -> tuple[np.ndarray, dict]:
    """(array, attributes) for one column."""
    kind = values.dtype.kind
    if kind in "iu":
        return values.to_numpy(np.int64), {"encoding": "int"}
    if kind == "f":
        return values.to_numpy(np.float64), {"encoding": "float"}
    if kind == "b":
        return values.to_numpy(bool), {"encoding": "bool"}
    texts = [json.dumps(json_safe(v), sort_keys=True) for v in values.tolist()]
    categories = sorted(set(texts))
    index = {c: i for i, c in enumerate(categories)}
    return np.asarray([index[t] for t in texts], dtype=np.int32), {"encoding": "json", "categories": categories}


def _decode(data: np.ndarray, attrs: dict) -> list | np.ndarray:
    if attrs.get("encoding") == "json":
        decoded = [json.loads(c) for c in attrs["categories"]]
        return [decoded[int(i)] for i in data]
    return data


def write_table(group: zarr.Group, df: pd.DataFrame) -> None:
    """Write ``df``'s columns as arrays of ``group`` (column order kept in the group's attributes)."""
    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names):
        raise ZooError(f"models table has repeated column names: {names}")
    for name in names:
        check_node_name(name, "models table column")
    n = len(df)
    for name, col in zip(names, df.columns):
        data, attrs = _encode(df[col])
        array = group.create_array(
            name, shape=(n,), dtype=data.dtype, chunks=(max(1, min(n, ROW_CHUNK)),), fill_value=0
        )
        if n:
            array[:] = data
        array.attrs.update(attrs)
    group.attrs["columns"] = names


def read_columns(group: Any, where: str, only: Sequence[str] | None = None) -> dict[str, list | np.ndarray]:
    """Every column written by :func:`write_table` (or ``only`` these), decoded, by name; a missing or corrupt
    column is a ZooError. ``group`` is a zarr group or a :class:`zoo.store.localread.LocalGroup`."""
    columns = {}
    for name in group.attrs.get("columns", []) if only is None else only:
        try:
            array = group[name]
            columns[name] = _decode(np.asarray(array[:]), dict(array.attrs))
        except Exception as e:
            raise ZooError(
                f"column {name!r} of the models table of {where!r} is missing or corrupt ({e.__class__.__name__}: {e})"
            ) from None
    return columns


def read_table(group: zarr.Group, where: str, only: Sequence[str] | None = None) -> pd.DataFrame:
    """Every column written by :func:`write_table` as a DataFrame; a missing or corrupt column is a ZooError."""
    import pandas as pd

    return pd.DataFrame(read_columns(group, where, only))
