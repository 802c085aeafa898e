"""Fitting the simplex: its vertices start at the zoo's aligned training models and take SGD steps on the loss of
random convex combinations of k of them on the TRAINING split (Wortsman et al. 2021's subspace objective).

``zoo fit generator=simplex zoo=Z out=DIR`` lands here (``generators.fit`` hands the composed config to the fit the
simplex registers). A seeded ``data_val_fraction`` of the training split is held out from the steps; every
``val_every`` steps ``val_samples`` fixed combinations are scored on it and the vertices of the best validation
(step 0, the raw aligned models, included) are kept. The test split is never read; the held-out MODELS
(``val_fraction``) are not vertices.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F

import zoo
from generators.registry import SUMMARY_FILE, owned_run, refuse_finished, write_atomic
from generators.simplex.model import Simplex, combine, draw_combinations
from zoo.errors import ZooError
from zoo.forward import population_forward

VAL_SEED = 12345  # the fixed combinations every validation scores


def _flat(fill: torch.Tensor, mask: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """[n, P] full flat weights: ``fill``'s buffers with the trainable entries set to ``params`` [n, P_params]."""
    flat = fill.expand(params.shape[0], -1).clone()
    flat[:, mask] = params
    return flat


def _loss(out: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean loss of [M, b, K] outputs against [b] targets: cross-entropy (classification) or MSE."""
    m, b = out.shape[:2]
    if kind == "classification":
        return F.cross_entropy(out.reshape(m * b, -1), y.repeat(m))
    return F.mse_loss(out.reshape(m, b, -1), y.reshape(1, b, -1).expand(m, b, -1).to(out.dtype))


def _score(g: Simplex, vertices: torch.Tensor, X: torch.Tensor, y: torch.Tensor, data: zoo.Dataset) -> float:
    """Validation score of the fixed combinations of ``vertices``: accuracy (classification) or minus the MSE."""
    gen = torch.Generator().manual_seed(VAL_SEED)
    k, alpha, n = int(g.config["k"]), float(g.config["alpha"]), int(g.config["val_samples"])
    pick, lam = draw_combinations(vertices.shape[0], n, k, alpha, gen)
    flat = _flat(g.buffer_fill, g.param_mask, combine(vertices, pick, lam))
    if g.has_batchnorm:
        points = g.config.get("bn_points")
        flat = zoo.recalibrate_bn(g.layout, flat, data, points=None if points is None else int(points))
    out = zoo.predict(g.layout, flat, X)
    if data.kind == "classification":
        return float((out.argmax(-1) == y).double().mean())
    return -float(_loss(out, y, data.kind))


def fit_run(cfg: Mapping) -> Simplex:
    """Fit a simplex on the zoo ``cfg['zoo']`` and write its run folder; returns it (the best validation's vertices)."""
    gcfg = dict(cfg["generator"])
    if not cfg.get("zoo"):
        raise ZooError("zoo=PATH is required (the zoo to learn from)")
    seed = int(cfg.get("seed", 0))
    stem = Path(str(cfg["zoo"]).rstrip("/")).name.removesuffix(".zarr")
    out = Path(cfg.get("out") or Path("data/runs") / f"simplex-{stem}")
    refuse_finished(out, bool(cfg.get("overwrite", False)))  # before any work
    threads = torch.get_num_threads()
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    try:
        return _fit(cfg, gcfg, seed, out)
    finally:
        torch.set_num_threads(threads)


def _fit(cfg: Mapping, gcfg: dict, seed: int, out: Path) -> Simplex:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    models = Simplex.load_training_models(str(cfg["zoo"]), gcfg, seed)
    mask = models.layout.parameter_mask()
    gen = torch.Generator().manual_seed(seed)
    rows = torch.arange(len(models.train))
    if gcfg.get("vertices") is not None:  # a seeded subset of the training models: each vertex gets more steps
        if int(gcfg["vertices"]) > len(rows):
            raise ZooError(f"generator.vertices={gcfg['vertices']} exceeds the {len(rows)} training models")
        rows = torch.randperm(len(rows), generator=gen)[: int(gcfg["vertices"])].sort().values
    vertex_ids = [int(models.info["train_ids"][i]) for i in rows]
    origin = {**models.info, "shared": models.shared, "vertex_ids": vertex_ids}
    g = Simplex.from_data(gcfg, origin, models.train[rows][:, mask], models.train.mean(0))
    data = g.dataset()
    n = len(data.X_train)
    perm = torch.randperm(n, generator=gen)
    n_val = int(round(float(gcfg["data_val_fraction"]) * n))
    val_idx, fit_idx = perm[:n_val], perm[n_val:]
    X, y = data.X_train[fit_idx], data.y_train[fit_idx]
    Xv, yv = (data.X_train[val_idx], data.y_train[val_idx]) if n_val else (X, y)
    module = g.layout.build()
    for p in module.parameters():
        p.requires_grad_(False)
    module.train(g.has_batchnorm)  # BatchNorm normalizes by the batch while fitting; samples are recalibrated
    names = {k for k, _ in module.named_parameters()}
    vertices = g.vertices.clone().requires_grad_(True)
    opt = torch.optim.SGD([vertices], lr=float(gcfg["lr"]), momentum=float(gcfg["momentum"]))
    k, alpha, bm, bs = int(gcfg["k"]), float(gcfg["alpha"]), int(gcfg["batch_models"]), int(gcfg["batch_size"])
    steps, every = int(gcfg["steps"]), int(gcfg["val_every"])
    best_score = _score(g, vertices.detach(), Xv, yv, data)
    best, best_step, history = vertices.detach().clone(), 0, [(0, best_score)]
    print(
        f"[zoo fit] simplex on {cfg['zoo']}: {len(vertex_ids)} vertices (aligned training models), "
        f"k={k}, {steps} steps; step 0 validation {best_score:.4f}",
        file=sys.stderr,
        flush=True,
    )
    for step in range(1, steps + 1):
        pick, lam = draw_combinations(vertices.shape[0], bm, k, alpha, gen)
        b = torch.randint(len(X), (min(bs, len(X)),), generator=gen)
        state = g.layout.unflatten_batch(_flat(g.buffer_fill, g.param_mask, combine(vertices, pick, lam)))
        params = {key: v for key, v in state.items() if key in names}
        buffers = {key: v.detach().clone() for key, v in state.items() if key not in names}
        loss = _loss(population_forward(module, params, buffers, X[b]), y[b], data.kind)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % every == 0 or step == steps:
            score = _score(g, vertices.detach(), Xv, yv, data)
            history.append((step, score))
            if score > best_score:
                best_score, best, best_step = score, vertices.detach().clone(), step
    g.vertices.copy_(best)
    g.refresh_spread()
    g.eval()
    with owned_run(out, "zoo fit"):
        fit_s = time.perf_counter() - t0
        g.save(out)
        summary = {
            "generator": "simplex",
            "zoo": str(cfg["zoo"]),
            "out": str(out),
            "fit_seconds": round(fit_s, 2),
            "steps": steps,
            "best_step": best_step,
            "monitor": "val/acc",  # fixed combinations' accuracy on the held-out part of the training split
            "best_score": best_score,
            "validation": [[s, v] for s, v in history],
            "train_models": len(models.info["train_ids"]),
            "vertices": len(vertex_ids),
            "val_models": len(models.info["val_ids"]),
            "canonical": models.info["canonical"],
            "dims": g.dims,
            "config": cfg,
            "next": f"zoo sample {out} -n 100 --out data/zoos/simplex-samples.zarr",
        }
        write_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2, default=str))
    print(
        f"[zoo fit] {steps} steps in {fit_s:.1f}s, best validation {best_score:.4f} at step {best_step}: {out}",
        file=sys.stderr,
        flush=True,
    )
    return g
