"""One batched evaluator: loss and accuracy (or R^2) of many flat weight vectors of one layout at once.

Every part of wszoo that asks "how good are these weights" (landscape metrics, Re-Basin loss barriers,
generated samples, searches over checkpoint combinations) calls ``evaluate`` / ``predict`` here; the
population trainer's checkpoint metrics go through the same forward (``population_forward``) and the same
metric reduction (``split_metrics``), so a stored metric, ``evaluate`` and ``Zoo.module(i)`` agree.

The forward is the population forward: the fused GEMM path for MLPs, ``vmap`` over ``functional_call``
for everything else, chunked over models and samples so that intermediate activations stay within
``memory_floats`` floats. BatchNorm runs in eval mode on its running statistics; ``recalibrate_bn``
re-estimates those on the TRAINING split (never the test split), as averaged, interpolated or generated
weights need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from zoo.datasets import Dataset
from zoo.errors import ZooError
from zoo.forward import activation_floats_per_sample, population_forward
from zoo.layout import Layout

SPLITS = ("train", "test")
BN_POINTS_SEED = 0  # the seeded subset of training inputs ``recalibrate_bn(points=...)`` reads
# On CPU one forward's activations stay below this many floats (16 MB) even when memory_floats allows more:
# bigger chunks measured slower here (digits MLPs and BN CNNs, bench/evaluate.py: 4M vs 50M floats gave
# 1.7-1.8x, interleaved runs), as their buffers leave the caches and are page-faulted in anew each time.
CPU_FORWARD_FLOATS = 4_000_000


def _forward_budget(memory_floats: int, device: torch.device) -> int:
    """Floats of activations one forward may use: memory_floats, capped on CPU (see CPU_FORWARD_FLOATS)."""
    return min(int(memory_floats), CPU_FORWARD_FLOATS) if device.type == "cpu" else int(memory_floats)


def _template(layout: Layout, device: torch.device) -> nn.Module:
    """A fresh module of the layout's architecture, frozen (its own weights are never used)."""
    module = layout.build().to(device)
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _batchnorms(module: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _check_weights(layout: Layout, weights: torch.Tensor) -> torch.Tensor:
    """Weights as float32 [n, P]; a one-line error when they do not fit the layout."""
    if weights.ndim != 2 or weights.shape[1] != layout.size:
        raise ZooError(f"weights of shape {tuple(weights.shape)} do not fit the layout: expected [n, {layout.size}]")
    return weights.to(torch.float32)


def _stacked(
    layout: Layout, module: nn.Module, weights: torch.Tensor
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """[n, P] -> (stacked parameters, stacked buffers), each tensor [n, *shape] and contiguous (vmap is
    several times faster on contiguous leaves than on strided views of one flat matrix)."""
    state = layout.unflatten_batch(weights)
    names = {n for n, _ in module.named_parameters()}
    params = {k: v.contiguous() for k, v in state.items() if k in names}
    buffers = {k: v.contiguous() for k, v in state.items() if k not in names}
    return params, buffers


def _chunk_sizes(n_models: int, n_samples: int, act: int, memory_floats: int) -> tuple[int, int]:
    """(models, samples) per forward with models * samples * act <= memory_floats (at least 1 each), keeping
    up to 256 samples per forward before splitting models further (small GEMMs waste the batched kernels)."""
    rows = max(1, int(memory_floats) // max(act, 1))
    models = max(1, min(n_models, rows // max(1, min(n_samples, 256))))
    return models, max(1, min(n_samples, rows // models))


def split_metrics(
    forward: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor, y: torch.Tensor, kind: str, chunk: int
) -> dict[str, torch.Tensor]:
    """Metrics [m] (float64) of a population ``forward(x [b, ...]) -> [m, b, K]`` on all of (X [N, ...], y).

    Classification: ``loss`` (mean cross-entropy) and ``acc``; regression: ``loss`` (MSE over samples and
    outputs) and ``r2`` (1 - SSE/SST, SST of this split's targets). Sums accumulate in float64 over sample
    chunks of ``chunk``, so the chunking changes nothing but float noise. A model with a non-finite output
    gets NaN accuracy (its argmax means nothing).
    """
    if len(X) != len(y):
        raise ZooError(f"{len(X)} inputs but {len(y)} targets")
    return _reduce(((forward(X[i : i + chunk]), y[i : i + chunk]) for i in range(0, len(X), chunk)), y, kind)


def output_metrics(out: torch.Tensor, y: torch.Tensor, kind: str) -> dict[str, torch.Tensor]:
    """Metrics [n] of outputs already computed (``predict``'s [n, N, K]) against targets y [N, ...]: the
    same reduction as ``evaluate``, for callers that also need the outputs (e.g. CKA) and run one forward."""
    if out.shape[1] != len(y):
        raise ZooError(f"outputs for {out.shape[1]} samples but {len(y)} targets")
    return _reduce([(out, y)], y, kind)


def _reduce(parts: Iterable[tuple[torch.Tensor, torch.Tensor]], y: torch.Tensor, kind: str) -> dict[str, torch.Tensor]:
    """Accumulate (outputs [m, b, K], targets [b, ...]) chunks into per-model loss and acc / r2 (float64)."""
    if kind not in ("classification", "regression"):
        raise ZooError(f"unknown dataset kind {kind!r}; expected 'classification' or 'regression'")
    if len(y) == 0:
        raise ZooError("cannot evaluate on an empty split")
    total: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    finite: torch.Tensor | None = None
    for out, yb in parts:
        m = out.shape[0]
        if kind == "classification":
            # classes on dim 1 ([m, K, b]): the trainer's loss layout, ~5x faster than [m*b, K] for small K
            part = F.cross_entropy(out.transpose(1, 2), yb.expand(m, *yb.shape), reduction="none").double().sum(1)
            hits = (out.argmax(-1) == yb).sum(1)
            correct = hits if correct is None else correct + hits
        else:
            part = (out - yb).square().double().flatten(1).sum(1)
        ok = torch.isfinite(out).flatten(1).all(1)
        total = part if total is None else total + part
        finite = ok if finite is None else finite & ok
    n = len(y)
    assert total is not None and finite is not None  # y is not empty: at least one part was read
    if kind == "classification":
        assert correct is not None
        acc = correct.double() / n
        return {"loss": total / n, "acc": torch.where(finite, acc, torch.full_like(acc, float("nan")))}
    sst = (y - y.mean(0)).square().double().sum()
    return {"loss": total / y.numel(), "r2": 1 - total / sst}


def predict(layout: Layout, weights: torch.Tensor, X: torch.Tensor, memory_floats: int = 50_000_000) -> torch.Tensor:
    """Outputs [n, N, K] of every model on inputs X [N, ...] (eval mode), vectorized over models."""
    weights = _check_weights(layout, weights)
    module = _template(layout, weights.device).eval()
    X = X.to(weights.device)
    n, N = weights.shape[0], len(X)
    act = activation_floats_per_sample(module, X)
    mc, bc = _chunk_sizes(n, N, act, _forward_budget(memory_floats, weights.device))
    out = None
    with torch.no_grad():
        for lo in range(0, n, mc):
            params, buffers = _stacked(layout, module, weights[lo : lo + mc])
            for i in range(0, N, bc):
                o = population_forward(module, params, buffers, X[i : i + bc])
                if out is None:
                    out = torch.empty(n, N, *o.shape[2:], dtype=o.dtype, device=o.device)
                out[lo : lo + mc, i : i + bc] = o
    if out is None:  # no models or no inputs: infer K from one forward of the template
        with torch.no_grad():
            k = module(torch.zeros(1, *X.shape[1:], device=weights.device)).shape[1:]
        out = torch.empty(n, N, *k, device=weights.device)
    return out


def recalibrate_bn(
    layout: Layout,
    weights: torch.Tensor,
    dataset: Dataset,
    batch_size: int = 256,
    memory_floats: int = 50_000_000,
    points: int | None = None,
) -> torch.Tensor:
    """Weights [n, P] with every BatchNorm's running mean/var re-estimated on the training split (returns the
    weights unchanged when the layout has no BatchNorm).

    Same estimate as resetting a module's statistics and running it in train mode with ``momentum=None``
    over X_train in order, in batches of ``batch_size`` (a cumulative average of the batch statistics):
    batch k uses momentum 1/k, the same factor PyTorch's cumulative average applies. Averaged,
    interpolated or generated weights need this; their stored statistics belong to other weights.
    ``points``: only that many training inputs, a fixed seeded subset (``BN_POINTS_SEED``; None: all), for
    when the forward over the whole split costs more than the sampling it serves. The test split is never read.
    """
    weights = _check_weights(layout, weights)
    module = _template(layout, weights.device)
    bns = _batchnorms(module)
    if not bns:
        return weights
    if any(not bn.track_running_stats for _, bn in bns):
        raise ZooError("a BatchNorm of this architecture keeps no running statistics; nothing to recalibrate")
    if batch_size < 1:
        raise ZooError(f"batch_size must be >= 1, got {batch_size}")
    X = dataset.X_train
    if points is not None:
        if int(points) < 1:
            raise ZooError(f"points must be >= 1 training inputs, got {points}")
        if int(points) < len(X):
            X = X[torch.randperm(len(X), generator=torch.Generator().manual_seed(BN_POINTS_SEED))[: int(points)]]
    X = X.to(weights.device)
    act = activation_floats_per_sample(module, X)
    budget = _forward_budget(memory_floats, weights.device)
    mc = max(1, min(weights.shape[0], budget // (act * batch_size)))  # a whole batch per forward
    out = weights.clone()
    module.train()
    with torch.no_grad():
        for lo in range(0, weights.shape[0], mc):
            params, buffers = _stacked(layout, module, out[lo : lo + mc])
            for name, _ in bns:
                p = f"{name}." if name else ""
                buffers[p + "running_mean"].zero_()
                buffers[p + "running_var"].fill_(1.0)
                buffers[p + "num_batches_tracked"].zero_()
            for k, i in enumerate(range(0, len(X), batch_size), start=1):
                for _, bn in bns:
                    bn.momentum = 1.0 / float(k)
                population_forward(module, params, buffers, X[i : i + batch_size])  # updates buffers in place
            rows = out[lo : lo + mc]  # only the statistics changed: the parameters stay as they are (same bits)
            for e in layout.entries:
                t, dst = buffers.get(e.name), rows[:, e.offset : e.stop]
                if t is not None and t.data_ptr() != dst.data_ptr():  # a view of out is updated already
                    dst.copy_(t.reshape(len(rows), -1))
    return out


def check_outputs(layout: Layout, dataset: Dataset) -> None:
    """One-line error when the models' outputs do not match the dataset's classes (or regression targets): a
    10-way model scored on 100-class data would fail deep in the loss, a 100-way one on 10 classes in silence."""
    outputs = layout.arch.get("num_outputs")
    if outputs is None:  # a layout imported without an architecture spec: nothing recorded to compare
        return
    if int(outputs) != int(dataset.num_outputs):
        what = "classes" if dataset.kind == "classification" else "regression targets"
        raise ZooError(
            f"the models have {int(outputs)} outputs but dataset {dataset.name!r} has {dataset.num_outputs} {what};"
            " evaluate them on the data they were built for"
        )


_recalibrate = recalibrate_bn  # ``evaluate``'s flag of the same name shadows the function inside it


def evaluate(
    layout: Layout,
    weights: torch.Tensor,
    dataset: Dataset,
    split: str = "test",
    recalibrate_bn: bool = False,
    memory_floats: int = 50_000_000,
) -> dict[str, torch.Tensor]:
    """Loss and accuracy per model ([n] each) of flat weights [n, P] on one split ('train' | 'test').

    classification -> {"loss", "acc"}; regression -> {"loss", "r2"} (never an 'acc' that is secretly R^2).
    recalibrate_bn=True: BatchNorm running statistics recomputed on the TRAINING split first (never test).
    Values are float64; the same numbers ``Zoo.module(i)`` gives (accuracy exactly, loss to float noise).
    """
    if split not in SPLITS:
        raise ZooError(f"split must be one of {list(SPLITS)}, got {split!r}")
    weights = _check_weights(layout, weights)
    check_outputs(layout, dataset)
    if recalibrate_bn:
        weights = _recalibrate(layout, weights, dataset, memory_floats=memory_floats)
    X, y = (dataset.X_train, dataset.y_train) if split == "train" else (dataset.X_test, dataset.y_test)
    X, y = X.to(weights.device), y.to(weights.device)
    module = _template(layout, weights.device).eval()
    n = weights.shape[0]
    act = activation_floats_per_sample(module, X)
    mc, bc = _chunk_sizes(n, len(X), act, _forward_budget(memory_floats, weights.device))
    parts: list[dict[str, torch.Tensor]] = []
    with torch.no_grad():
        for lo in range(0, n, mc):
            params, buffers = _stacked(layout, module, weights[lo : lo + mc])

            def forward(
                x: torch.Tensor, p: dict[str, torch.Tensor] = params, b: dict[str, torch.Tensor] = buffers
            ) -> torch.Tensor:
                return population_forward(module, p, b, x)

            parts.append(split_metrics(forward, X, y, dataset.kind, bc))
    if not parts:
        names = ("loss", "acc") if dataset.kind == "classification" else ("loss", "r2")
        return {k: torch.empty(0, dtype=torch.float64) for k in names}
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
