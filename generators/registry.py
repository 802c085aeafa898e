"""Method name -> the class a run folder is rebuilt with (and the method's own fit, if it has one).

Invariants: this module knows no method. Each method package registers itself at the end of its
``__init__`` (``register(DeepWeightFlow)``); ``generators/__init__`` imports every method package, so any
``import generators...`` fills the registry before ``get``, ``names`` or ``load`` is called.

A run folder is ``config.json`` (``{"generator", "config", "source", "dims"}``) + ``model.safetensors``
(+ ``snapshots/step-*.safetensors``, raw weights along training): no pickle. A registered class is rebuilt
as ``cls(config, origin, dims)`` (``origin``: what the run knows of its training zoo) and then loads the
safetensors state dict. A run folder is written by one ``zoo fit`` at a time (:func:`owned_run`: the store's lock
``<run>.lock`` beside it) and holds an ``INCOMPLETE`` file from before its first write until its last file is in;
:func:`load` refuses a folder that still has it (a killed or failed fit). A method with its own fitting (KNOWN
meta-trains on trajectory windows) registers that ``fit(cfg)`` callable too;
``generators.fit`` hands a composed config to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from zoo.app.schema import Schema, validate
from zoo.errors import ZooError
from zoo.store.lock import writing

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SUMMARY_FILE = "summary.json"
SNAPSHOT_DIR = "snapshots"  # raw training weights every few steps (LCSC searches over them)
INCOMPLETE_FILE = "INCOMPLETE"  # present from a fit's first write in the folder until its last
INCOMPLETE_NOTE = "this run did not finish (interrupted or failed); run the same command again\n"


class Run(Protocol):
    """What a registered class is: named, rebuilt from ``config.json`` and loaded from safetensors."""

    name: ClassVar[str]
    run_dir: Path | None

    def __init__(self, config: dict, origin: dict, dims: dict) -> None: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any: ...

    def eval(self) -> Any: ...


R = TypeVar("R", bound=Run)


@dataclass(frozen=True)
class Entry:
    """A registered method: the class a run folder is rebuilt with, its own ``fit(cfg)`` (or None: the generic
    Lightning fitting of ``generators.fit``), and the typed config its ``generator:`` config is checked by (a
    ``zoo.app.schema.Schema``: a field per key of ``conf/generator/<name>.yaml``, with its rule and doc)."""

    cls: type[Run]
    fit: Callable[[Mapping[str, Any]], Any] | None = None
    schema: type[Schema] | None = None


_ENTRIES: dict[str, Entry] = {}


def register(
    cls: type[R],
    fit: Callable[[Mapping[str, Any]], Any] | None = None,
    schema: type[Schema] | None = None,
) -> type[R]:
    """Make ``cls`` loadable by its ``name`` (``fit``: the method's own fitting of a composed fit config;
    ``schema``: the typed config its ``generator:`` config is checked by before a fit writes anything)."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} needs a class attribute `name` to be registered")
    _ENTRIES[cls.name] = Entry(cls, fit, schema)
    return cls


def names() -> list[str]:
    """The registered method names, sorted."""
    return sorted(_ENTRIES)


def get(name: str) -> Entry:
    """The registered entry of method ``name`` (a one-line ZooError for an unknown one)."""
    if name not in _ENTRIES:
        raise ZooError(f"unknown generator {name!r}; known: {names()}")
    return _ENTRIES[name]


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write ``path`` whole or not at all: a temporary name beside it, then ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def refuse_foreign(directory: Path) -> None:
    """Refuse to write a run into a folder that is not one: a file, or a non-empty folder that holds neither
    ``INCOMPLETE`` nor a ``config.json`` naming a generator (a user's folder; its files are never deleted)."""
    if directory.exists() and not directory.is_dir():
        raise ZooError(f"{str(directory)!r} is a file, not a run folder; choose another out")
    if not directory.is_dir() or not any(directory.iterdir()) or (directory / INCOMPLETE_FILE).exists():
        return
    try:
        meta = json.loads((directory / CONFIG_FILE).read_text())
        if isinstance(meta, dict) and isinstance(meta.get("generator"), str):
            return
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        pass
    raise ZooError(
        f"{str(directory)!r} holds files but is not a generator run folder (no config.json naming a generator); "
        "a fit replaces only a run's own files: choose another out"
    )


def refuse_finished(directory: str | Path, overwrite: bool) -> None:
    """Refuse to fit into a folder that holds a finished run (its summary or weights, no ``INCOMPLETE``) unless
    ``overwrite``: a finished fit is never replaced without asking; an interrupted one is resumed or restarted."""
    out = Path(directory)
    if overwrite or not out.is_dir() or (out / INCOMPLETE_FILE).exists():
        return
    done = [f for f in (SUMMARY_FILE, WEIGHTS_FILE) if (out / f).exists()]
    if done:
        raise ZooError(
            f"out={out} holds a finished fit ({', '.join(done)}); pass overwrite=true (--overwrite) to replace it,"
            " or choose another out"
        )


@dataclass(frozen=True)
class OwnedRun:
    """A run folder held by :func:`owned_run`; ``interrupted``: an earlier fit into it was killed or failed
    (``INCOMPLETE`` was there when the lock was taken), so the fit says whether it resumes or restarts."""

    path: Path
    interrupted: bool


@contextlib.contextmanager
def owned_run(directory: str | Path, command: str) -> Iterator[OwnedRun]:
    """Own run folder ``directory`` for a fit: its lock held throughout, ``INCOMPLETE`` written before anything
    else and the old model, config and summary removed; ``INCOMPLETE`` is removed only when the block ends
    without an error (write every file inside it). A second writer is a one-line ZooError that touches nothing."""
    out = Path(directory)
    with writing(str(out), command):
        refuse_foreign(out)
        out.mkdir(parents=True, exist_ok=True)
        interrupted = (out / INCOMPLETE_FILE).exists()
        write_atomic(out / INCOMPLETE_FILE, INCOMPLETE_NOTE)
        for stale in (WEIGHTS_FILE, CONFIG_FILE, SUMMARY_FILE):
            (out / stale).unlink(missing_ok=True)  # a run folder never mixes this run's files with an older run's
        yield OwnedRun(out, interrupted)
        (out / INCOMPLETE_FILE).unlink()


def save_run(
    directory: str | Path,
    name: str,
    config: Mapping[str, Any],
    origin: Mapping[str, Any],
    dims: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` (made if missing); returns it."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / WEIGHTS_FILE, save({k: v.detach().contiguous() for k, v in state.items()}))
    # "source" is the saved key of ``origin`` (the training zoo's provenance): old run folders keep loading
    meta = {"generator": name, "config": config, "source": origin, "dims": dims}
    write_atomic(out / CONFIG_FILE, json.dumps(meta, indent=2))
    return out


def _rebuild(entry: Entry, meta: Mapping[str, Any], where: str) -> Any:
    """The registered class built from a run's ``config.json``: its parts must be mappings and the generator config
    must pass the rules the method registered (a run's file is read back like a user's override: one line)."""
    bad = [k for k in ("config", "source", "dims") if not isinstance(meta.get(k), Mapping)]
    if bad:
        raise ZooError(f"{where!r} is not a generator config: {bad} missing or not a mapping; fit the run again")
    parts: dict[str, dict] = {k: dict(meta[k]) for k in ("config", "source", "dims")}
    if entry.schema is not None:
        try:
            known = {f.name for f in dataclasses.fields(entry.schema)}  # an older run's extra keys load
            validate(entry.schema, {k: v for k, v in parts["config"].items() if k in known})
        except ZooError as e:
            raise ZooError(f"{where!r}: {e}") from None
    try:
        return entry.cls(parts["config"], parts["source"], parts["dims"])
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ZooError(
            f"{where!r} does not rebuild its generator ({e.__class__.__name__}: {' '.join(str(e).split())[:160]});"
            " fit the run again"
        ) from None


def load(run_dir: str | Path, snapshot: int | None = None) -> Any:
    """Rebuild a saved run from ``config.json`` and safetensors (``snapshot``: raw weights at that step), in
    eval mode: an instance of the registered class (a ``Generator``, or KNOWN's predictor)."""
    d = Path(run_dir)
    if (d / INCOMPLETE_FILE).exists():
        raise ZooError(
            f"this run did not finish ({str(d / INCOMPLETE_FILE)!r} is there: the fit was interrupted or failed): "
            "fit it again"
        )
    if not (d / CONFIG_FILE).is_file():
        raise ZooError(f"no generator run at {str(d)!r}: {CONFIG_FILE} is missing (fit one with `zoo fit`)")
    try:
        meta = json.loads((d / CONFIG_FILE).read_text())
        name = meta["generator"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ZooError(f"{str(d / CONFIG_FILE)!r} is not a generator config ({e.__class__.__name__}: {e})") from None
    if name not in _ENTRIES:
        raise ZooError(f"unknown generator {name!r} in {str(d)!r}; known: {names()}")
    weights = d / WEIGHTS_FILE if snapshot is None else d / SNAPSHOT_DIR / f"step-{int(snapshot):07d}.safetensors"
    if not weights.is_file():
        raise ZooError(f"generator weights {str(weights)!r} are missing")
    g = _rebuild(_ENTRIES[name], meta, str(d / CONFIG_FILE))
    try:
        g.load_state_dict(load_file(str(weights)))
    except (SafetensorError, RuntimeError) as e:
        raise ZooError(f"{str(weights)!r} does not fit the generator ({' '.join(str(e).split())[:200]})") from None
    g.run_dir = d
    return g.eval()


P = TypeVar("P", bound="Pretrained")


class Pretrained:
    """The Hugging Face-style pair on every registered class: ``save_pretrained(dir)`` writes the run folder
    (``config.json`` + ``model.safetensors``: already the hub layout) and ``Cls.from_pretrained(dir)`` reads it back.

    Local folders only, never a download, and loading runs no code (JSON and safetensors); ``from_pretrained`` on a
    class refuses a run of another method (``Generator.from_pretrained`` accepts any generator)."""

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write this run folder into ``save_directory`` (made if missing); ``from_pretrained`` reads it back."""
        save = getattr(self, "save", None)
        if save is None:
            raise TypeError(f"{type(self).__qualname__} has no save(directory)")
        return Path(save(save_directory))

    @classmethod
    def from_pretrained(cls: type[P], pretrained_model_name_or_path: str | Path, snapshot: int | None = None) -> P:
        """The run saved in a local folder (``snapshot``: raw weights at that step), in eval mode, as a ``cls``."""
        path = Path(pretrained_model_name_or_path).expanduser()
        if not path.is_dir():
            raise ZooError(
                f"from_pretrained reads a local run folder and {str(path)!r} is none (nothing is downloaded; "
                "fetch a hub repository first, e.g. huggingface_hub.snapshot_download)"
            )
        run = load(path, snapshot)
        if not isinstance(run, cls):
            raise ZooError(f"{str(path)!r} holds a {type(run).__qualname__} run, not a {cls.__qualname__}")
        return run


def snapshots(run_dir: str | Path) -> list[int]:
    """Training steps at which raw generator weights were saved in a run folder (for ``load(dir, snapshot=)``)."""
    d = Path(run_dir) / SNAPSHOT_DIR
    return sorted(int(p.stem.removeprefix("step-")) for p in d.glob("step-*.safetensors")) if d.is_dir() else []
