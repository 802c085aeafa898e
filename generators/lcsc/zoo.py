"""LCSC for zoo models: search coefficients over each model's stored checkpoints and write the merged zoo.

:func:`lcsc_zoo` runs one :class:`~generators.lcsc.search.Search` per model, all in lockstep (one batched
``zoo.evaluate`` per generation), with fitness on a validation split carved (seeded, recorded) from the
TRAINING data; the test split is read only afterwards, to report last / best EMA / best uniform / LCSC
side by side. :func:`write_lcsc_zoo` writes the merged weights (BatchNorm statistics recomputed on the
training split) as a zoo with the table ``lcsc``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

import zoo
from generators.lcsc.search import Search, SearchConfig, combine, metric_names, run_searches, validation_view
from zoo.app.progress import Progress
from zoo.app.runtime import resolve_device
from zoo.errors import ZooError
from zoo.layout import Layout


@dataclass
class LCSCResult:
    """What :func:`lcsc_zoo` found: the ``lcsc`` table and the merged weights per model, in ``ids`` order."""

    ids: list[int]
    table: pd.DataFrame
    weights: dict[int, torch.Tensor]  # model id -> [P] merged weights as written (BN statistics recomputed)
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0


def _fitness_fn(
    layout: Layout,
    trajs: torch.Tensor,
    val: zoo.Dataset,
    metric: str,
    bn: bool,
    chunk: int,
    device: torch.device | None = None,
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Batched fitness of (model position [m], alphas [m, C]): val loss, or minus val accuracy / R^2; the
    candidates are evaluated on ``device``."""
    tie = 1.0 / (10.0 * len(val.X_test))  # loss breaks accuracy ties: bounded below one sample's accuracy step

    def fitness(idx: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        out = np.empty(len(idx))
        for lo in range(0, len(idx), chunk):
            sel = slice(lo, lo + chunk)
            w = _combined(trajs, idx[sel], alphas[sel]).to(device or "cpu")
            res = zoo.evaluate(layout, w, val, split="test", recalibrate_bn=bn)
            loss = res["loss"].cpu().numpy()
            out[sel] = loss if metric == "loss" else -res[metric].cpu().numpy() + tie * loss / (1.0 + loss)
        return out

    return fitness


def _combined(trajs: torch.Tensor, idx: np.ndarray, alphas: np.ndarray) -> torch.Tensor:
    """[m, P] combined weights of candidates (model position idx[j], coefficients alphas[j])."""
    w = torch.empty(len(idx), trajs.shape[2])
    for i in np.unique(idx):
        rows = np.nonzero(idx == i)[0]
        w[torch.from_numpy(rows)] = combine(trajs[int(i)], alphas[rows])
    return w


def _has_bn(layout: Layout) -> bool:
    return any(e.name.endswith("running_mean") for e in layout.entries)


def select_models(z: zoo.Zoo, models: str | Sequence[int] = "all") -> list[int]:
    """Model ids to search: 'all' (every done model), '0,3,5-9' or a list; diverged/pending ids are errors."""
    table = z.models
    if isinstance(models, str):
        if models.strip() == "all":
            ids = table.loc[table["status"] == "done", "model_id"].astype(int).tolist()
            if not ids:
                raise ZooError(f"zoo {z.path!r} has no trained (done) models to combine")
            return ids
        ids = []
        for part in models.split(","):
            lo, dash, hi = part.strip().partition("-")
            try:
                ids += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
            except ValueError:
                raise ZooError(f"bad model ids {models!r}: expected 'all' or e.g. '0,3,5-9'") from None
    else:
        ids = [int(i) for i in models]
    if not ids:
        raise ZooError("no model ids given")
    if len(set(ids)) != len(ids):
        raise ZooError(f"model ids repeat in {models!r}")
    bad = [i for i in ids if not 0 <= i < len(table)]
    if bad:
        raise ZooError(f"model id {bad[0]} is out of range: this zoo has ids 0..{len(table) - 1}")
    status = table["status"].to_numpy()
    for i in ids:
        if status[i] != "done":
            raise ZooError(f"model {i} is {status[i]}: LCSC combines the checkpoints of trained (done) models only")
    return ids


def lcsc_zoo(
    z: zoo.Zoo | str,
    models: str | Sequence[int] = "all",
    config: SearchConfig = SearchConfig(),
    seed: int = 0,
    val_fraction: float = 0.2,
    val_seed: int = 0,
    metric: str = "loss",
    upto: int | None = None,
    data: zoo.Dataset | None = None,
    chunk: int = 2048,
    progress: bool = False,
    device: str = "cpu",
) -> LCSCResult:
    """Search LCSC coefficients for zoo models over their checkpoints (up to index ``upto``), fitness on validation.

    The search sees only ``validation_view(data, val_fraction, val_seed)``; the test split is read after it,
    for the report. ``metric``: 'loss' (validation loss, the default: smooth), or 'acc' / 'r2'. Returns the
    ``lcsc`` table (one row per model; coefficients over ALL the zoo's checkpoints, zeros past ``upto``) and
    the merged weights. ``progress``: a display over models whose search finished (zoo.progress). ``device`` (cpu,
    cuda, cuda:N, auto): where the candidates are evaluated (the search itself, a CMA-ES in numpy, on the CPU).
    """
    dev = resolve_device(str(device))  # cuda without a GPU: one line before anything is read
    t0 = time.perf_counter()
    z = zoo.open(z) if isinstance(z, str) else z
    data = z.dataset() if data is None else data
    loss_name, score_name = metric_names(data)
    if metric not in (loss_name, score_name):
        raise ZooError(f"metric must be {loss_name!r} or {score_name!r} for a {data.kind} zoo, got {metric!r}")
    ids = select_models(z, models)
    n_ckpt = len(z.checkpoint_epochs)
    used = n_ckpt if upto is None else int(upto) + 1 if int(upto) >= 0 else n_ckpt + int(upto) + 1
    if not 1 <= used <= n_ckpt:
        raise ZooError(f"upto={upto} is out of range: this zoo has {n_ckpt} checkpoints")
    config.check(used)
    val = validation_view(data, val_fraction, val_seed)
    keys = z.models["layout"].to_numpy()
    rows, weights = [], {}
    bar = Progress(len(ids), "models searched", prefix="zoo lcsc", enabled=progress)
    for key in sorted({str(keys[i]) for i in ids}):
        group = [i for i in ids if str(keys[i]) == key]
        layout, bn = z.layouts[key], _has_bn(z.layouts[key])
        # [n, used, P]; one vectorized read per checkpoint: 28x faster here than the orthogonal [n, C, P] read
        trajs = torch.stack([z.weights(group, checkpoint=c) for c in range(used)], 1)
        searches = [Search(used, config, seed=[int(seed), int(i)]) for i in group]
        start, evals = bar.n, int(bar.postfix.get("evaluations", 0))

        def shown(ss: Sequence[Search], start: int = start, evals: int = evals) -> None:
            bar.update(start + sum(s.done for s in ss) - bar.n, evaluations=evals + sum(s.evaluations for s in ss))

        run_searches(searches, _fitness_fn(layout, trajs, val, metric, bn, chunk, dev), on_round=shown)
        # the four combinations reported per model: last, best EMA, best uniform (both chosen on val), LCSC
        chosen = []
        for s in searches:
            (decay, ema), (k, uni) = s.best_seed("ema"), s.best_seed("uniform")
            chosen.append(
                {"last": s.seeds[0], "ema": ema, "uniform": uni, "lcsc": s.best[1], "ema_decay": decay, "uniform_k": k}
            )
        methods = ("last", "ema", "uniform", "lcsc")
        idx = np.repeat(np.arange(len(group)), len(methods))
        alphas = np.stack([c[m] for c in chosen for m in methods])
        w = _combined(trajs, idx, alphas)
        if bn:
            w = zoo.recalibrate_bn(layout, w.to(dev), data).cpu()
        res = {
            split: {k: v.cpu() for k, v in zoo.evaluate(layout, w.to(dev), d, split="test").items()}
            for split, d in (("val", val), ("test", data))
        }
        for j, (i, s, c) in enumerate(zip(group, searches, chosen)):
            row = {
                "model_id": int(i),
                "layout": key,
                "checkpoints": used,
                "epoch": int(z.checkpoint_epochs[used - 1]),
                "fitness": metric,
            }
            for mi, m in enumerate(methods):
                for split in ("val", "test"):
                    for name in (loss_name, score_name):
                        row[f"{m}_{split}_{name}"] = float(res[split][name][j * len(methods) + mi])
            row["ema_decay"], row["uniform_k"] = float(c["ema_decay"]), int(c["uniform_k"])
            row["evaluations"], row["generations"] = int(s.evaluations), int(s.generation)
            coef = np.zeros(n_ckpt)
            coef[:used] = c["lcsc"]
            row["coefficients"] = [float(x) for x in coef]
            rows.append(row)
            weights[int(i)] = w[j * len(methods) + methods.index("lcsc")].clone()
    table = pd.DataFrame(rows).set_index("model_id").loc[ids].reset_index()
    settings = {
        "source": z.path,
        "val_fraction": float(val_fraction),
        "val_seed": int(val_seed),
        "val_samples": int(len(val.X_test)),
        "metric": metric,
        "seed": int(seed),
        "checkpoints_used": used,
        "search": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()},
    }
    bar.close()
    return LCSCResult(ids, table, weights, settings, time.perf_counter() - t0)


def write_lcsc_zoo(
    z: zoo.Zoo | str, result: LCSCResult, out: str, overwrite: bool = False, device: str = "cpu"
) -> zoo.Zoo:
    """Write the merged weights of ``result`` as a zoo (one checkpoint per model) with the table ``lcsc``, scored
    on ``device``."""
    dev = resolve_device(str(device))
    z = zoo.open(z) if isinstance(z, str) else z
    data = z.dataset()
    src = z.models.set_index("model_id").loc[result.ids].reset_index()
    drop = ["status", "last_checkpoint", "row", *z.metric_names]
    table = src.drop(columns=[c for c in drop if c in src]).rename(columns={"model_id": "source_model_id"})
    layouts = {k: z.layouts[k] for k in sorted(set(table["layout"]))}
    epoch = int(result.table["epoch"].iloc[0])
    attrs = {"producer": "zoo lcsc", "lcsc": result.settings}
    with zoo.store.staged(out, "zoo lcsc", overwrite) as partial:  # one writer; a failure leaves out as before
        w = zoo.create(partial, table, layouts, [epoch], z.metric_names, attrs=attrs, datasets=[data], overwrite=True)
        for key, layout in layouts.items():
            new_ids = np.nonzero(table["layout"].to_numpy() == key)[0]
            flat = torch.stack([result.weights[result.ids[j]] for j in new_ids])
            metrics = np.full((len(new_ids), 1, len(z.metric_names)), np.nan)
            for split in ("train", "test"):
                for name, v in zoo.evaluate(layout, flat.to(dev), data, split=split).items():
                    if f"{split}_{name}" in z.metric_names:
                        metrics[:, 0, z.metric_names.index(f"{split}_{name}")] = v.cpu().numpy()
            w.write(new_ids.tolist(), flat[:, None], metrics)
        w.write_table("lcsc", result.table)
    return zoo.open(out)
