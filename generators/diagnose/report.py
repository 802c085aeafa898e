"""Memorization diagnostics: are a generator's samples good, and are they new, or copies of training models?

For every sample (of each samples zoo, and of each baseline built from the training zoo) and every training
model, measured in one batched pass:
- ``test_acc``: accuracy on the test split (``zoo.predict``; BatchNorm statistics of baselines recomputed on
  the training split);
- ``nn_l2``: L2 distance over trainable parameters to the nearest training model after aligning both to one
  reference (Git Re-Basin), lowered where weight-matching the sample directly to one of its nearest candidates
  gives less (``nn_l2_canonical``: the one-reference distance alone; ``nn_l2_raw``: no alignment at all);
  ``train_nn_l2``: each training model's distance to the other training models (self excluded), measured
  the same way, the yardstick. Why the refinement: weight matching is a local search, and on a 64-32-32-10
  MLP zoo an exact permuted copy of a training model, aligned to the reference, landed at a median distance
  of 7.3 from its aligned source (training models' nearest neighbours: 10.8), exact in 6% of copies;
  matched directly to its source, 100% are exact;
- ``max_iou``: the largest intersection-over-union of its set of misclassified test points with any training
  model's set (self excluded for training models).
Per method: mean/std of each, and ``good_and_novel``: the fraction of its samples with test_acc >= the
training models' 5th percentile and max_iou < the training models' median max_iou (non-finite samples count
as neither). Distances come from ``torch.cdist``, IoUs from boolean matrix products, in row chunks, and the
direct matchings from one batched ``match_pairs`` per chunk of (sample, candidate) pairs; there is no Python
loop over pairs. The test split is only ever read to measure, never to fit or select.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

import zoo
from zoo.datasets import Dataset
from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.app.progress import Progress
from zoo.rebasin import canonical_frame

from generators.diagnose.baselines import build_baselines, parse_baselines

TRAIN = "train"  # method name of the training models themselves
ROW_CHUNK = 1024  # rows of a distance or IoU matrix computed at once (bounds memory on big zoos)
PREDICT_FLOATS = 50_000_000  # outputs [models, test points, classes] held at once (200 MB)
NOISE_CURVE_LEVELS = 16  # sigmas of the noise frontier methods are compared with at equal accuracy
NOISE_CURVE_N = 200  # noisy copies per sigma on that frontier
ACC_TOLERANCE = 0.005  # accuracies within half a percentage point count as equal in that comparison
PAIR_CHUNK = 4096  # (sample, candidate) pairs weight-matched at once
# Nearest canonical candidates each model is also weight-matched to directly: the source of a noisy permuted
# copy was among the 1, 2, 3, 4 nearest in 80, 95, 98, 98.5% of cases on the bench zoo (64-32-32-10 MLPs).
REFINE = 3
GOOD_PERCENTILE = 5.0  # good: test_acc >= this percentile of the training models' test_acc
SCATTER_PNG = "accuracy_vs_max_iou.png"
HIST_PNG = "nn_l2_histogram.png"


# ---------------------------------------------------------------------------------------------------- metrics
def iou_matrix(errors_a: torch.Tensor, errors_b: torch.Tensor) -> torch.Tensor:
    """IoU [n, m] of boolean error sets errors_a [n, N] and errors_b [m, N]; two empty sets have IoU 1."""
    a, b = errors_a.to(torch.float32), errors_b.to(torch.float32)
    inter = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))


def max_iou(errors_a: torch.Tensor, errors_b: torch.Tensor, exclude_self: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(max IoU [n], argmax [n]) of each error set of errors_a [n, N] over the sets of errors_b [m, N].

    ``exclude_self``: a and b are the same models (row i of a is row i of b) and the pair (i, i) is skipped.
    """
    if errors_a.shape[1] != errors_b.shape[1]:
        raise ZooError(f"error sets over {errors_a.shape[1]} and {errors_b.shape[1]} test points cannot be compared")
    if exclude_self and errors_b.shape[0] < 2:
        raise ZooError("max_iou with self excluded needs at least 2 models")
    best = torch.empty(errors_a.shape[0])
    arg = torch.empty(errors_a.shape[0], dtype=torch.int64)
    for lo in range(0, errors_a.shape[0], ROW_CHUNK):
        m = iou_matrix(errors_a[lo:lo + ROW_CHUNK], errors_b)
        if exclude_self:
            rows = torch.arange(m.shape[0])
            m[rows, rows + lo] = -1.0
        best[lo:lo + ROW_CHUNK], arg[lo:lo + ROW_CHUNK] = m.max(1)
    return best, arg


def nearest_candidates(a: torch.Tensor, b: torch.Tensor, k: int = 1, exclude_self: bool = False) -> torch.Tensor:
    """Indices [n, k] of the k nearest rows of b [m, P] to each row of a [n, P], nearest first.

    ``torch.cdist`` in float32 on vectors centred on b's mean (which keeps its matrix-product form accurate);
    only rows whose distances tie within float32 rounding may swap. ``exclude_self``: a and b are the same
    rows and the pair (i, i) is skipped.
    """
    if a.shape[1] != b.shape[1]:
        raise ZooError(f"vectors of {a.shape[1]} and {b.shape[1]} coordinates cannot be compared")
    if exclude_self and b.shape[0] < 2:
        raise ZooError("nearest-neighbour distances with self excluded need at least 2 models")
    k = max(1, min(int(k), b.shape[0] - int(exclude_self)))
    centre = b.to(torch.float64).mean(0)
    B = (b.to(torch.float64) - centre).to(torch.float32)
    out = torch.empty(a.shape[0], k, dtype=torch.int64)
    for lo in range(0, a.shape[0], ROW_CHUNK):
        d = torch.cdist((a[lo:lo + ROW_CHUNK].to(torch.float64) - centre).to(torch.float32), B)
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + lo] = float("inf")
        out[lo:lo + ROW_CHUNK] = d.argmin(1, keepdim=True) if k == 1 else d.topk(k, dim=1, largest=False).indices
    return out


def nearest_l2(a: torch.Tensor, b: torch.Tensor, exclude_self: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance [n] float64, index [n]) of each row of a [n, P] to its nearest row of b [m, P] (L2).

    The nearest row comes from :func:`nearest_candidates`; its distance is recomputed directly in float64,
    so an exact copy gives 0. ``exclude_self``: a and b are the same rows and the pair (i, i) is skipped.
    """
    arg = nearest_candidates(a, b, 1, exclude_self)[:, 0]
    dist = torch.empty(a.shape[0], dtype=torch.float64)
    for lo in range(0, a.shape[0], ROW_CHUNK):
        dist[lo:lo + ROW_CHUNK] = (a[lo:lo + ROW_CHUNK].to(torch.float64)
                                   - b[arg[lo:lo + ROW_CHUNK]].to(torch.float64)).norm(dim=1)
    return dist, arg


def matched_l2(layout: Layout, a: torch.Tensor, b: torch.Tensor, candidates: torch.Tensor, seed: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance [n], index into b [n]): each row of a [n, P] weight-matched directly to each of its candidate
    rows of b (``candidates`` [n, c]; a repeated candidate is matched once) and the closest kept; L2 over
    trainable parameters, float64.

    Aligning two models to each other (``zoo.rebasin.match_pairs``, batched) finds the permutation between
    them far more reliably than aligning both to a third model: weight matching is a local search, and two
    copies of one network started from different frames can stop in different optima of the one-reference
    problem. Each distance is the distance under some permutation: an upper bound of the distance up to
    permutations, like the one-reference distance, and usually a much tighter one.
    """
    from zoo.rebasin import match_pairs, permute_flat, spec_for_layout

    spec = spec_for_layout(layout)
    mask = layout.parameter_mask()
    n, c = candidates.shape
    earlier = (candidates[:, :, None] == candidates[:, None, :]).tril(-1).any(2)  # [n, c] repeats an earlier one
    rows = torch.arange(n).repeat_interleave(c)[~earlier.reshape(-1)]
    cols = candidates.reshape(-1)[~earlier.reshape(-1)]
    d = torch.full((n * c,), float("inf"), dtype=torch.float64)
    flat_d = torch.empty(len(rows), dtype=torch.float64)
    for lo in range(0, len(rows), PAIR_CHUNK):
        refs, models = b[cols[lo:lo + PAIR_CHUNK]], a[rows[lo:lo + PAIR_CHUNK]]
        res = match_pairs(spec, layout.unflatten_batch(refs), layout.unflatten_batch(models), seed=seed)
        moved = permute_flat(spec, layout, models, res.perms)
        flat_d[lo:lo + PAIR_CHUNK] = (moved[:, mask].to(torch.float64) - refs[:, mask].to(torch.float64)).norm(dim=1)
    d[~earlier.reshape(-1)] = flat_d
    d = d.view(n, c)
    best = d.argmin(1)
    return d.gather(1, best[:, None])[:, 0], candidates.gather(1, best[:, None])[:, 0]


def permutation_nn(layout: Layout, a_canon: torch.Tensor, a_raw: torch.Tensor, b_canon: torch.Tensor,
                   b_raw: torch.Tensor, refine: int = 4, exclude_self: bool = False, seed: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-neighbour L2 up to hidden-unit permutations: (distance [n], index [n]) of a's rows against b's.

    The distance in the one-reference canonical frame, lowered where matching a row directly to one of its
    ``refine`` nearest canonical rows or its nearest raw row gives less (``refine=0``: canonical frame only).
    """
    mask = layout.parameter_mask()
    dist, arg = nearest_l2(a_canon[:, mask], b_canon[:, mask], exclude_self)
    if refine <= 0 or len(a_canon) == 0:
        return dist, arg
    cand = torch.cat([nearest_candidates(a_canon[:, mask], b_canon[:, mask], refine, exclude_self),
                      nearest_candidates(a_raw[:, mask], b_raw[:, mask], 1, exclude_self)], 1)
    d2, arg2 = matched_l2(layout, a_canon, b_canon, cand, seed)
    better = d2 < dist
    return torch.where(better, d2, dist), torch.where(better, arg2, arg)


def predictions(layout: Layout, weights: torch.Tensor, dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(test accuracy [n] float64, misclassified test points [n, N_test] bool) of flat weights [n, P]."""
    if dataset.kind != "classification":
        raise ZooError(f"diagnostics compare sets of misclassified points: dataset {dataset.name!r} is a "
                       f"{dataset.kind} task, not classification")
    wrong = torch.empty(weights.shape[0], len(dataset.y_test), dtype=torch.bool)
    per = max(1, PREDICT_FLOATS // max(1, len(dataset.y_test) * dataset.num_outputs))  # models whose outputs fit
    for lo in range(0, weights.shape[0], per):
        wrong[lo:lo + per] = zoo.predict(layout, weights[lo:lo + per], dataset.X_test).argmax(-1) != dataset.y_test
    return 1.0 - wrong.double().mean(1), wrong


# ---------------------------------------------------------------------------------------------------- training side
@dataclass
class TrainSet:
    """The training zoo's done models of one layout: raw and canonical weights, the reference, test errors."""

    path: str
    layout_key: str
    layout: Layout
    ids: np.ndarray  # [m] model ids
    raw: torch.Tensor  # [m, P]
    canonical: torch.Tensor  # [m, P] aligned to ``reference``
    reference_id: int
    reference: torch.Tensor  # [P] the frame samples are aligned to
    canonical_mode: str  # "store" (``zoo align``'s weights) or "aligned" (aligned here)
    dataset: Dataset
    seed: int = 0

    def align(self, weights: torch.Tensor) -> torch.Tensor:
        """Flat weights [n, P] permuted into the training models' canonical frame (same functions)."""
        return align_to(self.layout, self.reference, weights, self.seed)


def align_to(layout: Layout, reference: torch.Tensor, weights: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Flat weights [n, P] aligned to one flat reference [P] by Git Re-Basin weight matching (same functions)."""
    from zoo.rebasin import align_flat

    if weights.shape[0] == 0:
        return weights
    return align_flat(layout, reference, weights, seed=seed)[0]


def _as_zoo(z: str | Path | zoo.Zoo) -> zoo.Zoo:
    return z if isinstance(z, zoo.Zoo) else zoo.open(str(z))


def load_train(train_zoo: str | Path | zoo.Zoo, layout: Layout | None = None, canonical: str = "auto",
               seed: int = 0) -> TrainSet:
    """The done models of the training zoo (of ``layout`` when given) at their last checkpoint, in one frame.

    ``canonical``: "store" uses the zoo's canonical weights and ``zoo align``'s reference; "align" aligns here
    to the model with the best training accuracy; "auto" is "store" when the zoo has them, else "align".
    """
    if canonical not in ("auto", "store", "align"):
        raise ZooError(f"canonical must be auto, store or align, got {canonical!r}")
    z = _as_zoo(train_zoo)
    models = z.models
    done = models[models["status"] == "done"]
    if layout is None:
        keys = sorted(set(done["layout"]))
        if len(keys) != 1:
            raise ZooError(f"the training zoo's done models span layouts {keys}; diagnose one layout at a time")
        key = keys[0]
    else:
        key = next((k for k, v in z.layouts.items() if v.to_json() == layout.to_json()), None)
        if key is None:
            raise ZooError(f"the samples' layout ({layout.arch.get('name', 'net')}, {layout.size} values) is not a "
                           f"layout of the training zoo {z.path!r} (it holds {sorted(z.layouts)})")
    sel = done[done["layout"] == key]
    if len(sel) < 2:
        raise ZooError(f"the training zoo has {len(sel)} done model(s) of layout {key}; diagnostics need at least 2")
    ids = np.sort(sel["model_id"].to_numpy(dtype=np.int64))
    lay = z.layouts[key]
    data = z.dataset(str(sel["dataset"].iloc[0])) if "dataset" in sel else z.dataset()
    raw = z.weights(ids.tolist())
    if not torch.isfinite(raw).all():
        raise ZooError("some done training models have non-finite weights")
    frame = None
    if canonical in ("auto", "store"):
        try:
            frame = canonical_frame(z, lay, ids, raw, sel, "store")
        except ZooError:
            pass
        if frame is not None and frame.reference_id is None:  # a frame without its reference cannot align samples
            frame = None
        if frame is None and canonical == "store":
            raise ZooError(f"the training zoo has no canonical weights of layout {key} for its last checkpoints:"
                           f" run `zoo align {z.path}` (or use canonical=align)")
    if frame is None:
        frame = canonical_frame(z, lay, ids, raw, sel, "align", seed=seed)
    mode, canon, ref_id = frame.mode, frame.weights, int(frame.reference_id)
    reference = (canon if mode == "store" else raw)[int(np.searchsorted(ids, ref_id))].clone()
    return TrainSet(str(z.path), key, lay, ids, raw, canon, int(ref_id), reference, mode, data, seed)


# ---------------------------------------------------------------------------------------------------- samples side
@dataclass
class Method:
    """One group of samples to diagnose: a samples zoo, or a baseline built from the training zoo."""

    name: str
    kind: str  # "samples" | "baseline"
    weights: torch.Tensor  # [n_finite, P]
    ids: np.ndarray  # [n_finite] model ids (row numbers for baselines)
    total: int  # samples including those with no finite weights
    source: str  # zoo path or baseline description
    recalibrate: bool = False


def _sample_method(z: zoo.Zoo, train_layout: Layout | None, name: str | None) -> tuple[Method, Layout]:
    """The done, finite-weight models of a samples zoo (one layout) as a Method."""
    models = z.models
    keys = sorted(set(models["layout"]))
    if len(keys) != 1:
        raise ZooError(f"samples zoo {z.path!r} holds several layouts {keys}; diagnose one layout at a time")
    layout = z.layouts[keys[0]]
    if train_layout is not None and layout.to_json() != train_layout.to_json():
        raise ZooError(f"samples zoo {z.path!r} has a different layout from the other samples zoos")
    done = np.sort(models.loc[models["status"] == "done", "model_id"].to_numpy(dtype=np.int64))
    W = z.weights(done.tolist()) if len(done) else torch.empty(0, layout.size)
    finite = torch.isfinite(W).all(1).numpy()
    gen = z.attrs.get("generator") or {}
    label = name or (gen.get("name") if isinstance(gen, Mapping) else None) or Path(z.path.rstrip("/")).stem
    return Method(str(label), "samples", W[torch.from_numpy(finite)], done[finite], len(models), z.path), layout


def _unique_names(methods: list[Method]) -> None:
    """Make method names unique: samples zoos of one generator become ``dwf:<zoo name>``, then numbered;
    'train' stays reserved for the training models."""
    counts: dict[str, int] = {}
    for m in methods:
        counts[m.name] = counts.get(m.name, 0) + 1
    for m in methods:
        if m.kind == "samples" and (counts[m.name] > 1 or m.name == TRAIN):
            m.name = f"{m.name}:{Path(m.source.rstrip('/')).stem}"
    seen: dict[str, int] = {TRAIN: 1}
    for m in methods:
        base = m.name
        if base in seen:
            seen[base] += 1
            m.name = f"{base}-{seen[base]}"
        seen.setdefault(m.name, 1)


def _stats(x: np.ndarray) -> dict[str, float | None]:
    """mean / std / median of the finite values (None when there are none)."""
    x = x[np.isfinite(x)]
    if not len(x):
        return {"mean": None, "std": None, "median": None}
    return {"mean": float(x.mean()), "std": float(x.std()), "median": float(np.median(x))}


def _check_dataset(z: zoo.Zoo, train: TrainSet) -> None:
    """A samples zoo that records a dataset must record the training zoo's (same fingerprint)."""
    records = z.attrs.get("datasets") or {}
    prints = {r.get("fingerprint") for r in records.values() if isinstance(r, Mapping)}
    if prints and train.dataset.fingerprint not in prints:
        raise ZooError(f"samples zoo {z.path!r} was made for other data than the training zoo {train.path!r} "
                       "(dataset fingerprints differ)")


# ---------------------------------------------------------------------------------------------------- the diagnosis
def diagnose(samples_zoo: str | Path | zoo.Zoo | Mapping[str, str | Path | zoo.Zoo] | Sequence | None,
             train_zoo: str | Path | zoo.Zoo, out: str | Path | None = None,
             baselines: str | Sequence[str] | None = ("noise", "average", "gaussian"), *,
             n_baseline: int | None = None, noise_drops: Sequence[float] = (0, 1, 5), k: int = 16, seed: int = 0,
             canonical: str = "auto", refine: int = REFINE, recalibrate_samples: bool = False,
             plots: bool = True, progress: bool = False) -> dict:
    """Diagnose samples zoos against their training zoo, beside the no-training baselines; returns the report.

    ``samples_zoo``: one zoo (path or ``Zoo``), a list of them, a {name: zoo} mapping, or None (baselines
    only). ``out``: folder for ``diagnose.json`` and the PNGs (nothing written when None). ``n_baseline``:
    samples per baseline (default: the largest samples zoo's size, 100 without samples).
    ``refine``: nearest canonical candidates each model is also weight-matched to directly (0: nn_l2 is the
    one-reference canonical distance alone, which is also reported as ``nn_l2_canonical``).
    ``recalibrate_samples``: recompute the samples' BatchNorm statistics on the training split first.
    ``progress``: a display over the diagnosis steps (zoo.progress).
    """
    if refine < 0:
        raise ZooError(f"refine must be >= 0, got {refine}")
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    names = parse_baselines(baselines)
    if isinstance(samples_zoo, Mapping):
        given = [(str(k_), _as_zoo(v)) for k_, v in samples_zoo.items()]
    elif samples_zoo is None:
        given = []
    elif isinstance(samples_zoo, (list, tuple)):
        given = [(None, _as_zoo(v)) for v in samples_zoo]
    else:
        given = [(None, _as_zoo(samples_zoo))]
    if not given and not names:
        raise ZooError("nothing to diagnose: give a samples zoo or at least one baseline")
    out_dir = Path(out) if out is not None else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ZooError(f"--out {str(out_dir)!r} exists and is not a folder")

    bar = Progress(6 if out is not None and plots else 5, "steps", prefix="zoo diagnose", enabled=progress, eta=False)
    t = time.perf_counter()
    methods: list[Method] = []
    layout = None
    for label, z in given:
        m, layout = _sample_method(z, layout, label)
        methods.append(m)
    train = load_train(train_zoo, layout, canonical, seed)
    for (_, z), m in zip(given, methods):
        _check_dataset(z, train)
        m.recalibrate = recalibrate_samples
    timings["load_and_align_train"] = time.perf_counter() - t
    bar.update(1, finished="load and align the training zoo")

    t = time.perf_counter()
    n_base = int(n_baseline) if n_baseline is not None else max((m.total for m in methods), default=100)
    base_w, base_info = build_baselines(names, train.layout, train.canonical, train.dataset, n_base,
                                        seed=seed, drops=noise_drops, k=k) if names else ({}, {})
    for name, w in base_w.items():
        finite = torch.isfinite(w).all(1)
        methods.append(Method(name, "baseline", w[finite], np.flatnonzero(finite.numpy()), len(w), name))
    _unique_names(methods)
    timings["baselines"] = time.perf_counter() - t
    bar.update(1, finished="baselines")

    # one evaluation of everything (samples recalibrated first where asked), one alignment of everything
    t = time.perf_counter()
    for m in methods:
        if m.recalibrate and len(m.weights):
            m.weights = zoo.recalibrate_bn(train.layout, m.weights, train.dataset)
    sizes = [len(m.weights) for m in methods]
    allw = torch.cat([train.raw, *[m.weights for m in methods]]) if methods else train.raw
    acc, wrong = predictions(train.layout, allw, train.dataset)
    timings["evaluate"] = time.perf_counter() - t
    bar.update(1, finished="evaluate")
    t = time.perf_counter()
    canon_samples = train.align(torch.cat([m.weights for m in methods])) if methods else train.raw[:0]
    timings["align_samples"] = time.perf_counter() - t
    bar.update(1, finished="align samples")

    t = time.perf_counter()
    mask = train.layout.parameter_mask()
    m_train = len(train.ids)
    train_nn, train_nn_arg = permutation_nn(train.layout, train.canonical, train.raw, train.canonical, train.raw,
                                            refine, exclude_self=True, seed=seed)
    train_nn_canon, _ = nearest_l2(train.canonical[:, mask], train.canonical[:, mask], exclude_self=True)
    train_nn_raw, _ = nearest_l2(train.raw[:, mask], train.raw[:, mask], exclude_self=True)
    train_iou, _ = max_iou(wrong[:m_train], wrong[:m_train], exclude_self=True)
    sample_raw = allw[m_train:]
    s_nn, s_arg = permutation_nn(train.layout, canon_samples, sample_raw, train.canonical, train.raw, refine,
                                 seed=seed)
    s_nn_canon, _ = nearest_l2(canon_samples[:, mask], train.canonical[:, mask])
    s_nn_raw, _ = nearest_l2(sample_raw[:, mask], train.raw[:, mask])
    s_iou, s_iou_arg = max_iou(wrong[m_train:], wrong[:m_train])
    curve = None
    if "noise" in base_info:
        curve = noise_curve(train, wrong[:m_train], max(base_info["noise"]["sigmas"].values()), seed=seed)
        base_info["noise"]["test_curve"] = {"sigma": [c[0] for c in curve], "test_acc": [c[1] for c in curve],
                                            "max_iou": [c[2] for c in curve], "samples_per_sigma": NOISE_CURVE_N,
                                            "equal_acc_tolerance": ACC_TOLERANCE,
                                            "note": "measured on the test split; nothing is chosen from it"}
    timings["distances_and_iou"] = time.perf_counter() - t
    bar.update(1, finished="distances and error overlap")

    train_acc = acc[:m_train].numpy()
    good_acc = float(np.percentile(train_acc, GOOD_PERCENTILE))
    novel_iou = float(np.median(train_iou.numpy()))
    train_median_nn = float(np.median(train_nn.numpy()))

    def good_novel(a: np.ndarray, iou: np.ndarray, total: int) -> float | None:
        return float(((a >= good_acc) & (iou < novel_iou)).sum() / total) if total else None

    report: dict[str, Any] = {
        "train_zoo": train.path, "samples_zoos": [z.path for _, z in given], "layout": train.layout_key,
        "dataset": train.dataset.name, "checkpoint": "last",
        "canonical": {"mode": train.canonical_mode, "reference_id": train.reference_id},
        "distance_over": "trainable parameters (buffers excluded)",
        "nn_l2_rule": (f"min of the one-reference canonical distance (nn_l2_canonical) and the distances after "
                       f"weight-matching directly to the {refine} nearest canonical and the nearest raw training "
                       "models" if refine else "one-reference canonical distance"),
        "thresholds": {"good_test_acc": good_acc,
                       "good_rule": f"test_acc >= training models' {GOOD_PERCENTILE:g}th percentile",
                       "novel_max_iou": novel_iou, "novel_rule": "max_iou < training models' median max_iou"},
        "train_nn_l2_median": train_median_nn,
        "baselines": base_info, "methods": {}, "per_sample": {},
    }
    ti = train_iou.numpy()
    report["methods"][TRAIN] = {
        "kind": "train", "n": m_train, "finite": m_train, "test_acc": _stats(train_acc),
        "train_nn_l2": _stats(train_nn.numpy()), "train_nn_l2_raw": _stats(train_nn_raw.numpy()),
        "train_nn_l2_canonical": _stats(train_nn_canon.numpy()),
        "max_iou": _stats(ti), "good_and_novel": good_novel(train_acc, ti, m_train)}
    report["per_sample"][TRAIN] = {
        "model_id": train.ids.tolist(), "test_acc": train_acc.tolist(), "train_nn_l2": train_nn.tolist(),
        "train_nn_l2_raw": train_nn_raw.tolist(), "train_nn_l2_canonical": train_nn_canon.tolist(),
        "max_iou": ti.tolist(),
        "nearest_train_id": train.ids[train_nn_arg.numpy()].tolist()}
    lo = 0
    for m, size in zip(methods, sizes):
        sl = slice(lo, lo + size)
        lo += size
        a, nn, nn_raw, iou = acc[m_train:][sl].numpy(), s_nn[sl].numpy(), s_nn_raw[sl].numpy(), s_iou[sl].numpy()
        nn_canon = s_nn_canon[sl].numpy()
        nn_stats = _stats(nn)
        report["methods"][m.name] = {
            "kind": m.kind, "source": m.source, "n": m.total, "finite": size, "test_acc": _stats(a),
            "nn_l2": nn_stats, "nn_l2_raw": _stats(nn_raw), "nn_l2_canonical": _stats(nn_canon), "max_iou": _stats(iou),
            "good_and_novel": good_novel(a, iou, m.total),
            "nn_l2_over_train_median": (nn_stats["mean"] / train_median_nn
                                        if nn_stats["mean"] is not None and train_median_nn > 0 else None),
            "bn_recalibrated": bool(m.recalibrate or m.kind == "baseline" and m.name in ("average", "gaussian"))}
        report["per_sample"][m.name] = {
            "model_id": m.ids.tolist(), "test_acc": a.tolist(), "nn_l2": nn.tolist(), "nn_l2_raw": nn_raw.tolist(),
            "nn_l2_canonical": nn_canon.tolist(),
            "max_iou": iou.tolist(), "nearest_train_id": train.ids[s_arg[sl].numpy()].tolist(),
            "max_iou_train_id": train.ids[s_iou_arg[sl].numpy()].tolist()}
    compare_with_noise(report["methods"], curve)
    timings["total"] = time.perf_counter() - t_start
    report["seconds"] = timings
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if plots:
            t = time.perf_counter()
            report["plots"] = write_plots(report, out_dir)
            timings["plots"] = time.perf_counter() - t
            bar.update(1, finished="plots")
        (out_dir / "diagnose.json").write_text(json.dumps(report, indent=1, allow_nan=False, default=_json_default))
    bar.close()
    return report


def noise_curve(train: TrainSet, train_wrong: torch.Tensor, sigma_max: float, seed: int = 0,
                n: int | None = None, levels: int = NOISE_CURVE_LEVELS) -> list[tuple[float, float, float]]:
    """(sigma, mean test_acc, mean max_iou) of noisy aligned training models along a dense sigma grid: sigma 0
    (the training models: max_iou 1) and ``levels`` log-spaced sigmas from sigma_max/100 to 2 sigma_max, ``n``
    samples each. The noise frontier that methods are compared with at equal accuracy; only measured."""
    from generators.diagnose.baselines import noise_baseline

    n = n or NOISE_CURVE_N
    gen = torch.Generator().manual_seed(int(seed) + 7)
    sigmas = [0.0, *np.geomspace(sigma_max / 100, 2 * sigma_max, levels).tolist()]
    batch = torch.cat([noise_baseline(train.layout, train.canonical, n, s, gen)[0] for s in sigmas])
    acc, wrong = predictions(train.layout, batch, train.dataset)
    iou, _ = max_iou(wrong, train_wrong)
    acc, iou = acc.view(len(sigmas), -1).mean(1), iou.view(len(sigmas), -1).mean(1)
    return [(float(s), float(a), float(i)) for s, a, i in zip(sigmas, acc, iou)]


def compare_with_noise(methods: Mapping[str, dict], curve: Sequence[tuple[float, float, float]] | None,
                       tolerance: float = ACC_TOLERANCE) -> None:
    """Add to every method that is not a noise baseline ``noise_max_iou_at_equal_acc``: the lowest mean max_iou
    of the noise frontier ``curve`` (sigma, test_acc, max_iou) among its points at least as accurate as the
    method's mean test_acc minus ``tolerance`` (None when no point is), and ``more_novel_than_noise``: whether
    the method's mean max_iou is below that. The issue's goal: samples both good and more novel than noise at
    equal accuracy. (Accuracy stays flat over a wide range of small sigmas while max_iou falls, so a point-wise
    interpolation at equal accuracy is ill-posed; the tolerance absorbs the means' sampling noise.)"""
    pts = [(a, i) for _, a, i in curve or []]
    for name, m in methods.items():
        if m.get("kind") == "baseline" and name.startswith("noise-"):
            continue
        acc, iou = m["test_acc"]["mean"], m["max_iou"]["mean"]
        ok = [i for a, i in pts if acc is not None and a >= acc - tolerance]
        at = float(min(ok)) if ok else None
        m["noise_max_iou_at_equal_acc"] = at
        m["more_novel_than_noise"] = None if at is None or iou is None else bool(iou < at)


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


# ---------------------------------------------------------------------------------------------------- plots
def write_plots(report: Mapping, out_dir: str | Path) -> dict[str, str]:
    """Accuracy vs max_iou scatter and nn_l2 vs train_nn_l2 histograms as PNGs in ``out_dir``; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    per = report["per_sample"]
    names = list(per)
    palette = [plt.get_cmap("tab10")(i) for i in (1, 2, 3, 4, 5, 6, 8, 9, 0)]  # no grey: it marks training models
    colours = {n: palette[i % len(palette)] for i, n in enumerate(n for n in names if n != TRAIN)}
    colours[TRAIN] = (0.2, 0.2, 0.2, 1.0)
    th = report["thresholds"]

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for n in names:
        d = per[n]
        label = "training models" if n == TRAIN else n
        ax.scatter(d["max_iou"], d["test_acc"], s=10 if n != TRAIN else 14, alpha=0.6, color=colours[n],
                   label=f"{label} (good & novel {_pct(report['methods'][n]['good_and_novel'])})",
                   marker="x" if n == TRAIN else "o", linewidths=0.8 if n == TRAIN else None)
    curve = (report.get("baselines", {}).get("noise") or {}).get("test_curve")
    if curve:
        ax.plot(curve["max_iou"], curve["test_acc"], color="black", ls="-.", lw=1.2, alpha=0.8,
                label="noise frontier (means per sigma)")
    ax.axhline(th["good_test_acc"], color="grey", ls="--", lw=0.8)
    ax.axvline(th["novel_max_iou"], color="grey", ls=":", lw=0.8)
    ymin = ax.get_ylim()[0]
    ax.fill_betweenx([th["good_test_acc"], ax.get_ylim()[1]], ax.get_xlim()[0], th["novel_max_iou"],
                     color="tab:green", alpha=0.06, lw=0)
    ax.set_ylim(bottom=ymin)
    ax.set_xlabel("max IoU of misclassified test points with any training model")
    ax.set_ylabel("test accuracy")
    ax.set_title("good and novel: upper left (shaded); copies sit at max IoU 1", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out_dir / SCATTER_PNG, dpi=120)
    plt.close(fig)

    others = [n for n in names if n != TRAIN]
    ref = np.asarray(per[TRAIN]["train_nn_l2"], dtype=float)
    cols = min(3, max(1, len(others)))
    rows = max(1, -(-len(others) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.ravel()[len(others):]:
        ax.axis("off")
    for ax, n in zip(axes.ravel(), others):
        x = np.asarray(per[n]["nn_l2"], dtype=float)
        both = np.concatenate([ref, x])
        both = both[np.isfinite(both)]
        bins = np.linspace(0.0, float(both.max()) if len(both) and both.max() > 0 else 1.0, 16)
        x = x[np.isfinite(x)]
        ax.hist(ref, bins=bins, weights=np.full(len(ref), 1 / max(len(ref), 1)), color="grey", alpha=0.55,
                label="train_nn_l2 (training models)")
        ax.hist(x, bins=bins, weights=np.full(len(x), 1 / max(len(x), 1)), color=colours[n], alpha=0.7,
                label=f"nn_l2 ({n})")
        ax.set_title(n, fontsize=9)
        ax.set_xlabel("L2 to nearest training model, up to permutations", fontsize=8)
        ax.set_ylabel("fraction of models", fontsize=8)
        ax.legend(fontsize=7)
    if not others:
        axes[0, 0].hist(ref, bins=15, color="grey")
        axes[0, 0].set_title("train_nn_l2 (no samples or baselines)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / HIST_PNG, dpi=110)
    plt.close(fig)
    return {"scatter": SCATTER_PNG, "histogram": HIST_PNG}


def _pct(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:.{digits}%}"


def method_rows(report: Mapping) -> list[dict]:
    """One flat row per method (the columns a benchmark table shows): name, n, test_acc mean, nn_l2 mean over
    the training models' median train_nn_l2, max_iou mean, good_and_novel; training models first."""
    med = report["train_nn_l2_median"]
    rows = []
    for name, r in report["methods"].items():
        nn = r.get("nn_l2") or r.get("train_nn_l2")
        rows.append({"method": name, "kind": r["kind"], "n": r["n"], "test_acc": r["test_acc"]["mean"],
                     "test_acc_std": r["test_acc"]["std"], "nn_l2": nn["mean"],
                     "nn_l2_over_train_median": nn["mean"] / med if nn["mean"] is not None and med > 0 else None,
                     "nn_l2_raw": (r.get("nn_l2_raw") or r.get("train_nn_l2_raw"))["mean"],
                     "max_iou": r["max_iou"]["mean"], "good_and_novel": r["good_and_novel"],
                     "noise_max_iou_at_equal_acc": r.get("noise_max_iou_at_equal_acc"),
                     "more_novel_than_noise": r.get("more_novel_than_noise")})
    return rows


def _versus(row: Mapping) -> str:
    """'0.868 (more novel)' / '0.868 (less novel)' / '' for the table's noise comparison column."""
    at = row.get("noise_max_iou_at_equal_acc")
    if at is None:
        return "-" if "noise_max_iou_at_equal_acc" in row and row["kind"] != "baseline" else ""
    return f"{at:.3f} ({'more' if row['more_novel_than_noise'] else 'less'} novel)"


def summary_table(report: Mapping) -> str:
    """The per-method numbers as an aligned text table (what ``zoo diagnose`` prints)."""
    w = max([14, *(len(name) for name in report["methods"])])
    head = f"{'method':<{w}} {'n':>5} {'test_acc':>15} {'nn_l2':>15} {'nn_l2/med':>9} {'nn_l2_raw':>11} " \
           f"{'max_iou':>15} {'good&novel':>10} {'noise max_iou at its acc':>24}"
    lines = [head, "-" * len(head)]

    def ms(s: Mapping, fmt: str = ".4f") -> str:
        return "n/a" if s["mean"] is None else f"{s['mean']:{fmt}}±{s['std']:{fmt}}"

    def num(x: float | None, fmt: str) -> str:
        return "n/a" if x is None else format(x, fmt)

    for row, r in zip(method_rows(report), report["methods"].values()):
        nn = r.get("nn_l2") or r.get("train_nn_l2")
        lines.append(f"{row['method']:<{w}} {row['n']:>5} {ms(r['test_acc']):>15} {ms(nn, '.3g'):>15} "
                     f"{num(row['nn_l2_over_train_median'], '.3f'):>9} {num(row['nn_l2_raw'], '.3g'):>11} "
                     f"{ms(r['max_iou'], '.3f'):>15} {_pct(row['good_and_novel'], 1):>10} {_versus(row):>24}")
    return "\n".join(lines)
