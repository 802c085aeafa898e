"""Speed of the batched evaluator: models per second of ``zoo.evaluate`` against one ``nn.Module`` at a time.

Random-initialized members of a digits MLP layout and a BatchNorm CNN layout (the forward cost does not
depend on the values), evaluated on the test split; the one-at-a-time baseline is what callers did before
(rebuild the module, load the state dict, run the split) on a subset, extrapolated per model.

Rerun:  .venv/bin/python bench/evaluate.py [--models 1000] [--threads 1]   (writes docs/bench-evaluate.json)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402
from zoo.arch import arch_spec, build_model  # noqa: E402
from zoo.layout import layout_of  # noqa: E402


def population(spec: dict, n: int) -> tuple[zoo.Layout, torch.Tensor]:
    """n differently seeded members of one architecture as (layout, flat weights [n, P])."""
    states = []
    for i in range(n):
        torch.manual_seed(i)
        states.append(build_model(spec).state_dict())
    layout = layout_of(build_model(spec), spec)
    return layout, layout.flatten_batch({k: torch.stack([s[k] for s in states]) for k in states[0]})


def best_of(fn, repeats: int = 3) -> float:
    """Fastest of a few runs (the machine is shared: the minimum is the least disturbed)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def one_at_a_time(layout: zoo.Layout, weights: torch.Tensor, data: zoo.Dataset) -> None:
    for w in weights:
        m = layout.build()
        m.load_state_dict(layout.unflatten(w))
        with torch.no_grad():
            out = m.eval()(data.X_test)
        F.cross_entropy(out, data.y_test)
        (out.argmax(1) == data.y_test).double().mean()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--baseline-models", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="docs/bench-evaluate.json")
    args = ap.parse_args()
    rows = []
    torch.set_num_threads(args.threads)
    cases = [
        ("digits mlp w32 d1", "digits", dict(name="mlp", width=32, depth=1)),
        ("digits mlp w128 d3", "digits", dict(name="mlp", width=128, depth=3)),
        ("digits-image cnn-bn w8 d2", "digits-image", dict(name="cnn", width=8, depth=2, batchnorm=True)),
    ]
    print(f"torch {torch.__version__}, {args.threads} thread(s); test split; models/s (best of 3)")
    for label, dataset, kw in cases:
        data = zoo.load_dataset(dataset)
        spec = arch_spec(input_shape=data.input_shape, num_outputs=data.num_outputs, **kw)
        n = args.models if kw["name"] == "mlp" else max(args.models // 4, 1)
        layout, W = population(spec, n)
        zoo.evaluate(layout, W[:8], data)  # warm-up
        t = best_of(lambda: zoo.evaluate(layout, W, data))  # noqa: B023 (timed now, in this iteration)
        b = best_of(lambda: one_at_a_time(layout, W[: args.baseline_models], data))  # noqa: B023
        per_b = b / args.baseline_models
        print(
            f"{label:28s} n={n:5d}  evaluate {n / t:9.0f} models/s   one module at a time {1 / per_b:7.0f} models/s"
            f"   speed-up {per_b * n / t:5.1f}x"
        )
        rows.append(
            {
                "case": label,
                "models": n,
                "evaluate_models_per_s": n / t,
                "one_at_a_time_models_per_s": 1 / per_b,
                "one_at_a_time_timed_models": args.baseline_models,
                "speedup": per_b * n / t,
            }
        )
    cmd = "bench/evaluate.py" + "".join(f" {x}" for x in sys.argv[1:])
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps(
            {
                "command": f".venv/bin/python {cmd}",
                "threads": args.threads,
                "load_average": os.getloadavg()[0],
                "split": "test",
                "cases": rows,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {args.json}; rerun: .venv/bin/python {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
