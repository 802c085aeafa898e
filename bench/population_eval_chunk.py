"""A population's checkpoint evaluation with the cache-sized chunk (today) vs the memory-bound chunk (before).

``PopulationModule.evaluate`` runs train and test split in chunks of samples. Before, a chunk was sized to the
build's memory bound alone (``spec.eval_memory_floats``), so a 64-CNN population on MNIST evaluated all 5,000
images in one forward of ~4 GB of activations; now on CPU a chunk's largest intermediate also fits
``zoo.forward.EVAL_CACHE_FLOATS``. Both chunkings of the same module are timed alternating round by round (same
load), and the metrics compared (float64 sums over other chunks: float noise only).

    .venv/bin/python bench/population_eval_chunk.py       # CNN, ResNet, MLP cases, 1 and 2 threads
    .venv/bin/python bench/population_eval_chunk.py --cases cnn-zoo-mnist --threads 1 --json /tmp/e.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from population import CASES, case_spec  # noqa: E402
from population_mlp_profile import bare_module  # noqa: E402

from zoo.app.memory import retain_freed_memory  # noqa: E402


def compare(case: str, threads: int, rounds: int) -> dict:
    """Median seconds of one evaluate() with each chunking, alternating; the metrics' largest difference."""
    torch.set_num_threads(threads)
    spec, task = case_spec(CASES[case], CASES[case][-1])
    module = bare_module(spec, task)
    chunks = {"memory_bound": module._eval_chunk, "cache": module._cpu_eval_chunk}
    times: dict[str, list[float]] = {k: [] for k in chunks}
    metrics = {}
    for r in range(rounds + 1):  # round 0 warms both up
        for kind, chunk in chunks.items():
            module._cpu_eval_chunk = chunk
            t = time.perf_counter()
            metrics[kind] = module.evaluate()
            if r:
                times[kind].append(time.perf_counter() - t)
    before, after = statistics.median(times["memory_bound"]), statistics.median(times["cache"])
    row = {
        "case": case,
        "threads": threads,
        "models": len(spec.init_states),
        "samples": len(task.X_train) + len(task.X_test),
        "chunk_memory_bound": chunks["memory_bound"],
        "chunk_cache": chunks["cache"],
        "evaluate_s_memory_bound": before,
        "evaluate_s_cache": after,
        "speedup": before / after,
        "max_abs_metric_diff": (metrics["memory_bound"] - metrics["cache"]).abs().max().item(),
    }
    print(
        f"[{case}] {threads} thread(s): chunk {chunks['memory_bound']} -> {chunks['cache']}: "
        f"{before:.3f} s -> {after:.3f} s, {before / after:.2f}x (metrics differ by {row['max_abs_metric_diff']:.1e})",
        flush=True,
    )
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = "cnn-bn,resnet,cnn-zoo-mnist,mlp-w128"
    ap.add_argument("--cases", default=default, help=f"comma-separated, of {','.join(CASES)}")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default="docs/bench-population-eval-chunk.json")
    a = ap.parse_args()
    names = [n for n in a.cases.split(",") if n]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        ap.error(f"unknown case {unknown[0]!r}; choose from {', '.join(CASES)}")
    retain_freed_memory()  # as train_population does
    rows = [compare(n, int(t), a.rounds) for t in a.threads.split(",") for n in names]
    out = {
        "command": "python " + " ".join(sys.argv),
        "torch": torch.__version__,
        "load_average": list(os.getloadavg()),
        "rows": rows,
    }
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.json}; rerun: .venv/bin/python bench/population_eval_chunk.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
