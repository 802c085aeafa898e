"""Zoo store read throughput and size, against one torch.save file per model, in one run.

Builds (or reuses) a zoo of 256 digits MLPs (width 64, 11 checkpoints), then reads random batches of
models at the last checkpoint with ``Zoo.weights`` (one vectorized read per batch) and, for comparison,
the same models from one ``torch.save`` state-dict file per model and checkpoint (the 2022 model zoos'
format), loaded with ``weights_only=True`` and flattened. Reports models/s, MB/s and size on disk.

    .venv/bin/python bench/store.py [--zoo data/zoos/bench-store.zarr] [--batch 64] [--batches 20]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

import zoo
from zoo.config import compose

RECIPE = ["recipe=default", "recipe.name=bench-store", "recipe.widths=[64]", "recipe.batch_sizes=[128]",
          "recipe.learning_rates=[0.005,0.01,0.02,0.03,0.05,0.07,0.1,0.15]", "recipe.seeds=32", "recipe.epochs=10",
          "recipe.checkpoint_epochs=[0,1,2,3,4,5,6,7,8,9,10]", "progress=false"]


def du(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", default="data/zoos/bench-store.zarr")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=20)
    args = ap.parse_args()
    z = zoo.build(compose("build", [f"out={args.zoo}", *RECIPE]))
    ids = list(z.models.model_id)
    layout = z.layout(0)
    n, c, p = len(ids), len(z.checkpoint_epochs), layout.size
    rng = np.random.default_rng(0)
    batches = [sorted(rng.choice(ids, size=args.batch, replace=False).tolist()) for _ in range(args.batches)]
    with tempfile.TemporaryDirectory() as tmp:
        for i in ids:  # the one-file-per-model-and-checkpoint baseline
            traj = z.trajectory(i)
            for k in range(c):
                torch.save(layout.unflatten(traj[k].clone()), os.path.join(tmp, f"model_{i}_ckpt_{k}.pt"))
        files_bytes = du(tmp)
        for name, read in (
            ("zoo.weights", lambda b: z.weights(b)),
            ("torch.load per file", lambda b: torch.stack([layout.flatten(torch.load(
                os.path.join(tmp, f"model_{i}_ckpt_{c - 1}.pt"), weights_only=True)) for i in b])),
        ):
            read(batches[0])
            t = time.perf_counter()
            for b in batches:
                w = read(b)
            dt = time.perf_counter() - t
            assert w.shape == (args.batch, p)
            models = args.batch * args.batches
            print(f"{name:<22} {models / dt:>10.0f} models/s {models * p * 4 / dt / 1e6:>8.1f} MB/s")
    raw = n * c * p * 4
    store_bytes = du(args.zoo)
    print(f"size on disk: zoo {store_bytes / 1e6:.2f} MB ({store_bytes / raw:.3f} of raw float32 {raw / 1e6:.2f} MB),"
          f" torch.save files {files_bytes / 1e6:.2f} MB ({files_bytes / raw:.3f} of raw)")
    print(f"({n} models x {c} checkpoints x {p} parameters; random batches of {args.batch} at the last checkpoint)")
    print("rerun: .venv/bin/python bench/store.py")


if __name__ == "__main__":
    main()
