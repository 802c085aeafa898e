"""Cost of landscape metrics against training, and Hutchinson's error against the number of probes.

Builds the named recipe exactly as ``zoo build recipe=<name>`` would (its full grid; any build overrides
given on the command line are applied, printed and stored), timed, on one thread; runs ``compute_landscape``
on it (timed per metric), then for a few of its models compares Hutchinson trace estimates with the exact
trace (all basis vectors). Prints seconds per model for each metric next to seconds of training per model,
the ratio of all metrics to training, and the grid it ran; JSON in docs/bench-landscape-<recipe>.json.

Rerun:  .venv/bin/python bench/landscape.py --recipe phase-mlp-digits    (also phase-mlp-modadd, phase-cnn-digits)
        .venv/bin/python bench/landscape.py --recipe phase-mlp-digits recipe.epochs=5 --json /tmp/l.json  (smaller)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.app.config import compose  # noqa: E402
from zoo.commands.landscape import parse_overrides  # noqa: E402
from zoo.landscape.compute import analysis_indices, compute_landscape, resolve_config  # noqa: E402
from zoo.landscape.functional import FunctionalNet  # noqa: E402
from zoo.landscape.hessian import batched_hvp, exact_trace, hutchinson_trace  # noqa: E402
from zoo.training.build import build  # noqa: E402

GRID_KEYS = (
    "dataset",
    "arch",
    "widths",
    "depths",
    "learning_rates",
    "batch_sizes",
    "weight_decays",
    "seeds",
    "epochs",
    "checkpoint_epochs",
    "optimizer",
)


def hutchinson_error(z, cfg: dict, n_models: int, probe_counts: list[int], repeats: int) -> dict:
    """Mean |estimate - exact| / |exact| over models and repeats, per probe count (smallest layout)."""
    models = z.models[z.models["status"] == "done"]
    key = min(models["layout"].unique(), key=lambda k: z.layouts[k].size)  # smallest: exact trace is P HVPs
    ids = models[models["layout"] == key]["model_id"].astype(int).tolist()[:n_models]
    task = z.dataset()
    idx = analysis_indices(len(task.X_train), int(cfg["batches"]), int(cfg["batch_size"]), int(cfg["seed"])).reshape(-1)
    x, y = task.X_train[idx], task.y_train[idx]
    net = FunctionalNet.from_layout(z.layouts[key])
    theta, bufs = net.split(z.weights(ids))
    hvp = batched_hvp(net.loss_fn(task.kind), in_dims=(0, None, None))
    t0 = time.perf_counter()
    exact = exact_trace(hvp, theta, (bufs, x, y))
    t_exact = time.perf_counter() - t0
    most = max(probe_counts) * repeats
    samples = hutchinson_trace(
        hvp, theta, (bufs, x, y), most, torch.Generator().manual_seed(7), return_samples=True, chunk=64
    )
    out = {
        "layout": key,
        "parameters": net.num_params,
        "models": len(ids),
        "exact_trace": exact.tolist(),
        "exact_seconds": t_exact,
        "relative_error": {},
    }
    for p in probe_counts:
        est = samples[: p * repeats].view(repeats, p, -1).mean(1)  # [repeats, n]
        out["relative_error"][p] = float(((est - exact).abs() / exact.abs()).mean())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="phase-mlp-digits")
    ap.add_argument("--keep", default=None, help="build into this path and keep it (default: a temp folder)")
    ap.add_argument("--landscape", nargs="*", default=[], help="landscape overrides key=value")
    ap.add_argument("--probes", default="1,4,16,64,256")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--json", default=None, help="where to write the JSON (default docs/bench-landscape-<recipe>.json)")
    ap.add_argument("overrides", nargs="*", help="build overrides (default: none, the recipe as it is)")
    a = ap.parse_args()
    overrides = a.overrides
    tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench-landscape-")) / "zoo.zarr"
    # both sides single-threaded (the shared CPU makes multi-threaded torch erratic); metrics timed separately
    cfg = compose(
        "build",
        [
            f"recipe={a.recipe}",
            f"out={tmp}",
            "progress=false",
            "overwrite=true",
            "threads=1",
            "recipe.landscape.enabled=false",
            *overrides,
        ],
    )
    t0 = time.perf_counter()
    z = build(cfg)
    t_train = time.perf_counter() - t0
    n = int((z.models["status"] == "done").sum())
    lcfg = resolve_config(parse_overrides(a.landscape))
    t0 = time.perf_counter()
    df = compute_landscape(z, lcfg)
    t_land = time.perf_counter() - t0
    times = df.attrs["timings"]
    grid = {k: cfg["recipe"].get(k) for k in GRID_KEYS}
    print(
        f"zoo: recipe {a.recipe}{' with ' + ' '.join(overrides) if overrides else ' as it is'}: {n} trained models,"
        f" {len(z.layouts)} layouts; grid {json.dumps(grid)}"
    )
    print(f"training: {t_train:.1f} s total, {t_train / n:.3f} s/model")
    print(f"{'metric':<26}{'s/model':>10}{'x training':>12}")
    for k, v in times.items():
        print(f"{k:<26}{v / n:>10.3f}{v / t_train:>12.3f}")
    print(f"{'all landscape metrics':<26}{t_land / n:>10.3f}{t_land / t_train:>12.3f}   (target <= 1.0)")
    probe_counts = [int(p) for p in a.probes.split(",")]
    err = hutchinson_error(z, lcfg, 4, probe_counts, a.repeats)
    print(
        f"Hutchinson vs exact trace ({err['models']} models of {err['layout']}, {err['parameters']} parameters,"
        f" exact trace by {err['parameters']} basis HVPs in {err['exact_seconds']:.1f} s):"
    )
    for p, e in err["relative_error"].items():
        print(f"  probes {p:>4}: mean relative error {e:.4f}   (x sqrt(probes) = {e * math.sqrt(p):.3f})")
    print("phases:", df["phase"].value_counts().to_dict())
    cmd = "bench/landscape.py" + "".join(f" {x}" for x in sys.argv[1:])
    out = Path(a.json or f"docs/bench-landscape-{a.recipe}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": f".venv/bin/python {cmd}",
                "recipe": a.recipe,
                "overrides": overrides,
                "grid": grid,
                "models": n,
                "train_s": t_train,
                "landscape_s": t_land,
                "landscape_over_training": t_land / t_train,
                "timings_s": times,
                "hutchinson_relative_error": err["relative_error"],
                "phases": {str(k): int(v) for k, v in df["phase"].value_counts().items()},
                "load_average": os.getloadavg()[0],
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out}; rerun: .venv/bin/python {cmd}")
    if not a.keep:
        shutil.rmtree(tmp.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
