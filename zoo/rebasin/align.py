"""Align a whole zoo to one reference per layout and store canonical weights plus a quality report.

Rules (also printed by ``zoo align --help``):
- Models are grouped by (layout, dataset); each group gets its own reference.
- ``reference="auto"``: the done model with the best final train accuracy (regression: lowest final train
  loss), ties broken by the lowest id (:func:`choose_reference`: no choice is made on the test split). An
  explicit id is the reference of its own group; other groups fall back to ``auto``. A reference must be a done model.
- ``checkpoint="all"``: every checkpoint is matched to the reference's same checkpoint and all are
  written; ``"last"`` / an index N: only that checkpoint is matched and written.
- ``trajectory=True``: one permutation per model, found at the last selected checkpoint, is applied to
  every checkpoint (trajectories stay continuous); all checkpoints are written.
- Diverged models are skipped by default (their canonical weights stay NaN); with
  ``diverged="finite"`` their finite checkpoints are aligned and the rest stay NaN.
- The report compares each model with its reference at the last matched checkpoint: L2 distance over
  trainable parameters, top singular-vector agreement, and for a seeded sample of ``pairs`` models the
  loss barrier on the straight path (training loss; BatchNorm statistics recomputed on training data).
- ``repair``: the sampled pairs' barrier after matching is also measured with REPAIR (zoo.rebasin.repair: each
  interpolated unit reset to the interpolation of the endpoints' statistics on training data), column
  ``barrier_repair``. ``"auto"`` (the default) does so for layouts with BatchNorm, where plain interpolation
  suffers most; True / False for every layout / none.
- ``method``: ``"weights"`` (the default) is weight matching (zoo.rebasin.matching); ``"activations"`` matches
  units by the correlation of their activations with the reference's on ``MATCH_SAMPLES`` training inputs of the
  same seeded subset the barriers use (zoo.rebasin.activations; Git Re-Basin's activation matching, for
  transformers Verma & Elbayad 2024). Restarts and max_iter apply to weight matching only.
- ``symmetries``: besides permutations (always resolved), ``scale`` puts every ReLU unit's incoming weights at
  unit norm and ``sign`` every odd (sine, tanh) unit at its canonical sign before matching
  (zoo.rebasin.symmetries); sine units get their canonical sign in any case, as before.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from zoo.app.progress import Progress
from zoo.app.runtime import resolve_device
from zoo.errors import ZooError
from zoo.rebasin.activations import activation_matching
from zoo.rebasin.apply import permute_flat
from zoo.rebasin.matching import MatchResult, match_population
from zoo.rebasin.repair import repair_points
from zoo.rebasin.report import batched_l2, batched_singular_agreement, loss_barriers
from zoo.rebasin.spec import spec_for_layout
from zoo.rebasin.symmetries import canonicalize_units, parse_symmetries
from zoo.store import Zoo, open_writer

MAX_EVAL_SAMPLES = 2048  # training samples used for barrier losses and BN statistics
MATCH_SAMPLES = 512  # training samples whose activations activation matching correlates (the eval subset's first)
METHODS = ("weights", "activations")
CHUNK_MODELS = 512  # models read, aligned and written at a time

# the per-model quality columns of the alignment table (the summary holds the mean of each as mean_<column>)
REPORT_COLUMNS = (
    "l2_before",
    "l2_after",
    "svd_before",
    "svd_after",
    "barrier_before",
    "barrier_after",
    "barrier_repair",
)


REFERENCE_RULE = "best final train accuracy (regression: lowest train loss), ties by lowest id"


def choose_reference(models: pd.DataFrame) -> int:
    """The one reference rule (``zoo align``, generators, diagnostics): among the done models of ``models``,
    the best final train accuracy (the lowest train loss when no model has one, as for regression), ties
    broken by the lowest id. It reads no test metric: a choice is never made on the test split."""
    done = models[models["status"] == "done"] if "status" in models else models
    if done.empty:
        raise ZooError("no done model to use as the reference")
    if "train_acc" in done and done["train_acc"].notna().any():
        key = done["train_acc"]
    elif "train_loss" in done:
        key = -done["train_loss"]
    else:
        key = pd.Series(0.0, index=done.index)
    key = key.fillna(-np.inf)
    return int(done.loc[key == key.max(), "model_id"].min())


def _parse_checkpoint(checkpoint: Any, n_ckpt: int) -> list[int]:
    if checkpoint in ("all", None):
        return list(range(n_ckpt))
    if checkpoint == "last":
        return [n_ckpt - 1]
    try:
        c = int(checkpoint)
    except (TypeError, ValueError):
        raise ZooError(f"--checkpoint must be all, last or an index, got {checkpoint!r}") from None
    if not -n_ckpt <= c < n_ckpt:
        raise ZooError(f"checkpoint {c} is out of range: this zoo has {n_ckpt} checkpoints")
    return [c % n_ckpt]


def align_zoo(
    z: Zoo,
    reference: int | str = "auto",
    checkpoint: Any = "all",
    *,
    trajectory: bool = False,
    diverged: str = "skip",
    seed: int = 0,
    restarts: int = 0,
    max_iter: int = 100,
    pairs: int = 8,
    barrier_steps: int = 11,
    write: bool = True,
    progress: bool = False,
    repair: bool | str = "auto",
    symmetries: str | tuple[str, ...] = ("permutation",),
    method: str = "weights",
    device: str | torch.device = "cpu",
) -> tuple[pd.DataFrame, dict]:
    """Align every done model of ``z`` (a ``zoo.Zoo``) to its group's reference; returns (table, summary).

    Writes canonical weights (``ZooWriter.write_canonical``) and the tables ``alignment`` (one row per model)
    and ``alignment_summary`` (one row per group) unless ``write=False``. ``progress``: a display over
    model checkpoints matched (zoo.progress). ``device`` (cpu, cuda, cuda:N, auto): where the loss barriers are
    evaluated; the matching (scipy's assignment solves) and REPAIR run on the CPU, so the weights written do not
    depend on it.
    """
    if diverged not in ("skip", "finite"):
        raise ZooError(f"--diverged must be skip or finite, got {diverged!r}")
    if method not in METHODS:
        raise ZooError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if repair not in ("auto", True, False):
        raise ZooError(f"repair must be auto, true or false, got {repair!r}")
    sym = _symmetries(symmetries)
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    models = z.models
    n_ckpt = len(z.checkpoint_epochs)
    ckpts = _parse_checkpoint(checkpoint, n_ckpt)
    if reference != "auto":
        try:
            reference = int(reference)
        except (TypeError, ValueError):
            raise ZooError(f"--reference must be a model id or auto, got {reference!r}") from None
        if not 0 <= reference < len(models):
            raise ZooError(f"reference {reference} is out of range: this zoo has ids 0..{len(models) - 1}")
        if models.loc[reference, "status"] != "done":
            raise ZooError(f"reference {reference} is {models.loc[reference, 'status']}; pick a done model")
    rows, groups = [], []
    kept = (models["status"] == "done") | (
        (models["status"] == "diverged") & (models["last_checkpoint"] >= 0) & (diverged == "finite")
    )
    writer = open_writer(z.path) if write else None
    bar = Progress(int(kept.sum()) * len(ckpts), "model checkpoints matched", prefix="zoo align", enabled=progress)
    for (key, dataset), df in models.groupby(["layout", "dataset"], sort=True):
        keep = df["status"] == "done"
        if diverged == "finite":
            keep |= (df["status"] == "diverged") & (df["last_checkpoint"] >= 0)
        members = df[keep]
        if members.empty:
            continue
        data = z.dataset(dataset)
        ref_id = reference if reference != "auto" and int(reference) in set(df["model_id"]) else choose_reference(df)
        t0 = time.perf_counter()
        table, info = _align_group(
            z,
            key,
            members,
            ref_id,
            ckpts,
            data,
            trajectory,
            seed,
            restarts,
            max_iter,
            pairs,
            barrier_steps,
            writer,
            bar,
            repair,
            sym,
            method,
            dev,
        )
        info.update(
            layout=key,
            dataset=dataset,
            seconds=time.perf_counter() - t0,
            skipped_diverged=int(((df["status"] == "diverged") & ~keep).sum()),
        )
        rows.append(table)
        groups.append(info)
    bar.close()
    if not rows:
        raise ZooError("the zoo has no done models to align")
    table = pd.concat(rows, ignore_index=True)
    summary = {
        "checkpoint": [int(c) for c in ckpts],
        "epochs": [z.checkpoint_epochs[c] for c in ckpts],
        "trajectory": bool(trajectory),
        "diverged": diverged,
        "seed": seed,
        "restarts": restarts,
        "reference_rule": "explicit" if reference != "auto" else f"auto: {REFERENCE_RULE}",
        "repair": repair,
        "symmetries": list(sym),
        "method": method,
        "groups": groups,
    }
    if writer is not None:
        writer.write_table("alignment", table)
        writer.write_table("alignment_summary", pd.DataFrame(groups))
    return table, summary


def _align_group(
    z,
    key,
    members,
    ref_id,
    ckpts,
    data,
    trajectory,
    seed,
    restarts,
    max_iter,
    pairs,
    steps,
    writer,
    bar: Progress | None = None,
    repair: bool | str = "auto",
    sym: tuple[str, ...] = ("permutation",),
    method: str = "weights",
    device: torch.device | None = None,
):
    """Align one (layout, dataset) group chunk by chunk of models, so memory stays bounded on big zoos."""
    layout = z.layouts[key]
    spec = spec_for_layout(layout)
    batchnorm = spec.graph is not None and any("running_mean" in dict(n.tensors) for n in spec.graph.norms)
    use_repair = bool(batchnorm and not spec.heads) if repair == "auto" else bool(repair)
    if use_repair:
        repair_points(spec)  # a layout REPAIR cannot handle is refused before anything is written
    ids = [int(i) for i in members["model_id"]]
    last = members["last_checkpoint"].to_numpy()
    R = _units_canonical(spec, layout, z.weights([ref_id], checkpoint=None), sym)[0]  # [C, P]
    c_rep = ckpts[-1]
    candidates = [i for i in np.flatnonzero(last >= c_rep) if ids[i] != ref_id]
    rng = np.random.default_rng(seed)
    sample = (
        set(rng.choice(candidates, size=min(pairs, len(candidates)), replace=False).tolist())
        if candidates and pairs > 0
        else set()
    )
    gen = torch.Generator().manual_seed(seed)
    sel = torch.randperm(len(data.X_train), generator=gen)[:MAX_EVAL_SAMPLES]
    # barriers are training losses on a fixed training subset, which also recalibrates BatchNorm
    subset = dataclasses.replace(data, X_train=data.X_train[sel], y_train=data.y_train[sel])
    eval_data = (subset, steps, use_repair, device or torch.device("cpu"))
    matcher = _matcher(spec, layout, method, data.X_train[sel[:MATCH_SAMPLES]], seed, restarts, max_iter)
    tables = []
    for lo in range(0, len(ids), CHUNK_MODELS):
        part = list(range(lo, min(lo + CHUNK_MODELS, len(ids))))
        tables.append(
            _align_chunk(
                z,
                spec,
                layout,
                [ids[i] for i in part],
                last[part],
                R,
                ckpts,
                trajectory,
                matcher,
                writer,
                [i - lo for i in part if i in sample],
                eval_data,
                bar,
                sym,
            )
        )
    table = pd.concat(tables, ignore_index=True)
    table.insert(1, "layout", key)
    table.insert(2, "reference_id", ref_id)
    info = {
        "reference_id": int(ref_id),
        "models": len(ids),
        "checkpoint": int(c_rep),
        "barrier_pairs": len(sample),
        "repair": use_repair,
    }
    others = table[table["model_id"] != ref_id]  # the reference itself would add zeros
    for col in REPORT_COLUMNS:
        v = others[col].dropna()
        info[f"mean_{col}"] = float(v.mean()) if len(v) else None
    b, a, r = info["mean_barrier_before"], info["mean_barrier_after"], info["mean_barrier_repair"]
    info["barrier_reduction"] = (1 - a / b) if a is not None and b else None
    info["barrier_reduction_repair"] = (1 - r / b) if r is not None and b else None
    return table, info


def _align_chunk(
    z,
    spec,
    layout,
    ids,
    last,
    R,
    ckpts,
    trajectory,
    matcher,
    writer,
    sample,
    data,
    bar: Progress | None = None,
    sym: tuple[str, ...] = ("permutation",),
):
    W = _units_canonical(spec, layout, z.weights(ids, checkpoint=None), sym)  # [n, C, P], NaN after a divergence
    out = W.clone()
    n_ckpt = W.shape[1]
    passes = np.zeros(len(ids), dtype=np.int64)
    if trajectory:
        c = ckpts[-1]
        ok = np.flatnonzero(last >= c)
        if ok.size:
            res = matcher(R[c], W[ok, c])
            passes[ok] = res.passes
            for cc in range(n_ckpt):
                out[ok, cc] = permute_flat(spec, layout, W[ok, cc], res.perms)
        if bar is not None:
            bar.update(len(ids) * len(ckpts))
    else:
        for c in ckpts:
            ok = np.flatnonzero(last >= c)
            if ok.size == 0:
                if bar is not None:
                    bar.update(len(ids))
                continue
            res = matcher(R[c], W[ok, c])
            passes[ok] = res.passes
            out[ok, c] = permute_flat(spec, layout, W[ok, c], res.perms)
            if bar is not None:
                bar.update(len(ids))
    if writer is not None:
        if trajectory or len(ckpts) == n_ckpt:
            writer.write_canonical(ids, out)
        else:
            writer.write_canonical(ids, out[:, ckpts[0]], checkpoint=ckpts[0])
    return _report(spec, layout, ids, ckpts[-1], W, out, R, last, passes, sample, data)


def _symmetries(symmetries: str | tuple[str, ...]) -> tuple[str, ...]:
    sym = parse_symmetries(symmetries)
    if "permutation" not in sym:
        raise ZooError(f"alignment always resolves permutations: symmetries must include permutation, got {sym}")
    return sym


def _units_canonical(spec, layout, W: torch.Tensor, sym: tuple[str, ...]) -> torch.Tensor:
    """[n, C, P] weights with the per-unit symmetries ``sym`` (and sine units' signs) at their canonical form, per
    checkpoint: matching then only has permutations left to resolve (zoo.rebasin.symmetries)."""
    if not spec.signs and not ("sign" in sym and spec.odd) and not ("scale" in sym and spec.scales):
        return W
    return torch.stack([canonicalize_units(spec, layout, W[:, c], sym) for c in range(W.shape[1])], dim=1)


def _matcher(spec, layout, method, X, seed, restarts, max_iter):
    """(reference [P], weights [n, P]) -> MatchResult by ``method`` (activations: on the training inputs ``X``)."""
    if method == "activations":
        module = layout.build()

        def by_activations(ref_flat, flat):
            ref, states = layout.unflatten(ref_flat), layout.unflatten_batch(flat)
            return activation_matching(spec, module, ref, states, X)

        return by_activations
    return lambda ref_flat, flat: _match(spec, layout, ref_flat, flat, seed, restarts, max_iter)


def _match(spec, layout, ref_flat, flat, seed, restarts, max_iter):
    ref = layout.unflatten(ref_flat)
    return match_population(spec, ref, layout.unflatten_batch(flat), seed=seed, restarts=restarts, max_iter=max_iter)


def align_flat(
    layout,
    reference: torch.Tensor,
    weights: torch.Tensor,
    *,
    seed: int = 0,
    restarts: int = 0,
    max_iter: int = 100,
    symmetries: str | tuple[str, ...] = ("permutation",),
) -> tuple[torch.Tensor, MatchResult]:
    """Align flat weight vectors ``[n, P]`` of ``layout`` to one flat reference ``[P]``; returns the permuted
    ``[n, P]`` (same functions, buffers included) and the match result. For callers outside the store, e.g.
    canonicalizing generated samples before nearest-neighbour distances. ``symmetries``: as ``align_zoo``'s (the
    reference is put in the same per-unit canonical form)."""
    if weights.ndim != 2 or reference.ndim != 1:
        raise ZooError(
            f"align_flat takes weights [n, P] and a reference [P], got {tuple(weights.shape)} and "
            f"{tuple(reference.shape)}"
        )
    spec = spec_for_layout(layout)
    sym = _symmetries(symmetries)
    reference = canonicalize_units(spec, layout, reference[None], sym)[0]
    weights = canonicalize_units(spec, layout, weights, sym)
    res = _match(spec, layout, reference, weights, seed, restarts, max_iter)
    return permute_flat(spec, layout, weights, res.perms), res


def _report(spec, layout, ids, c, W, out, R, last, passes, sample, data) -> pd.DataFrame:
    """Per-model quality at checkpoint ``c``: L2 and top-SV agreement for all, barriers for ``sample``."""
    ok = np.flatnonzero(last >= c)
    ref = layout.unflatten(R[c])
    table = pd.DataFrame({"model_id": ids, "checkpoint": c, "passes": passes})
    for col in REPORT_COLUMNS:
        table[col] = np.nan
    if ok.size:
        before = layout.unflatten_batch(W[ok, c])
        after = layout.unflatten_batch(out[ok, c])
        table.loc[ok, "l2_before"] = batched_l2(ref, before, spec.matched)
        table.loc[ok, "l2_after"] = batched_l2(ref, after, spec.matched)
        table.loc[ok, "svd_before"] = batched_singular_agreement(ref, before, spec.matched)
        table.loc[ok, "svd_after"] = batched_singular_agreement(ref, after, spec.matched)
    dataset, steps, use_repair, device = data
    if sample:  # every sampled model before and after alignment: one batched evaluation of all paths, on device
        ends = torch.cat([W[sample, c], out[sample, c]]).to(device)
        ref = R[c].to(device).expand_as(ends)
        barrier = loss_barriers(layout, ref, ends, dataset, steps)["barrier"].cpu().numpy()
        table.loc[sample, "barrier_before"] = barrier[: len(sample)]
        table.loc[sample, "barrier_after"] = barrier[len(sample) :]
        if use_repair:  # the aligned paths once more, each interpolated net REPAIRed (training data)
            aligned = out[sample, c]
            rep = loss_barriers(layout, R[c].expand_as(aligned), aligned, dataset, steps, repair=True)
            table.loc[sample, "barrier_repair"] = rep["barrier"].numpy()
    return table
