"""KNOWN applied recursively to a trajectory zoo, written as a zoo (``zoo nowcast`` runs it).

Every selected done model of the zoo is read along its reversed trajectory (small data -> full data); KNOWN
predicts K recursive steps past the full-data weights. The result is ONE zoo with one model per source
model and K checkpoints: checkpoint i holds the weights i+1 steps past the full data (its epoch is i+1).
BatchNorm statistics are recomputed on each model's TRAINING split (``zoo.recalibrate_bn``); train and
test loss/accuracy come from ``zoo.evaluate``. The models table keeps the source columns and adds
``source_model_id``.
"""

from __future__ import annotations

import numpy as np
import torch

import zoo
from generators.known.model import Known
from zoo.app.runtime import resolve_device
from zoo.datasets import metric_names
from zoo.errors import ZooError
from zoo.query import select
from zoo.training.trajectory import reversed_trajectories

INTERNAL_COLUMNS = ("model_id", "row", "status", "last_checkpoint")


def nowcast_zoo(
    g: Known,
    zoo_path: str,
    out: str,
    steps: int = 1,
    query: str | None = None,
    overwrite: bool = False,
    device: str = "cpu",
) -> zoo.Zoo:
    """Write the KNOWN nowcasts (``steps`` recursive steps) of a trajectory zoo's done models as a zoo at ``out``;
    the predictor, the BatchNorm re-estimates and the scoring run on ``device`` (cpu, cuda, cuda:N, auto)."""
    dev = resolve_device(str(device))  # cuda without a GPU: one line before anything is read
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 10:
        raise ZooError(f"--steps must be an integer in 1..10, got {steps!r}")
    z = zoo.open(zoo_path)
    models = z.models
    sel = models[models["status"] == "done"]
    if query:
        sel = select(sel, query, "--query")
    if sel.empty:
        raise ZooError(f"no done models of {zoo_path!r} to nowcast" + (f" match {query!r}" if query else ""))
    datasets = {name: z.dataset(name) for name in z.datasets}
    kinds = {d.kind for d in datasets.values()}
    names = list(metric_names("regression" if kinds == {"regression"} else "classification"))
    sel = sel.sort_values(["layout", "model_id"]).reset_index(drop=True)
    table = sel.drop(
        columns=[
            c for c in (*INTERNAL_COLUMNS, *models.columns[models.columns.isin(z.metric_names)]) if c in sel.columns
        ]
    )
    table.insert(0, "source_model_id", sel["model_id"].to_numpy())
    table["nowcast_run"] = str(g.run_dir) if g.run_dir is not None else None
    used = sorted(set(sel["layout"]))
    attrs = {
        "nowcast": {
            "run": str(g.run_dir) if g.run_dir is not None else None,
            "source_zoo": str(zoo_path),
            "steps": steps,
            "query": query,
            "checkpoints": "checkpoint i = i+1 recursive KNOWN steps past the full-data weights",
            "batchnorm": "recomputed on the training split",
        }
    }
    preds = {}  # every prediction before the output zoo exists: a bad input leaves nothing behind
    for key in used:
        rows = np.nonzero((sel["layout"] == key).to_numpy())[0]
        traj = reversed_trajectories(z, key, sel["model_id"].to_numpy()[rows])
        preds[key] = g.nowcast(traj, z.layouts[key], steps, device=dev)
    with zoo.store.staged(out, "zoo nowcast", overwrite) as partial:  # one writer; a failure leaves out as before
        w = zoo.create(
            partial,
            table,
            {k: z.layouts[k] for k in used},
            list(range(1, steps + 1)),
            names,
            attrs=attrs,
            datasets=list(datasets.values()),
            overwrite=True,
        )
        for key in used:
            rows = np.nonzero((sel["layout"] == key).to_numpy())[0]
            layout, pred = z.layouts[key], preds[key]
            metrics = np.full((len(rows), steps, len(names)), np.nan)
            finite = torch.isfinite(pred).flatten(1).all(1).numpy()
            for name, data in datasets.items():
                on = np.nonzero(
                    ((sel["dataset"].to_numpy()[rows] == name) if "dataset" in sel else np.ones(len(rows), bool))
                    & finite
                )[0]
                if not len(on):
                    continue
                on_t = torch.from_numpy(on)
                for s in range(steps):
                    flat = zoo.recalibrate_bn(layout, pred[on_t, s].to(dev), data)
                    pred[on_t, s] = flat.cpu()
                    for split in ("train", "test"):
                        for m, v in zoo.evaluate(layout, flat, data, split=split).items():
                            if f"{split}_{m}" in names:
                                metrics[on, s, names.index(f"{split}_{m}")] = v.cpu().numpy()
            for status, part in (("done", finite), ("diverged", ~finite)):
                if part.any():
                    w.write(
                        rows[part].tolist(),
                        pred[torch.from_numpy(part)],
                        metrics[part],
                        status=status,
                        last_checkpoint=None if status == "done" else [-1] * int(part.sum()),
                    )
    return zoo.open(out)
