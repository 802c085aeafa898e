"""Scale of the analysis steps at the zoo sizes the field uses (issue 25 item 5), on one torch thread.

- ``diagnose``: ``generators.diagnose`` as ``zoo diagnose SAMPLES --train ZOO --out DIR`` runs it (default
  baselines noise x3 / average / gaussian, plots and JSON), N samples against N training models for each N of
  ``--sizes``. Training zoo: the dwf-mlp-digits recipe (digits MLPs 64-32-32-10, 3,466 parameters) with 2,500
  seeds and 10 epochs: 10,000 REAL trained models, built once into ``data/zoos/bench-diagnose-10000.zarr``
  (about 8 min on one quiet thread); the smaller training zoos are seeded random subsets of it, copied into
  their own zoos. Samples: N noisy (sigma 0.02), randomly permuted copies of random training models, as
  bench/diagnose.py makes them (aligning them is real work; the refinement finds their sources).
- ``align``: ``zoo align`` (``zoo.rebasin.align_zoo``, default arguments) of a copy of the 10,000-model zoo.
- ``landscape``: ``zoo landscape`` (``zoo.landscape.compute_landscape``, default config) of a 2,000-model
  seeded random subset of it: 4 learning-rate cells of ~500 seeds each, so its cost is the per-model Hessian
  metrics (the Bezier curves are 3 seed pairs per cell).

Every case records wall seconds, the process's CPU seconds, the machine's load average and a float32 matmul
rate measured just before it (GFLOP/s, one thread): the machine is shared, and the matmul rate says how much
of a core the run had (191 GFLOP/s on a quiet core, docs/bench-population.json).

Rerun:  .venv/bin/python bench/analysis_scale.py        (all cases; writes docs/bench-analysis-scale.json)
        .venv/bin/python bench/analysis_scale.py --cases diagnose --sizes 1000,3000 --json /tmp/s.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from diagnose import samples_zoo  # noqa: E402

import zoo  # noqa: E402
from generators.diagnose import diagnose  # noqa: E402
from zoo.app.config import compose  # noqa: E402
from zoo.landscape.compute import compute_landscape  # noqa: E402
from zoo.rebasin import align_zoo  # noqa: E402

BIG = ROOT / "data" / "zoos" / "bench-diagnose-10000.zarr"
RECIPE = ["recipe=dwf-mlp-digits", "recipe.seeds=2500", "recipe.epochs=10", "recipe.checkpoint_epochs=[10]"]
TARGET_DIAGNOSE_10K_S = 300.0
BUILT_COLUMNS = ("model_id", "status", "row", "last_checkpoint")


def big_zoo() -> zoo.Zoo:
    """The 10,000-model training zoo, built on first use and reused."""
    try:
        z = zoo.open(str(BIG))
        if (z.models["status"] == "done").sum() >= 10_000:
            return z
    except zoo.ZooError:
        pass
    print(f"building {BIG} (10,000 digits MLPs, once) ...", flush=True)
    return zoo.build(compose("build", [f"out={BIG}", *RECIPE, "progress=false", "overwrite=true"]))


def subset_zoo(z: zoo.Zoo, n: int, out: Path, seed: int = 0) -> zoo.Zoo:
    """A zoo of n seeded random models of ``z`` (weights, metrics, columns and data record copied)."""
    if n >= len(z):
        return z
    ids = np.sort(np.random.default_rng(seed).choice(len(z), n, replace=False))
    models = z.models.iloc[ids]
    table = models.drop(columns=[c for c in (*BUILT_COLUMNS, *z.metric_names) if c in models.columns])
    metrics = z.metrics.set_index("model_id").loc[ids, z.metric_names].to_numpy()
    w = zoo.create(
        str(out),
        table,
        dict(z.layouts),
        z.checkpoint_epochs,
        z.metric_names,
        attrs={"subset_of": z.path, "subset_seed": seed},
        datasets=[z.dataset()],
        overwrite=True,
    )
    w.write(list(range(n)), z.weights(ids.tolist(), checkpoint=None), metrics.reshape(n, len(z.checkpoint_epochs), -1))
    return zoo.open(str(out))


def matmul_gflops() -> float:
    """float32 GEMM rate now, on the current threads (what share of a core this run gets)."""
    a, b = torch.randn(1024, 2048), torch.randn(2048, 2048)
    a @ b
    t = time.perf_counter()
    for _ in range(4):
        a @ b
    return 4 * 2 * 1024 * 2048 * 2048 / (time.perf_counter() - t) / 1e9


def timed(fn, *args) -> tuple[dict, Any]:
    """(wall/cpu seconds, load and matmul rate before it, result) of one call ``fn(*args)``."""
    rec = {"load_average_1m": os.getloadavg()[0], "matmul_gflops_before": round(matmul_gflops(), 1)}
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    rec.update(wall_s=round(time.perf_counter() - t, 2), cpu_s=round(time.process_time() - c, 2))
    return rec, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="diagnose,align,landscape")
    ap.add_argument("--sizes", default="1000,3000,10000", help="diagnose: samples = training models = N")
    ap.add_argument("--landscape-models", type=int, default=2000)
    ap.add_argument("--json", default=str(ROOT / "docs" / "bench-analysis-scale.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    z = big_zoo()
    out: dict = {
        "command": "python bench/analysis_scale.py " + " ".join(sys.argv[1:]),
        "training_zoo": "dwf-mlp-digits recipe, 2,500 seeds x 4 learning rates, 10 epochs: 10,000 real trained "
        "digits MLPs 64-32-32-10 (3,466 parameters); smaller zoos are seeded random subsets of it",
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "quiet_core_matmul_gflops": 191.6,
        },
        "cases": [],
    }
    path = Path(args.json)
    if path.exists():  # keep the cases of an earlier run that this one does not redo
        old = json.loads(path.read_text())
        out["cases"] = [c for c in old.get("cases", []) if c["case"] not in cases]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        if "diagnose" in cases:
            for n in [int(s) for s in args.sizes.split(",")]:
                train = subset_zoo(z, n, tmp_p / f"train{n}.zarr")
                samples = samples_zoo(train, n, tmp_p / f"samples{n}.zarr")
                rec, report = timed(diagnose, samples, train.path, tmp_p / f"diag{n}")
                rec.update(
                    case="diagnose",
                    samples=n,
                    train_models=n,
                    baseline_samples_each=report["methods"]["noise-0%"]["n"],
                    breakdown_s={k: round(v, 2) for k, v in report["seconds"].items()},
                    samples_nn_l2_mean=next(v for v in report["methods"].values() if v["kind"] == "samples")["nn_l2"][
                        "mean"
                    ],
                    train_nn_l2_median=report["train_nn_l2_median"],
                    command=f"zoo diagnose SAMPLES.zarr --train TRAIN{n}.zarr --out DIR",
                )
                if n == 10_000:
                    rec["target_s"], rec["target_met"] = TARGET_DIAGNOSE_10K_S, rec["wall_s"] <= TARGET_DIAGNOSE_10K_S
                print(json.dumps(rec), flush=True)
                out["cases"].append(rec)
                path.write_text(json.dumps(out, indent=1) + "\n")
                shutil.rmtree(tmp_p / f"diag{n}", ignore_errors=True)
        if "align" in cases:
            copy = tmp_p / "align.zarr"
            shutil.copytree(z.path, copy)
            za = zoo.open(str(copy))
            rec, (table, summary) = timed(align_zoo, za)
            g = summary["groups"][0]
            rec.update(
                case="align",
                models=int(len(table)),
                command=f"zoo align {BIG.relative_to(ROOT)} (on a copy)",
                mean_l2_before=g["mean_l2_before"],
                mean_l2_after=g["mean_l2_after"],
                barrier_reduction=g["barrier_reduction"],
            )
            print(json.dumps(rec), flush=True)
            out["cases"].append(rec)
            path.write_text(json.dumps(out, indent=1) + "\n")
        if "landscape" in cases:
            zl = subset_zoo(z, args.landscape_models, tmp_p / "landscape.zarr", seed=1)
            rec, df = timed(compute_landscape, zl)
            rec.update(
                case="landscape",
                models=int(df["train_loss"].notna().sum()),
                cells=int(len(df.attrs["cells"])),
                seed_pairs=int(len(df.attrs["pairs"])),
                breakdown_s={k: round(v, 2) for k, v in df.attrs["timings"].items()},
                command=f"zoo landscape LANDSCAPE{args.landscape_models}.zarr (default config)",
            )
            print(json.dumps(rec), flush=True)
            out["cases"].append(rec)
            path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
