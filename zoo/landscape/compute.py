"""Landscape metrics for a whole zoo: one row per model, cell metrics repeated on each member, phases.

Models of one layout are evaluated as stacked populations: loss and accuracy with ``zoo.evaluate`` /
``zoo.predict`` (the test outputs also feed CKA), Hessian trace and top eigenvalue (``vmap`` over
``functional_call``) at the analysis checkpoint; seed pairs of one grid cell are
connected by Bezier curves, fitted together as one population of control points.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from zoo.app.checks import number, one_of, optional, typed
from zoo.app.config import CONF_DIR
from zoo.app.memory import retain_freed_memory
from zoo.app.progress import Progress
from zoo.app.schema import Schema, key, section, validate
from zoo.datasets import ALL_METRICS
from zoo.errors import ZooError
from zoo.evaluate import evaluate, output_metrics, predict
from zoo.landscape.cka import linear_cka
from zoo.landscape.connectivity import mode_connectivity
from zoo.landscape.functional import FunctionalNet, task_loss, task_loss_per_example
from zoo.landscape.hessian import batched_hvp, hutchinson_trace, top_eigenvalue
from zoo.landscape.phases import NOT_CELL, Cutoffs, label_models
from zoo.store import Zoo, open_writer

DEFAULTS = CONF_DIR / "landscape" / "default.yaml"  # the packaged configs: works from a wheel too
COLUMNS = [
    "model_id",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "generalization_gap",
    "hessian_trace",
    "hessian_top_eigenvalue",
    "mode_connectivity",
    "mode_connectivity_linear",
    "cka",
    "phase",
]
# regression zoos have R^2 where classification zoos have accuracy, named as such
REGRESSION_COLUMNS = [{"train_acc": "train_r2", "test_acc": "test_r2"}.get(c, c) for c in COLUMNS]


@dataclass(frozen=True)
class PhasesConfig(Schema):
    """conf/landscape/default.yaml's ``phases:``: the cut-offs that turn a cell's metrics into a phase label."""

    WHERE = "landscape.phases."

    train_loss_high: float = key(
        0.1,
        number(float, 0, low_open=True),
        "median train loss above this: poorly trained (I/II), else well trained (III/IV); cross-entropy 0.1 is ~97% "
        "train accuracy on digits",
    )
    hessian_metric: str = key(
        "hessian_trace", one_of("hessian_trace", "hessian_top_eigenvalue"), "the Hessian metric cross-checking the loss"
    )
    hessian_cut_kind: str = key(
        "quantile",
        one_of("quantile", "absolute"),
        "quantile (of the zoo's cells, on log scale) | absolute: how hessian_cut is read",
    )
    hessian_cut: float = key(0.5, number(float), "the Hessian cut (0.5 quantile: the zoo's median log-trace)")
    mc_tol: float = key(
        0.03,
        number(float, 0),
        "mc < -mc_tol: barrier; |mc| <= mc_tol: connected; mc > +mc_tol: lower loss along the curve than at its ends",
    )
    cka_high: float = key(0.9, number(float, 0, 1), "logit CKA between seeds at or above: IV-B, below: IV-A")
    interval_z: float = key(
        2.0,
        number(float, 0),
        "a cell whose value +- interval_z * se crosses a cut-off its label depends on is marginal (2: ~95%)",
    )


@dataclass(frozen=True)
class LandscapeConfig(Schema, group="landscape", name="base"):
    """conf/landscape/default.yaml: loss-landscape metrics (``zoo landscape``) and phase cut-offs (``zoo phases``);
    a recipe's ``landscape:`` block holds the same keys (plus ``enabled``)."""

    WHERE = "landscape."

    checkpoint: int = key(
        -1, number(int), "analysis checkpoint index into the zoo's checkpoints (-1: each model's last valid one)"
    )
    seed: int = key(0, number(int, 0), "seeds the analysis batches, Hutchinson probes, Lanczos start and curve fitting")
    batches: int = key(
        2, number(int, 1), "fixed training batches for Hessian metrics; their indices go to table landscape_batches"
    )
    batch_size: int = key(
        128, number(int, 1), "examples per analysis batch (batches * batch_size capped at the training set)"
    )
    probes: int = key(
        16, number(int, 1), "Hutchinson Rademacher probes per model (relative error ~ 1/sqrt(probes), see bench)"
    )
    probe_chunk: int = key(
        4, number(int, 1), "probes per vmapped Hessian-vector-product call (memory: chunk x models x examples)"
    )
    power_iters: int = key(
        10,
        number(int, 1),
        "Lanczos steps (one HVP each) for the top eigenvalue (stops earlier at power_tol). At these defaults all 8 "
        "models of tiny with seeds=4 came within 0.2% of the exact Hessian's top eigenvalue; power iteration, which "
        "these keys first named, was up to 17% low there",
    )
    power_tol: float = key(
        0.01,
        number(float, 0, low_open=True),
        "Ritz residual (bounds the eigenvalue's error) relative to the estimate that ends Lanczos",
    )
    pairs: str = key(
        "all", one_of("all", "consecutive"), "seed pairs per cell for connectivity and CKA: all | consecutive"
    )
    max_pairs: int = key(3, number(int, 1), "at most this many pairs per cell (3 seeds -> 3 pairs)")
    bezier_steps: int = key(200, number(int, 0), "Adam steps fitting each curve's control point")
    bezier_lr: float = key(0.01, number(float, 0, low_open=True), "")
    bezier_batch_size: int = key(64, number(int, 1), "training examples per curve step (one t per pair per step)")
    curve_points: int = key(11, number(int, 3), "t in linspace(0, 1, curve_points) for mc and the straight-line mc")
    curve_eval: str = key(
        "train",
        one_of("train", "analysis"),
        "loss profiles along curves on: train (the whole training set) | analysis (the batches). On 256 analysis "
        "examples alone mc moved by up to ~0.02 between example draws",
    )
    bootstrap: int = key(
        200, number(int, 0), "resamples of those examples per curve: mc's spread from the evaluation data (0: none)"
    )
    threads: int | None = key(
        1,
        optional(number(int, 1)),
        "torch intra-op threads while computing (null: torch's default). Small nets gain nothing from more, and on a "
        "busy machine 2 threads made one HVP 65x slower than 1",
    )
    retain_memory: bool = key(
        True, typed(bool, "true or false"), "glibc malloc keeps freed blocks (process-wide): halved CNN HVP time here"
    )
    chunk: int = key(64, number(int, 1), "models (or pairs) per vmapped population; bounds memory")
    phases: PhasesConfig = section(PhasesConfig, "phase cut-offs")


def check_landscape_config(cfg: Mapping) -> None:
    """Every key and value of a resolved landscape config, phase cut-offs included."""
    validate(LandscapeConfig, cfg)


def columns(kind: str) -> list[str]:
    """Columns of the landscape table of a zoo of this dataset kind ('classification' | 'regression')."""
    return REGRESSION_COLUMNS if kind == "regression" else COLUMNS


BOOKKEEPING = NOT_CELL | {"population"}
PAIR_COLUMNS = [
    "cell",
    "model_a",
    "model_b",
    "mode_connectivity",
    "mode_connectivity_linear",
    "mode_connectivity_boot_std",
    "cka",
    "curve_loss",
    "line_loss",
]


def default_config() -> dict:
    """conf/landscape/default.yaml as a dict."""
    return OmegaConf.to_container(OmegaConf.load(DEFAULTS), resolve=True)


def resolve_config(cfg: Mapping | None = None) -> dict:
    """Defaults merged with ``cfg`` (a recipe's ``landscape:`` block may add ``enabled``); unknown keys are errors."""
    base = default_config()
    cfg = dict(cfg or {})
    cfg.pop("enabled", None)
    unknown = sorted(set(cfg) - set(base))
    if unknown:
        raise ZooError(f"unknown landscape config keys {unknown}; known: {sorted(base)}")
    phases = {**base["phases"], **dict(cfg.pop("phases", None) or {})}
    out = {**base, **cfg, "phases": phases}
    check_landscape_config(out)  # every type and range (LandscapeConfig)
    Cutoffs.from_mapping(phases)
    return out


def cell_keys(models: pd.DataFrame, metric_names: Sequence[str] = ()) -> list[str]:
    """Columns naming a model's grid cell: its hyperparameters except the seed (and bookkeeping)."""
    skip = BOOKKEEPING | set(metric_names) | set(ALL_METRICS)
    return [c for c in models.columns if c not in skip]


def analysis_indices(n_train: int, batches: int, batch_size: int, seed: int) -> torch.Tensor:
    """The fixed training examples for Hessian metrics: ``[batches, batch_size]`` (fewer if the set is small)."""
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    per = min(batch_size, n_train // batches) if n_train >= batches else n_train
    if per < 1:
        raise ZooError(f"training set of {n_train} examples cannot fill {batches} analysis batches")
    return perm[: batches * per].view(-1, per) if n_train >= batches else perm.view(1, -1)


def seed_pairs(members: pd.DataFrame, how: str, max_pairs: int) -> list[tuple[int, int]]:
    """Pairs of model ids of one cell, in seed order: all pairs or consecutive seeds, at most ``max_pairs``."""
    ids = members.sort_values("seed")["model_id"].astype(int).tolist()
    pairs = list(itertools.combinations(ids, 2)) if how == "all" else list(zip(ids, ids[1:]))
    return pairs[:max_pairs]


def model_generators(seed: int, ids: Sequence[int], partners: Sequence[int] | None = None) -> list[torch.Generator]:
    """One generator per model (or per pair, with ``partners``), seeded by the ids: a model's random draws do
    not depend on which other models share its population chunk, so its numbers do not either."""
    partners = partners if partners is not None else [-1] * len(ids)
    return [
        torch.Generator().manual_seed(seed * 1_000_003 + int(i) * 65_537 + int(j) + 1) for i, j in zip(ids, partners)
    ]


def _chunks(seq: Sequence, size: int):
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def compute_landscape(z: Zoo, cfg: Mapping | None = None, progress: bool = False, write: bool = True) -> pd.DataFrame:
    """Landscape metrics and phase of every model of ``zoo`` (see module doc); written as table "landscape".

    Models that are pending or diverged get NaN metrics; cells are labelled from their trained members.
    ``df.attrs["timings"]`` holds seconds per metric family, ``df.attrs["cells"]`` the labelled cell table.
    """
    cfg = resolve_config(cfg)
    if "seed" not in z.models.columns:
        raise ZooError(
            f"zoo landscape needs a 'seed' column: a cell is the models that differ only in seed (this"
            f" zoo's columns: {', '.join(z.models.columns)})"
        )
    if cfg["retain_memory"]:
        retain_freed_memory()
    threads = torch.get_num_threads()
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    try:
        return _compute(z, cfg, progress, write)
    finally:
        torch.set_num_threads(threads)


def _compute(z: Zoo, cfg: dict, progress: bool, write: bool) -> pd.DataFrame:
    cut = Cutoffs.from_mapping(cfg["phases"])
    models = z.models
    dataset = z.dataset()
    kind = dataset.kind
    crit = task_loss(kind)
    crit_each = task_loss_per_example(kind)
    seed = int(cfg["seed"])
    idx = analysis_indices(len(dataset.X_train), int(cfg["batches"]), int(cfg["batch_size"]), seed)
    flat_idx = idx.reshape(-1)
    x_a, y_a = dataset.X_train[flat_idx], dataset.y_train[flat_idx]
    # mc is read off loss profiles on the whole training set (or only the analysis batches)
    x_c, y_c = (dataset.X_train, dataset.y_train) if cfg["curve_eval"] == "train" else (x_a, y_a)
    keys = cell_keys(models, z.metric_names)
    timings = {
        "evaluate": 0.0,
        "hessian_trace": 0.0,
        "hessian_top_eigenvalue": 0.0,
        "mode_connectivity": 0.0,
        "cka": 0.0,
    }

    rows: dict[int, dict] = {int(i): {"model_id": int(i)} for i in models["model_id"]}
    pair_rows: list[dict] = []
    test_out: dict[int, torch.Tensor] = {}
    done = models[models["status"] == "done"]
    # one display over the trained models: half a model for its metrics, half for its cell's connectivity curves
    bar = Progress(len(done), "models", prefix="zoo landscape", enabled=progress)
    for layout_key, group in done.groupby("layout", sort=True):
        layout = z.layouts[layout_key]
        net = FunctionalNet.from_layout(layout)
        loss = net.loss_fn(kind)
        hvp = batched_hvp(loss, in_dims=(0, None, None))
        ids_all = group["model_id"].astype(int).tolist()
        for ids in _chunks(ids_all, int(cfg["chunk"])):
            weights = z.weights(ids, checkpoint=int(cfg["checkpoint"]))
            theta, bufs = net.split(weights)
            t0 = time.perf_counter()
            train = evaluate(layout, weights, dataset, "train")
            out = predict(layout, weights, dataset.X_test)  # [n, N, K]: test metrics and CKA from one forward
            test = output_metrics(out, dataset.y_test, kind)
            score = "acc" if kind == "classification" else "r2"
            tr_loss, tr_score, te_loss, te_score = train["loss"], train[score], test["loss"], test[score]
            t1 = time.perf_counter()
            g = model_generators(seed + 1, ids)
            trace = hutchinson_trace(hvp, theta, (bufs, x_a, y_a), int(cfg["probes"]), g, chunk=int(cfg["probe_chunk"]))
            t2 = time.perf_counter()
            g = model_generators(seed + 2, ids)
            top, _ = top_eigenvalue(hvp, theta, (bufs, x_a, y_a), int(cfg["power_iters"]), float(cfg["power_tol"]), g)
            t3 = time.perf_counter()
            timings["evaluate"] += t1 - t0
            timings["hessian_trace"] += t2 - t1
            timings["hessian_top_eigenvalue"] += t3 - t2
            for k, i in enumerate(ids):
                gap = (tr_score[k] - te_score[k]) if kind == "classification" else (te_loss[k] - tr_loss[k])
                rows[i].update(
                    {
                        "train_loss": float(tr_loss[k]),
                        f"train_{score}": float(tr_score[k]),
                        "test_loss": float(te_loss[k]),
                        f"test_{score}": float(te_score[k]),
                        "generalization_gap": float(gap),
                        "hessian_trace": float(trace[k]),
                        "hessian_top_eigenvalue": float(top[k]),
                    }
                )
                test_out[i] = out[k]
            bar.update(len(ids) / 2, layout=layout_key, step="Hessian metrics")

        # ---- cell metrics: Bezier mode connectivity and CKA over seed pairs (cells never span layouts)
        cell_of = group.assign(_cell=group[keys].map(str).agg("|".join, axis=1) if keys else "all")
        pairs, pair_cell = [], []
        for cell, members in cell_of.groupby("_cell", sort=True):
            for p in seed_pairs(members, cfg["pairs"], int(cfg["max_pairs"])):
                pairs.append(p)
                pair_cell.append(cell)
        if not pairs:
            bar.update(len(group) / 2)
            continue
        curve_net = FunctionalNet.from_layout(layout, batch_stats=True)

        def curve_loss(th, x, y, _net=curve_net):
            return crit(_net.forward(th, {}, x), y)

        def curve_loss_each(th, x, y, _net=curve_net):
            return crit_each(_net.forward(th, {}, x), y)

        mc, mcl, mcb, cka, curves, lines = [], [], [], [], [], []
        t0 = time.perf_counter()
        for chunk in _chunks(pairs, int(cfg["chunk"])):
            a = [p[0] for p in chunk]
            b = [p[1] for p in chunk]
            theta_a, _ = curve_net.split(z.weights(a, checkpoint=int(cfg["checkpoint"])))
            theta_b, _ = curve_net.split(z.weights(b, checkpoint=int(cfg["checkpoint"])))
            g = model_generators(seed + 3, a, b)
            res = mode_connectivity(
                curve_loss,
                theta_a,
                theta_b,
                dataset.X_train,
                dataset.y_train,
                x_c,
                y_c,
                k=int(cfg["curve_points"]),
                steps=int(cfg["bezier_steps"]),
                lr=float(cfg["bezier_lr"]),
                batch_size=int(cfg["bezier_batch_size"]),
                generator=g,
                loss_per_example=curve_loss_each,
                bootstrap=int(cfg["bootstrap"]),
                boot_generator=torch.Generator().manual_seed(seed + 4),
            )
            mc += res["mc"].tolist()
            boot = res["mc_boot"]
            mcb += (boot.std(dim=1) if boot.shape[1] > 1 else torch.full((len(chunk),), float("nan"))).tolist()
            mcl += res["mc_linear"].tolist()
            curves += res["curve"].tolist()
            lines += res["line"].tolist()
            bar.update(len(group) / 2 * len(chunk) / len(pairs), layout=layout_key, step="connectivity curves")
        t1 = time.perf_counter()
        for i, j in pairs:
            cka.append(float(linear_cka(test_out[i], test_out[j])))
        t2 = time.perf_counter()
        timings["mode_connectivity"] += t1 - t0
        timings["cka"] += t2 - t1
        for (i, j), cell, m_, ml_, mb_, k_, cu, li in zip(pairs, pair_cell, mc, mcl, mcb, cka, curves, lines):
            pair_rows.append(
                {
                    "cell": cell,
                    "model_a": i,
                    "model_b": j,
                    "mode_connectivity": m_,
                    "mode_connectivity_linear": ml_,
                    "mode_connectivity_boot_std": mb_,
                    "cka": k_,
                    "curve_loss": cu,
                    "line_loss": li,
                }
            )
        per_cell = pd.DataFrame({"cell": pair_cell, "mc": mc, "mcl": mcl, "cka": cka}).groupby("cell").mean()
        for _, r in cell_of.iterrows():
            if r["_cell"] in per_cell.index:
                c = per_cell.loc[r["_cell"]]
                rows[int(r["model_id"])].update(
                    mode_connectivity=float(c["mc"]), mode_connectivity_linear=float(c["mcl"]), cka=float(c["cka"])
                )

    bar.close()
    cols = columns(kind)
    table = pd.DataFrame([rows[i] for i in sorted(rows)]).reindex(columns=cols[:-1])
    pairs_table = pd.DataFrame(pair_rows, columns=PAIR_COLUMNS)
    merged = models[["model_id", "status", *keys, "seed"]].merge(table, on="model_id", how="left")
    # cell values belong to every member of the cell, trained or not
    merged["_cell"] = merged[keys].map(str).agg("|".join, axis=1) if keys else "all"
    for c in ("mode_connectivity", "mode_connectivity_linear", "cka"):
        merged[c] = merged.groupby("_cell")[c].transform("first")
    phase, cells = label_models(merged.drop(columns="_cell"), keys, cut, pairs_table)
    merged["phase"] = phase
    result = merged[cols].copy()
    if write:
        writer = open_writer(z.path)
        writer.write_table("landscape", result)
        writer.write_table(
            "landscape_batches",
            pd.DataFrame({"batch": np.repeat(np.arange(idx.shape[0]), idx.shape[1]), "index": flat_idx.numpy()}),
        )
        writer.write_table("landscape_pairs", pairs_table)
    result.attrs["timings"] = timings
    result.attrs["cells"] = cells
    result.attrs["config"] = cfg
    result.attrs["pairs"] = pairs_table
    return result


def landscape_cells(z: Zoo, cfg: Mapping | None = None) -> tuple[pd.DataFrame, float]:
    """Labelled cell table of a zoo from its stored landscape table, with the cut-offs of ``cfg``.

    Returns (cells, Hessian threshold used). Cut-offs can change here without recomputing any metric.
    """
    cfg = resolve_config(cfg)
    cut = Cutoffs.from_mapping(cfg["phases"])
    table = z.landscape
    if table is None:
        raise ZooError(f"zoo {z.path!r} has no landscape metrics yet: run `zoo landscape {z.path}` first")
    models = z.models
    keys = cell_keys(models, z.metric_names)
    merged = models[["model_id", *keys, "seed"]].merge(
        table.drop(columns=["phase"], errors="ignore"), on="model_id", how="left"
    )
    _, cells = label_models(merged, keys, cut, z.table("landscape_pairs"))
    return cells, float(cells.attrs.get("hessian_threshold", float("nan")))
