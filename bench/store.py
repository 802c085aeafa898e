"""Reading weights through ``Zoo.weights`` vs the files a user would otherwise keep, cold and warm, in one run.

Builds (or reuses) a zoo of 256 digits MLPs (width 64, 11 checkpoints) with ``zoo build``, writes the same
weights in the obvious alternatives, then reads random batches of ``--batch`` model ids (unsorted) two ways:
one checkpoint (the last) as [n, P], and all checkpoints as [n, C, P]:

- ``Zoo.weights`` (one vectorized read per batch; ``checkpoint=None`` for all checkpoints);
- one ``torch.save`` file per model holding its whole trajectory, loaded one by one with
  ``torch.load(weights_only=True, mmap=True)`` (mmap: only the tensors asked for are paged in);
- one safetensors file per model, read one by one with ``safe_open`` (lazily, tensor by tensor);
- one ``torch.save`` file per model and checkpoint (the 2022 model zoos' layout).

Every reader returns the same flat float32 tensors (checked). Cold: before each batch the page cache of
every file of every format is dropped (``posix_fadvise(DONTNEED)``, per file: nothing else on the machine
is touched) and the zoo is opened again inside the timing; warm: the zoo stays open and the same
batches are read again with everything cached. Reports models/s, MB/s and size on disk; JSON in
docs/bench-store.json.

    .venv/bin/python bench/store.py                          # full run (10 batches of 256)
    .venv/bin/python bench/store.py --batches 3 --json /tmp/store.json   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402
from zoo.app.config import compose  # noqa: E402

RECIPE = [
    "recipe=default",
    "recipe.name=bench-store",
    "recipe.dataset=digits",
    "recipe.arch=mlp",
    "recipe.widths=[64]",
    "recipe.depths=[2]",
    "recipe.batch_sizes=[128]",
    "recipe.weight_decays=[0.0]",
    "recipe.learning_rates=[0.005,0.01,0.02,0.03,0.05,0.07,0.1,0.15]",
    "recipe.seeds=32",
    "recipe.epochs=10",
    "recipe.checkpoint_epochs=[0,1,2,3,4,5,6,7,8,9,10]",
    "progress=false",
    "threads=1",
]


def du(path: str | Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def evict(*roots: str | Path) -> None:
    """Drop these files' pages from the page cache (per file; other processes' files are untouched)."""
    for root in roots:
        for d, _, fs in os.walk(root):
            for f in fs:
                fd = os.open(os.path.join(d, f), os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def write_alternatives(z, ids: list[int], root: Path) -> dict[str, Path]:
    """The same weights as one torch.save / safetensors file per model, and one torch.save per checkpoint."""
    layout = z.layout(ids[0])
    dirs = {k: root / k for k in ("torch_per_model", "safetensors_per_model", "torch_per_checkpoint")}
    for d in dirs.values():
        d.mkdir(parents=True)
    for i in ids:
        traj = z.trajectory(i)
        states = [layout.unflatten(traj[c].clone()) for c in range(len(traj))]
        flat = {f"{c}.{k}": v.contiguous() for c, s in enumerate(states) for k, v in s.items()}
        torch.save(flat, dirs["torch_per_model"] / f"model_{i}.pt")
        save_file(flat, str(dirs["safetensors_per_model"] / f"model_{i}.safetensors"))
        for c, s in enumerate(states):
            torch.save(s, dirs["torch_per_checkpoint"] / f"model_{i}_ckpt_{c}.pt")
    return dirs


def readers(z_path: str, dirs: dict[str, Path], layout, n_ckpt: int) -> dict:
    """name -> (read(ids, checkpoint|None) -> tensor): checkpoint None means all checkpoints [n, C, P]."""
    names = [e.name for e in layout.entries]
    flat = layout.flatten

    def pick(state: dict, c: int) -> torch.Tensor:
        return flat({n: state[f"{c}.{n}"] for n in names})

    opened: dict = {}

    def zoo_read(ids, c):
        if "z" not in opened:  # cold: opened again inside the timing (evict() clears it); warm: kept open
            opened["z"] = zoo.open(z_path)
        return opened["z"].weights(ids, checkpoint=c)

    zoo_read.forget = opened.clear

    def torch_model(ids, c):
        cs = range(n_ckpt) if c is None else [c]
        out = []
        for i in ids:
            s = torch.load(dirs["torch_per_model"] / f"model_{i}.pt", weights_only=True, mmap=True)
            out.append(torch.stack([pick(s, k) for k in cs]))
        return torch.stack(out) if c is None else torch.stack(out)[:, 0]

    def safetensors_model(ids, c):
        cs = range(n_ckpt) if c is None else [c]
        out = []
        for i in ids:
            with safe_open(str(dirs["safetensors_per_model"] / f"model_{i}.safetensors"), framework="pt") as f:
                out.append(torch.stack([flat({n: f.get_tensor(f"{k}.{n}") for n in names}) for k in cs]))
        return torch.stack(out) if c is None else torch.stack(out)[:, 0]

    def torch_ckpt(ids, c):
        cs = range(n_ckpt) if c is None else [c]
        out = [
            torch.stack(
                [
                    flat(torch.load(dirs["torch_per_checkpoint"] / f"model_{i}_ckpt_{k}.pt", weights_only=True))
                    for k in cs
                ]
            )
            for i in ids
        ]
        return torch.stack(out) if c is None else torch.stack(out)[:, 0]

    return {
        "Zoo.weights": zoo_read,
        "torch.save per model (mmap)": torch_model,
        "safetensors per model": safetensors_model,
        "torch.save per model-checkpoint": torch_ckpt,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zoo", default="data/zoos/bench-store.zarr")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--json", default="docs/bench-store.json")
    a = ap.parse_args()
    t0 = time.perf_counter()
    z = zoo.build(compose("build", [f"out={a.zoo}", *RECIPE]))
    build_s = time.perf_counter() - t0
    ids = z.models.model_id.astype(int).tolist()
    layout, n_ckpt = z.layout(ids[0]), len(z.checkpoint_epochs)
    p = layout.size
    rng = np.random.default_rng(0)
    batches = [rng.choice(ids, size=min(a.batch, len(ids)), replace=False).tolist() for _ in range(a.batches)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-", dir=str(Path(a.zoo).resolve().parent)))
    rows = []
    try:
        dirs = write_alternatives(z, ids, tmp)
        sizes = {
            "Zoo.weights": du(a.zoo),
            "torch.save per model (mmap)": du(dirs["torch_per_model"]),
            "safetensors per model": du(dirs["safetensors_per_model"]),
            "torch.save per model-checkpoint": du(dirs["torch_per_checkpoint"]),
        }
        read = readers(a.zoo, dirs, layout, n_ckpt)
        want = {c: [z.weights(b, checkpoint=c) for b in batches[:1]] for c in (n_ckpt - 1, None)}
        for what, c in (("last checkpoint", n_ckpt - 1), ("all checkpoints", None)):
            for name, fn in read.items():
                assert torch.equal(fn(batches[0], c), want[c][0]), (name, what)  # same bits from every format
                for cache in ("cold", "warm"):
                    total = 0.0
                    for b in batches:
                        if cache == "cold":
                            evict(a.zoo, tmp)
                            getattr(fn, "forget", lambda: None)()
                        t = time.perf_counter()
                        fn(b, c)
                        total += time.perf_counter() - t
                    models = len(batches) * len(batches[0])
                    floats = models * p * (n_ckpt if c is None else 1)
                    rows.append(
                        {
                            "read": what,
                            "format": name,
                            "cache": cache,
                            "models_per_s": models / total,
                            "MB_per_s": floats * 4 / total / 1e6,
                            "seconds": total,
                            "batches": len(batches),
                            "batch": len(batches[0]),
                        }
                    )
                    print(
                        f"{what:<16} {cache:<5} {name:<32} {models / total:>10.0f} models/s"
                        f" {floats * 4 / total / 1e6:>9.1f} MB/s",
                        flush=True,
                    )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raw = len(ids) * n_ckpt * p * 4
    print(
        "size on disk (x raw float32 %.2f MB): " % (raw / 1e6)
        + ", ".join(f"{k} {v / 1e6:.2f} MB ({v / raw:.2f}x)" for k, v in sizes.items())
    )
    for what in ("last checkpoint", "all checkpoints"):
        for cache in ("cold", "warm"):
            r = {x["format"]: x["models_per_s"] for x in rows if x["read"] == what and x["cache"] == cache}
            best = max((v, k) for k, v in r.items() if k != "Zoo.weights")
            print(f"{what}, {cache}: Zoo.weights {r['Zoo.weights'] / best[0]:.1f}x the best alternative ({best[1]})")
    print(
        f"({len(ids)} models x {n_ckpt} checkpoints x {p} parameters; {len(batches)} random batches of"
        f" {len(batches[0])} ids; zoo built/reused in {build_s:.1f} s)"
    )
    cmd = "bench/store.py" + "".join(f" {x}" for x in sys.argv[1:])
    out = {
        "command": f".venv/bin/python {cmd}",
        "models": len(ids),
        "checkpoints": n_ckpt,
        "parameters": p,
        "load_average": os.getloadavg()[0],
        "sizes_bytes": sizes,
        "raw_bytes": raw,
        "reads": rows,
    }
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.json}; rerun: .venv/bin/python {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
