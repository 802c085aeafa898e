"""Meta-training KNOWN on a trajectory zoo: (weight, position) windows, validation on held-out MODELS.

``zoo fit generator=known zoo=TRAJ out=DIR`` lands here (``generators.fit`` hands the composed config to the
``fit`` KNOWN registers: :func:`fit_run`). The done models a config selects (``query``) are split by model
id into train and validation (``val_fraction``, per layout); every reversed trajectory [T, P] gives, for each position t
with a full history, the windows (v[t-H+1..t], v[t+1]) of all its trainable scalars. At most
``max_windows`` training and ``max_val_windows`` validation windows are kept (a seeded random subset).
Only weights are read: no dataset split, test or otherwise, is touched while fitting.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

import zoo
from generators.known.config import KnownConfig
from generators.known.model import Known, weight_kinds
from generators.registry import SUMMARY_FILE, owned_run, refuse_finished, write_atomic
from zoo.app.schema import validate
from zoo.errors import ZooError
from zoo.query import select
from zoo.training.trajectory import reversed_trajectories


def _split(ids: np.ndarray, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Held-out validation models of one layout (none when it has a single model)."""
    if not 0 < val_fraction < 1:
        raise ZooError(f"generator.val_fraction must be in (0, 1), got {val_fraction}")
    perm = rng.permutation(ids)
    n_val = min(max(1, int(round(val_fraction * len(ids)))), len(ids) - 1) if len(ids) > 1 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def windows(traj: torch.Tensor, kinds: torch.Tensor, history: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All (history, next value) windows [N, H+1] of trajectories [n, T, P] and their kinds [N] (buffers skipped)."""
    learned = torch.nonzero(kinds >= 0).squeeze(1)
    t = traj.shape[1]
    parts = [
        traj[:, s - history + 1 : s + 2][:, :, learned].permute(0, 2, 1).reshape(-1, history + 1)
        for s in range(history - 1, t - 1)
    ]
    return torch.cat(parts), kinds[learned].repeat(traj.shape[0] * len(parts))


def _subset(x: torch.Tensor, k: torch.Tensor, limit: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if len(x) <= limit:
        return x, k
    sel = torch.randperm(len(x), generator=gen)[:limit]
    return x[sel], k[sel]


def collect(zoo_path: str, gcfg: Mapping, seed: int) -> dict:
    """Training and validation windows of a trajectory zoo, and the provenance a run folder records."""
    z = zoo.open(zoo_path)
    history = int(gcfg["history"])
    if history < 2:
        raise ZooError(f"generator.history must be >= 2, got {history}")
    models = z.models
    sel = models[models["status"] == "done"]
    if gcfg.get("query"):
        sel = select(sel, str(gcfg["query"]), "generator.query")
    if len(sel) < 2:
        raise ZooError(f"KNOWN needs at least 2 done models (train + validation) in {zoo_path!r}, found {len(sel)}")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    tr, va, train_ids, val_ids, used, length = [], [], [], [], {}, 0
    for key in sorted(set(sel["layout"])):
        ids = sel.loc[sel["layout"] == key, "model_id"].to_numpy()
        t_ids, v_ids = _split(ids, float(gcfg["val_fraction"]), rng)
        layout = z.layouts[key]
        kinds = weight_kinds(layout)
        for part, chosen in ((tr, t_ids), (va, v_ids)):
            if len(chosen) == 0:
                continue
            traj = reversed_trajectories(z, key, chosen)
            if traj.shape[1] < history + 1:
                raise ZooError(
                    f"zoo {zoo_path!r} has trajectories of {traj.shape[1]} checkpoints (full data + "
                    f"{traj.shape[1] - 1} stages); KNOWN with history {history} needs at least "
                    f"{history + 1} (>= {history} stages)"
                )
            if not torch.isfinite(traj).all():
                raise ZooError(f"trajectories of layout {key} in {zoo_path!r} hold NaN/inf weights")
            part.append(windows(traj, kinds, history))
            length = int(traj.shape[1])
        train_ids += t_ids.tolist()
        val_ids += v_ids.tolist()
        used[key] = layout.to_json()
    if not val_ids:
        raise ZooError("no validation models: KNOWN validates on held-out models; give a layout >= 2 models")
    x_tr, k_tr = _subset(torch.cat([w for w, _ in tr]), torch.cat([k for _, k in tr]), int(gcfg["max_windows"]), gen)
    x_va, k_va = _subset(
        torch.cat([w for w, _ in va]), torch.cat([k for _, k in va]), int(gcfg["max_val_windows"]), gen
    )
    origin = {
        "zoo": str(zoo_path),
        "layouts": used,
        "train_ids": sorted(train_ids),
        "val_ids": sorted(val_ids),
        "query": gcfg.get("query"),
        "trajectory_length": length,
    }
    return {"origin": origin, "train": (x_tr, k_tr), "val": (x_va, k_va)}


def fit_run(cfg: Mapping) -> Known:
    """Meta-train KNOWN as a composed ``zoo fit`` config says; writes and returns the run (best val epoch)."""
    import lightning as L  # Lightning is for fitting only: loading KNOWN and nowcasting never import it
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from generators.lit import LitGenerator, unwrap_state
    from zoo.app.trainer import make_trainer, quiet_fit

    cfg = dict(cfg)
    if not cfg.get("zoo"):
        raise ZooError("zoo=PATH is required (the trajectory zoo to learn from)")
    gcfg = dict(cfg["generator"])
    validate(KnownConfig, gcfg)  # (zoo fit checked it already; a direct call is checked here)
    stem = Path(str(cfg["zoo"]).rstrip("/")).name.removesuffix(".zarr")
    out = Path(cfg.get("out") or Path("data/runs") / f"known-{stem}")
    refuse_finished(out, bool(cfg.get("overwrite", False)))  # before any work
    seed = int(cfg.get("seed", 0))
    threads = torch.get_num_threads()
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    try:
        L.seed_everything(seed, verbose=False)
        t0 = time.perf_counter()
        data = collect(str(cfg["zoo"]), gcfg, seed)
        x_tr, k_tr = data["train"]
        dims = {"history": int(gcfg["history"]), "train_windows": len(x_tr), "val_windows": len(data["val"][0])}
        g = Known(gcfg, data["origin"], dims)
        g.set_scales(x_tr, k_tr)
        bs = int(gcfg["batch_size"])
        train_ds = TensorDataset(x_tr, k_tr)
        sampler = RandomSampler(
            train_ds,
            replacement=True,
            num_samples=int(cfg["steps_per_epoch"]) * bs,
            generator=torch.Generator().manual_seed(seed),
        )
        train_dl = DataLoader(train_ds, batch_size=bs, sampler=sampler)
        val_dl = DataLoader(TensorDataset(*data["val"]), batch_size=65536)
        es = cfg["early_stopping"]
        best = ModelCheckpoint(
            dirpath=str(out / "checkpoints"),
            filename="best",
            monitor="val/loss",
            mode="min",
            save_top_k=1,
            save_last=True,
            save_weights_only=True,
            enable_version_counter=False,
        )
        stop = EarlyStopping(
            monitor="val/loss", mode="min", patience=int(es["patience"]), min_delta=float(es["min_delta"])
        )
        trainer = make_trainer(
            {**cfg["trainer"], "max_epochs": int(gcfg["max_epochs"])},
            out,
            [best, stop],
            progress="zoo fit",
            monitor="val/loss",
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        with owned_run(out, "zoo fit") as run:  # locked and marked INCOMPLETE until summary.json is in
            if run.interrupted:  # KNOWN's fit is short: an interrupted one is started over, and says so
                print(f"[zoo fit] {out}: the earlier fit was interrupted; restarting from scratch", file=sys.stderr)
            for stale in (out / "metrics.csv", out / "checkpoints" / "best.ckpt", out / "checkpoints" / "last.ckpt"):
                stale.unlink(missing_ok=True)
            with quiet_fit():
                trainer.fit(LitGenerator(g), train_dataloaders=train_dl, val_dataloaders=val_dl)
            if best.best_model_path:
                state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
                g.load_state_dict(unwrap_state(state))
            fit_s = time.perf_counter() - t0
            g.save(out)
            summary = {
                "generator": "known",
                "zoo": str(cfg["zoo"]),
                "out": str(out),
                "fit_seconds": round(fit_s, 2),
                "steps": int(trainer.global_step),
                "epochs": int(trainer.current_epoch),
                "monitor": "val/loss",
                "best_score": float(best.best_model_score) if best.best_model_score is not None else None,
                "train_models": len(data["origin"]["train_ids"]),
                "val_models": len(data["origin"]["val_ids"]),
                "canonical": "raw",
                "dims": dims,
                "bound": g.bound.tolist(),
                "seen": g.seen.tolist(),
                "parameters": int(sum(p.numel() for p in g.nets.parameters())),
                "config": cfg,
                "next": f"zoo nowcast {out} --zoo {cfg['zoo']} --out data/zoos/known-{stem}.zarr --steps 3",
            }
            write_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2, default=str))
            return g.eval()
    finally:
        torch.set_num_threads(threads)
