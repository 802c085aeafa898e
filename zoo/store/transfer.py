"""Import and export: move zoos in and out of wszoo without pickles.

Export format (``zoo export ZOO DIR``), a folder a person or another library can read with ``json`` and
``safetensors`` alone:
  DIR/zoo.json        format name and version, checkpoint epochs, metric names, layouts (``Layout.to_json``),
                      architecture specs per layout, the models table (every column, final metrics, status,
                      last checkpoint; column types kept), the datasets and provenance attributes, extra tables
                      (e.g. landscape), and the file of each model
  DIR/models/<id>.safetensors   one file per model that has weights (pending models have none):
                      ``"<c>/<name>"``  the state-dict tensor ``name`` at checkpoint index ``c`` (an index into
                                    ``checkpoint_epochs``), in its own dtype, for every valid checkpoint
                                    ``c <= last_checkpoint``; loadable with ``module.load_state_dict``
                      ``"invalid/<c>"`` the flat float32 vector of a checkpoint after ``last_checkpoint``, only
                                    when it is not all NaN (so a roundtrip is bit for bit)
                      ``"metrics"``  float64 [C, K]: every metric at every checkpoint
                      metadata: model id, layout key, status, last checkpoint
Import (``zoo import DIR --out NEW.zarr``) reads that back bit for bit through :func:`zoo.writer.create`,
and also reads the field's flat format (the Small CNN Zoo style):
  DIR/weights.npy     float [N, P], one flat vector per model (loaded with ``allow_pickle=False``)
  DIR/layout.csv      one row per state-dict tensor: ``name`` (or ``varname``), ``offset`` (or ``start_idx``),
                      ``shape`` ("16x64", "(16, 64)" or "[16, 64]"; empty for a scalar); it must equal the
                      layout derived from the architecture spec (names, order, offsets, shapes)
  DIR/metrics.csv     optional: one row per model, its hyperparameters and metrics (``train_loss``,
                      ``train_acc``/``train_accuracy``, ``test_loss``, ``test_acc``/``test_accuracy``, ... become
                      the zoo's metrics; an optional ``status`` column says done/diverged)
  DIR/arch.json       the architecture spec (``zoo.arch.arch_spec`` keys), unless given as an argument
Nothing is ever unpickled: safetensors, ``np.load(allow_pickle=False)``, json and csv only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from zoo.app.memory import available_memory
from zoo.arch import arch_spec, build_model
from zoo.datasets import ALL_METRICS, load_dataset, locate
from zoo.errors import ZooError
from zoo.layout import Layout, layout_of
from zoo.store._group import existing_meta
from zoo.store.columns import check_node_name
from zoo.store.reader import Zoo
from zoo.store.reader import open as open_zoo
from zoo.store.writer import DEFAULT_BLOCK_SIZE, check_zoo_shape, create, staged
from zoo.store.writer import RESERVED as STORE_KEYS  # attributes the writer sets itself; everything else is provenance

FORMAT = "wszoo-export"
FORMAT_VERSION = 1
BATCH = 256  # models read or written per call
METRIC_ALIASES = {"train_accuracy": "train_acc", "test_accuracy": "test_acc"}  # Small CNN Zoo names
RESERVED_COLUMNS = ("model_id", "layout", "row", "last_checkpoint")


# ---------------------------------------------------------------------------------------------- helpers
def _json_value(v: Any) -> Any:
    """A JSON-safe copy of one value: numpy scalars unwrapped, tuples as lists, non-finite floats as None."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_json_value(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _json_value(x) for k, x in v.items()}
    return v


def _float_json(x: float) -> float | str:
    """A float that JSON can hold exactly: finite floats as they are (Python prints them round-trip exact)."""
    return x if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))


def encode_table(df: pd.DataFrame) -> dict:
    """A DataFrame as JSON that restores every column's type and value exactly (int, float, bool or JSON)."""
    columns = []
    for name in df.columns:
        s = df[name]
        kind = s.dtype.kind
        if kind in "iu":
            columns.append({"name": str(name), "type": "int", "values": [int(v) for v in s.to_numpy()]})
        elif kind == "f":
            columns.append(
                {"name": str(name), "type": "float", "values": [_float_json(float(v)) for v in s.to_numpy()]}
            )
        elif kind == "b":
            columns.append({"name": str(name), "type": "bool", "values": [bool(v) for v in s.to_numpy()]})
        else:
            columns.append({"name": str(name), "type": "json", "values": [_json_value(v) for v in s.tolist()]})
    return {"num_rows": int(len(df)), "columns": columns}


def decode_table(payload: Mapping, where: str) -> pd.DataFrame:
    """Inverse of :func:`encode_table`; a malformed payload is a one-line ZooError naming ``where``."""
    try:
        n = int(payload["num_rows"])
        data: dict[str, pd.Series] = {}
        for col in payload["columns"]:
            name, kind, values = str(col["name"]), col["type"], list(col["values"])
            if len(values) != n:
                raise ValueError(f"column {name!r} has {len(values)} values for {n} rows")
            if kind == "int":
                data[name] = pd.Series(np.asarray(values, dtype=np.int64))
            elif kind == "float":
                data[name] = pd.Series(np.asarray([float(v) for v in values], dtype=np.float64))
            elif kind == "bool":
                data[name] = pd.Series(np.asarray(values, dtype=bool))
            elif kind == "json":
                data[name] = pd.Series(values, dtype=object)
            else:
                raise ValueError(f"column {name!r} has unknown type {kind!r}")
        return pd.DataFrame(data, index=pd.RangeIndex(n))
    except (KeyError, TypeError, ValueError) as e:
        raise ZooError(f"{where}: a table is malformed ({e.__class__.__name__}: {e})") from None


def _model_file(model_id: int, width: int) -> str:
    return f"models/{model_id:0{width}d}.safetensors"


def _table_names(z) -> list[str]:
    """Names of the extra tables (landscape, alignment, ...) a zoo holds."""
    group = z._group  # the store keeps tables as child groups; Zoo.table reads one by name
    return sorted(group["tables"].group_keys()) if "tables" in group else []


# ---------------------------------------------------------------------------------------------- export
def export_zoo(source: Zoo | str | os.PathLike, out_dir: str | Path) -> Path:
    """Write a zoo (a path or an open Zoo) as ``zoo.json`` + one safetensors file per model into ``out_dir``.

    ``out_dir`` must not exist or be empty, so an export never mixes with other files.
    """
    from safetensors.torch import save_file

    z = source if isinstance(source, Zoo) else open_zoo(str(source))
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ZooError(f"{str(out)!r} exists and is not an empty folder; choose another export folder")
    models = z.models
    n, checkpoints, metric_names = len(models), z.checkpoint_epochs, z.metric_names
    c, k = len(checkpoints), len(metric_names)
    values = z.metrics.sort_values(["model_id", "checkpoint"])[metric_names].to_numpy(np.float64)
    values = values.reshape(n, c, k)
    layouts = z.layouts
    width = max(6, len(str(max(n - 1, 0))))
    (out / "models").mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    status = models["status"].to_numpy()
    last = models["last_checkpoint"].to_numpy().astype(np.int64)
    for key, layout in layouts.items():
        ids = np.nonzero((models["layout"].to_numpy() == key) & (status != "pending"))[0]
        for start in range(0, len(ids), BATCH):
            batch = [int(i) for i in ids[start : start + BATCH]]
            weights = z.weights(batch, checkpoint=None)  # [n, C, P]
            for j, model_id in enumerate(batch):
                tensors = _model_tensors(layout, weights[j], int(last[model_id]), model_id)
                tensors["metrics"] = torch.from_numpy(np.ascontiguousarray(values[model_id]))
                rel = _model_file(model_id, width)
                meta = {
                    "format": FORMAT,
                    "model_id": str(model_id),
                    "layout": key,
                    "status": str(status[model_id]),
                    "last_checkpoint": str(int(last[model_id])),
                    "checkpoint_epochs": json.dumps(checkpoints),
                }
                save_file(tensors, str(out / rel), metadata=meta)
                files[str(model_id)] = rel
    attrs = {k_: v for k_, v in z.attrs.items() if k_ not in STORE_KEYS and k_ != "models"}
    tables = {}
    for name in _table_names(z):
        tables[name] = encode_table(z.table(name))
    derived = ["status", "last_checkpoint", *[m for m in metric_names if m in models.columns]]
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "checkpoint_epochs": [int(e) for e in checkpoints],
        "metric_names": list(metric_names),
        "layouts": {key: layout.to_json() for key, layout in layouts.items()},
        "architectures": {key: dict(layout.arch) for key, layout in layouts.items()},
        "models": encode_table(models),
        "derived_columns": derived,
        "files": files,
        "datasets": _json_value(dict(z.attrs.get("datasets") or {})),
        "block_size": z.attrs.get("block_size"),  # the store's unit of writing, kept so the import is laid out alike
        "attrs": _json_value(attrs),
        "tables": tables,
    }
    (out / "zoo.json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return out


def _model_tensors(layout: Layout, trajectory: torch.Tensor, last: int, model_id: int) -> dict[str, torch.Tensor]:
    """The safetensors payload of one model: state dicts at valid checkpoints, raw vectors of invalid ones."""
    tensors: dict[str, torch.Tensor] = {}
    if last >= 0:
        valid = trajectory[: last + 1]
        states = layout.unflatten_batch(valid)
        if not torch.equal(layout.flatten_batch(states).view(torch.int32), valid.view(torch.int32)):
            raise ZooError(
                f"model {model_id} holds values its layout's dtypes cannot represent exactly;"
                " it cannot be exported as state dicts"
            )
        for name, t in states.items():
            for ci in range(last + 1):
                tensors[f"{ci}/{name}"] = t[ci].clone().contiguous()
    for ci in range(last + 1, trajectory.shape[0]):
        if not torch.isnan(trajectory[ci]).all():
            tensors[f"invalid/{ci}"] = trajectory[ci].clone().contiguous()
    return tensors


# ---------------------------------------------------------------------------------------------- import
def import_zoo(
    src_dir: str | Path,
    out: str,
    arch: Mapping | None = None,
    epoch: int = 0,
    metric_names: Sequence[str] | None = None,
    dataset: str | None = None,
    datasets: bool = True,
    overwrite: bool = False,
) -> Zoo:
    """Import a folder into a new zoo at ``out``: an export (``zoo.json``) or the flat format (``weights.npy``).

    ``arch``, ``epoch``, ``metric_names`` and ``dataset`` apply to the flat format only (see the module
    docstring); ``datasets=False`` imports an export without reattaching the datasets its zoo records.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise ZooError(f"no folder to import at {str(src)!r}")
    if (src / "zoo.json").is_file():
        return import_export(src, out, datasets=datasets, overwrite=overwrite)
    if (src / "weights.npy").is_file():
        return import_flat(
            src, out, arch=arch, epoch=epoch, metric_names=metric_names, dataset=dataset, overwrite=overwrite
        )
    raise ZooError(f"{str(src)!r} holds neither zoo.json (a wszoo export) nor weights.npy (the flat format)")


def check_destination(out: str, overwrite: bool) -> None:
    """Refuse to import over an existing zoo (or foreign files) before any work is done."""
    if existing_meta(str(out)) is not None and not overwrite:
        raise ZooError(f"{str(out)!r} already holds a zoo; pass --overwrite (overwrite=True) to replace it")


def read_json(path: Path) -> Any:
    """A JSON file's content; unreadable or malformed files are one-line ZooErrors."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ZooError(f"{str(path)!r} is not readable JSON ({e.__class__.__name__}: {e})") from None
    except RecursionError:
        raise ZooError(f"{str(path)!r} is nested too deeply to be a wszoo file") from None


def _load_datasets(records: Mapping, where: str) -> list:
    """The datasets an export records, reloaded and checked against their fingerprints."""
    out = []
    for name, record in records.items():
        try:
            data = load_dataset(locate(name), seed=int(record.get("seed", 0)))
        except ZooError as e:
            raise ZooError(
                f"{where} records dataset {name!r}, which cannot be loaded here ({e}); import with"
                " --no-datasets to leave it out"
            ) from None
        if data.fingerprint != record.get("fingerprint"):
            raise ZooError(
                f"{where} records dataset {name!r}, but the data here differs (fingerprint mismatch);"
                " import with --no-datasets to leave it out"
            )
        out.append(dataclasses.replace(data, location=name) if data.location != name else data)
    return out


def import_export(src_dir: str | Path, out: str, datasets: bool = True, overwrite: bool = False) -> Zoo:
    """Read a ``zoo export`` folder back into a new zoo, bit for bit, through the writer API."""
    from safetensors import SafetensorError, safe_open

    src = Path(src_dir)
    check_destination(out, overwrite)
    where = str(src / "zoo.json")
    doc = read_json(src / "zoo.json")
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
        raise ZooError(f"{where} is not a wszoo export (its format is not {FORMAT!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ZooError(
            f"{where} has export format version {doc.get('format_version')}; this wszoo reads version {FORMAT_VERSION}"
        )
    try:
        checkpoints = [int(e) for e in doc["checkpoint_epochs"]]
        metric_names = [str(m) for m in doc["metric_names"]]
        layouts = {str(k): Layout.from_json(v) for k, v in doc["layouts"].items()}
        files = {int(i): str(p) for i, p in doc["files"].items()}
        derived = [str(c) for c in doc["derived_columns"]]
        attrs = dict(doc.get("attrs") or {})
        records = dict(doc.get("datasets") or {})
        tables = dict(doc.get("tables") or {})
        block = {} if doc.get("block_size") is None else {"block_size": int(doc["block_size"])}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ZooError(f"{where} is malformed ({e.__class__.__name__}: {e})") from None
    models = decode_table(doc.get("models") or {}, where)
    for col in ("status", "last_checkpoint", "layout"):
        if col not in models:
            raise ZooError(f"{where}: the models table has no {col!r} column")
    n, c, k = len(models), len(checkpoints), len(metric_names)
    status = models["status"].astype(str).to_numpy()
    last = models["last_checkpoint"].to_numpy().astype(np.int64)
    bad = sorted(set(status) - {"done", "diverged", "pending"})
    if bad:
        raise ZooError(f"{where}: unknown model status {bad}")
    missing = [i for i in range(n) if status[i] != "pending" and i not in files]
    if missing:
        raise ZooError(f"{where}: models {missing[:5]} have weights but no file listed")
    table = models.drop(columns=[col for col in derived if col in models])
    _check_import_limits(where, table, layouts, checkpoints, metric_names, block, last, status, tables)
    loaded = _load_datasets(records, where) if datasets else []
    if not datasets:
        attrs["datasets_left_out"] = records
    # the source's provenance stays as it was; this records that the zoo is an import, so `zoo verify --repair`
    # advises importing it again (a `zoo build` or `zoo sample` would not make these models)
    attrs["imported_from"] = {"format": "export", "path": str(src.resolve())}
    with staged(out, "zoo import", overwrite) as partial:  # one writer; a failure leaves --out as it was
        w = create(
            partial, table, layouts, checkpoints, metric_names, attrs=attrs, datasets=loaded, overwrite=True, **block
        )
        layout_of_model = models["layout"].astype(str).to_numpy()
        for key, layout in layouts.items():
            ids = np.nonzero((layout_of_model == key) & (status != "pending"))[0]
            for start in range(0, len(ids), BATCH):
                batch = [int(i) for i in ids[start : start + BATCH]]
                weights = np.full((len(batch), c, layout.size), np.nan, dtype=np.float32)
                metrics = np.full((len(batch), c, k), np.nan, dtype=np.float64)
                for j, model_id in enumerate(batch):
                    path = _inside(src, files[model_id], where)
                    try:
                        with safe_open(str(path), framework="pt") as f:
                            _check_meta(f.metadata() or {}, model_id, key, path)
                            weights[j], metrics[j] = _read_model(f, layout, int(last[model_id]), c, k, path)
                    except SafetensorError as e:
                        raise ZooError(f"{str(path)!r} is not a readable safetensors file ({e})") from None
                    except OSError as e:
                        raise ZooError(f"cannot read {str(path)!r} ({e.__class__.__name__}: {e})") from None
                w.write(
                    batch,
                    weights,
                    metrics,
                    status=[str(status[i]) for i in batch],
                    last_checkpoint=[int(last[i]) for i in batch],
                )
        for name, payload in tables.items():
            w.write_table(str(name), decode_table(payload, f"{where} table {name!r}"))
    return open_zoo(out)


def _check_import_limits(
    where: str,
    table: pd.DataFrame,
    layouts: Mapping[str, Layout],
    checkpoints: list[int],
    metric_names: list[str],
    block: Mapping[str, int],
    last: np.ndarray,
    status: np.ndarray,
    tables: Mapping,
) -> None:
    """Every number and name of an export checked before the import allocates or writes anything: the zoo's shape
    (:func:`zoo.store.writer.check_zoo_shape`), names that become store paths, each model's last checkpoint, and
    the batch of models read at once against the memory available now."""
    try:
        check_zoo_shape(layouts, checkpoints, metric_names, int(block.get("block_size", DEFAULT_BLOCK_SIZE)))
        for col in table.columns:
            check_node_name(str(col), "models table column")
        for name in tables:
            check_node_name(str(name), "table name")
    except ZooError as e:
        raise ZooError(f"{where}: {e}") from None
    stored = status != "pending"
    outside = np.nonzero(stored & ((last < -1) | (last >= len(checkpoints))))[0]
    if len(outside):
        i = int(outside[0])
        raise ZooError(f"{where}: model {i} has last_checkpoint {int(last[i])}, outside -1..{len(checkpoints) - 1}")
    size = max((layout.size for layout in layouts.values()), default=0)
    batch = min(BATCH, int(stored.sum()))
    need, avail = batch * len(checkpoints) * (size * 4 + len(metric_names) * 8), available_memory()
    if avail is not None and need > avail:
        raise ZooError(
            f"{where}: reading {batch} models of {len(checkpoints)} checkpoints x {size} parameters at once needs "
            f"{need / 1e9:.3g} GB; {avail / 1e9:.3g} GB of memory is available"
        )


def _inside(root: Path, rel: str, where: str) -> Path:
    """``root / rel``, refusing paths that leave the export folder."""
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ZooError(f"{where} lists a model file outside the export folder: {rel!r}")
    if not path.is_file():
        raise ZooError(f"model file {str(root / rel)!r} listed in {where} is missing")
    return path


def _check_meta(meta: Mapping[str, str], model_id: int, key: str, path: Path) -> None:
    if meta.get("format") != FORMAT or meta.get("model_id") != str(model_id) or meta.get("layout") != key:
        raise ZooError(
            f"{str(path)!r} does not hold model {model_id} of layout {key} (its metadata says model"
            f" {meta.get('model_id')!r} of layout {meta.get('layout')!r})"
        )


def _read_model(f, layout: Layout, last: int, c: int, k: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """([C, P] float32, [C, K] float64) of one model file; names and shapes checked against the layout."""
    names = set(f.keys())
    expected = {f"{ci}/{e.name}" for ci in range(last + 1) for e in layout.entries} | {"metrics"}
    missing = sorted(expected - names)
    extra = sorted(n for n in names - expected if not n.startswith("invalid/"))
    if missing or extra:
        raise ZooError(f"{str(path)!r} does not match its layout: missing {missing[:3]}, unexpected {extra[:3]}")
    weights = np.full((c, layout.size), np.nan, dtype=np.float32)
    if last >= 0:
        states = {}
        for e in layout.entries:
            tensors = [f.get_tensor(f"{ci}/{e.name}") for ci in range(last + 1)]
            for ci, t in enumerate(tensors):
                if tuple(t.shape) != e.shape or str(t.dtype).removeprefix("torch.") != e.dtype:
                    raise ZooError(
                        f"{str(path)!r}: tensor '{ci}/{e.name}' is {list(t.shape)} {t.dtype}, its layout"
                        f" says {list(e.shape)} {e.dtype}"
                    )
            states[e.name] = torch.stack(tensors)
        weights[: last + 1] = layout.flatten_batch(states).numpy()
    for name in names:
        if name.startswith("invalid/"):
            ci = int(name.split("/", 1)[1]) if name.split("/", 1)[1].isdigit() else -1
            t = f.get_tensor(name)
            if not last < ci < c or tuple(t.shape) != (layout.size,) or t.dtype != torch.float32:
                raise ZooError(
                    f"{str(path)!r}: tensor {name!r} does not fit checkpoints {last + 1}..{c - 1}"
                    f" of [{layout.size}] float32"
                )
            weights[ci] = t.numpy()
    metrics = f.get_tensor("metrics")
    if tuple(metrics.shape) != (c, k) or metrics.dtype != torch.float64:
        raise ZooError(
            f"{str(path)!r}: metrics are {tuple(metrics.shape)} {metrics.dtype}, expected [{c}, {k}] float64"
        )
    return weights, metrics.numpy()


# ---------------------------------------------------------------------------------------------- flat format
def parse_arch(arguments: Sequence[str]) -> dict:
    """``["name=mlp", "input_shape=1,8,8", "width=16", ...]`` -> the spec of ``zoo.arch.arch_spec``."""
    kwargs: dict[str, Any] = {}
    for item in arguments:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ZooError(f"--arch takes KEY=VALUE items, got {item!r}")
        kwargs[key.strip()] = value.strip()
    try:
        if "input_shape" in kwargs:
            kwargs["input_shape"] = [
                int(s) for s in kwargs["input_shape"].strip("[]() ").replace("x", ",").split(",") if s.strip()
            ]
        for key in ("num_outputs", "width", "depth", "kernel_size"):
            if key in kwargs:
                kwargs[key] = int(kwargs[key])
        if "batchnorm" in kwargs:
            flag = kwargs["batchnorm"].lower()
            if flag not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"batchnorm must be true or false, got {kwargs['batchnorm']!r}")
            kwargs["batchnorm"] = flag in ("true", "1", "yes")
        return arch_spec(**kwargs)
    except TypeError as e:
        raise ZooError(
            f"--arch: {e} (keys: name, input_shape, num_outputs, width, depth, activation, batchnorm, kernel_size)"
        ) from None
    except ValueError as e:
        raise ZooError(f"--arch: {e}") from None


def _flat_arch(src: Path, arch: Mapping | None) -> dict:
    """The architecture spec: the one given, else ``arch.json`` beside the weights."""
    if arch is None:
        if not (src / "arch.json").is_file():
            raise ZooError(f"{str(src)!r} has no arch.json; give the architecture (--arch-file or --arch KEY=VALUE)")
        arch = read_json(src / "arch.json")
    if not isinstance(arch, Mapping):
        raise ZooError("the architecture spec must be a JSON object (zoo.arch.arch_spec keys)")
    return dict(arch)


def _parse_shape(text: Any, where: str) -> tuple[int, ...]:
    s = "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)
    s = s.strip().strip("[]()").replace("x", ",")
    try:
        return tuple(int(p) for p in s.split(",") if p.strip())
    except ValueError:
        raise ZooError(f"{where}: shape {text!r} is not a list of integers") from None


def read_layout_csv(path: Path) -> list[tuple[str, int, tuple[int, ...]]]:
    """(name, offset, shape) per row of a flat format's ``layout.csv``."""
    if not path.is_file():
        raise ZooError(f"missing {str(path)!r}: the flat format needs a layout.csv (name, offset, shape per tensor)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise ZooError(f"{str(path)!r} is not a readable CSV ({e.__class__.__name__}: {e})") from None
    cols = {c.strip().lower(): c for c in df.columns}
    name_col = cols.get("name") or cols.get("varname")
    offset_col = cols.get("offset") or cols.get("start_idx")
    shape_col = cols.get("shape")
    if not (name_col and offset_col and shape_col):
        raise ZooError(
            f"{str(path)!r} needs columns name (or varname), offset (or start_idx) and shape; it has {list(df.columns)}"
        )
    rows = []
    for i, r in df.iterrows():
        try:
            offset = int(r[offset_col])
        except ValueError:
            raise ZooError(f"{str(path)!r} row {i + 1}: offset {r[offset_col]!r} is not an integer") from None
        rows.append((str(r[name_col]).strip(), offset, _parse_shape(r[shape_col], f"{str(path)!r} row {i + 1}")))
    return rows


def check_layout_csv(rows: list[tuple[str, int, tuple[int, ...]]], layout: Layout, where: str) -> None:
    """One-line ZooError at the first tensor where ``layout.csv`` and the architecture's layout disagree."""
    if len(rows) != len(layout.entries):
        raise ZooError(
            f"{where} lists {len(rows)} tensors, the architecture has {len(layout.entries)} ({', '.join(layout.names)})"
        )
    for (name, offset, shape), e in zip(rows, layout.entries):
        if name != e.name:
            raise ZooError(f"{where}: tensor {name!r} where the architecture has {e.name!r} (at offset {e.offset})")
        if offset != e.offset:
            raise ZooError(f"{where}: tensor {name!r} at offset {offset}, the architecture puts it at {e.offset}")
        if shape != e.shape:
            raise ZooError(f"{where}: tensor {name!r} has shape {list(shape)}, the architecture's is {list(e.shape)}")


def load_flat_weights(path: Path) -> np.ndarray:
    """``weights.npy`` as float32 [N, P], refusing pickled (object) arrays and anything not 2-D float."""
    if not path.is_file():
        raise ZooError(f"missing {str(path)!r}: the flat format needs weights.npy [N, P]")
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as e:  # object arrays need pickle; np.load says so in a ValueError
        raise ZooError(f"{str(path)!r} cannot be loaded without unpickling or is not a .npy array ({e})") from None
    except OSError as e:
        raise ZooError(f"{str(path)!r} is not a readable .npy file ({e})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f" or array.ndim != 2:
        raise ZooError(
            f"{str(path)!r} holds {getattr(array, 'dtype', type(array))} of shape"
            f" {getattr(array, 'shape', '?')}; the flat format is float [N, P]"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def import_flat(
    src_dir: str | Path,
    out: str,
    arch: Mapping | None = None,
    epoch: int = 0,
    metric_names: Sequence[str] | None = None,
    dataset: str | None = None,
    overwrite: bool = False,
) -> Zoo:
    """Import the flat format (weights.npy, layout.csv, metrics.csv) of one architecture into a new zoo.

    The weights are the zoo's one checkpoint, recorded at ``epoch``; models with non-finite weights are
    imported as diverged (no valid checkpoint). ``dataset`` (a ``load_dataset`` name or .npz path) records
    the data the models were trained on, so ``Zoo.dataset()``, evaluation and landscape work on the import.
    """
    src = Path(src_dir)
    check_destination(out, overwrite)
    spec = _flat_arch(src, arch)
    layout = layout_of(build_model(spec), spec)
    data = [] if dataset is None else [load_dataset(dataset)]
    if data and (
        tuple(spec.get("input_shape", ())) != data[0].input_shape
        or int(spec.get("num_outputs", -1)) != data[0].num_outputs
    ):
        raise ZooError(
            f"dataset {dataset!r} has inputs {list(data[0].input_shape)} and {data[0].num_outputs}"
            f" outputs; the architecture has {spec.get('input_shape')} and {spec.get('num_outputs')}"
        )
    rows = read_layout_csv(src / "layout.csv")
    check_layout_csv(rows, layout, str(src / "layout.csv"))
    weights = load_flat_weights(src / "weights.npy")
    n = weights.shape[0]
    if weights.shape[1] != layout.size:
        raise ZooError(
            f"{str(src / 'weights.npy')!r} has {weights.shape[1]} parameters per model, the architecture"
            f" has {layout.size}"
        )
    table = _read_metrics_csv(src / "metrics.csv", n)
    names = _metric_columns(table, metric_names, str(src / "metrics.csv"))
    metrics = np.full((n, 1, len(names)), np.nan)
    for j, name in enumerate(names):
        try:
            metrics[:, 0, j] = pd.to_numeric(table[name]).to_numpy(np.float64)
        except (ValueError, TypeError):
            raise ZooError(f"{str(src / 'metrics.csv')!r}: metric column {name!r} is not numeric") from None
    finite = np.isfinite(weights).all(axis=1)
    if "status" in table:
        status = table["status"].astype(str).str.strip().to_numpy()
        bad = sorted(set(status) - {"done", "diverged"})
        if bad:
            raise ZooError(f"{str(src / 'metrics.csv')!r}: status must be done or diverged, got {bad}")
        broken = np.nonzero((status == "done") & ~finite)[0]
        if len(broken):
            raise ZooError(f"{str(src / 'weights.npy')!r}: model {int(broken[0])} is done but has NaN/inf weights")
    else:
        status = np.where(finite, "done", "diverged")
    last = np.where(finite, 0, -1)  # the one checkpoint is valid exactly when its weights are finite
    columns = table.drop(columns=[c for c in ["status", *names] if c in table])
    renamed = {c: METRIC_ALIASES.get(c, c) for c in names}
    columns.insert(0, "source_row", np.arange(n, dtype=np.int64))
    attrs = {
        "imported_from": {
            "format": "flat",
            "path": str(src.resolve()),
            "files": sorted(
                p.name for p in src.iterdir() if p.name in ("weights.npy", "layout.csv", "metrics.csv", "arch.json")
            ),
        }
    }
    key = layout.key()
    with staged(out, "zoo import", overwrite) as partial:  # one writer; a failure leaves --out as it was
        w = create(
            partial,
            columns,
            {key: layout},
            [int(epoch)],
            [renamed[c] for c in names],
            attrs=attrs,
            datasets=data,
            overwrite=True,
        )
        for start in range(0, n, BATCH):
            sl = slice(start, min(n, start + BATCH))
            w.write(
                list(range(sl.start, sl.stop)),
                weights[sl, None, :],
                metrics[sl],
                status=list(status[sl]),
                last_checkpoint=[int(x) for x in last[sl]],
            )
    return open_zoo(out)


def _read_metrics_csv(path: Path, n: int) -> pd.DataFrame:
    """The per-model table of a flat import (N rows), or an empty table when there is no metrics.csv."""
    if not path.is_file():
        return pd.DataFrame(index=pd.RangeIndex(n))
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise ZooError(f"{str(path)!r} is not a readable CSV ({e.__class__.__name__}: {e})") from None
    table = table.loc[:, [c for c in table.columns if not str(c).startswith("Unnamed: ")]]  # a saved index
    if len(table) != n:
        raise ZooError(f"{str(path)!r} has {len(table)} rows, weights.npy has {n} models")
    clash = [c for c in RESERVED_COLUMNS if c in table]
    if clash:
        raise ZooError(f"{str(path)!r}: columns {clash} are the zoo's own; rename them")
    return table.reset_index(drop=True)


def _metric_columns(table: pd.DataFrame, metric_names: Sequence[str] | None, where: str) -> list[str]:
    """The metrics.csv columns that become the zoo's metrics (given, or the known names present)."""
    if metric_names is not None:
        missing = [m for m in metric_names if m not in table]
        if missing:
            raise ZooError(f"{where} has no metric columns {missing}")
        names = list(metric_names)
    else:
        names = [c for c in table.columns if c in ALL_METRICS or c in METRIC_ALIASES]
    targets = [METRIC_ALIASES.get(c, c) for c in names]
    if len(set(targets)) != len(targets):
        raise ZooError(f"{where}: metric columns {names} name one metric twice (e.g. test_acc and test_accuracy)")
    return names
