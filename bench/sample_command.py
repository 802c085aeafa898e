"""``zoo sample RUN -n 100 --metrics none`` as a command (issue 24 item 4: 100 whole ResNets in <= 10 s): CPU and
wall seconds of fresh processes, startup and writing the zoo included, for one or more checkouts side by side.

Each repetition runs every checkout once, in turn (interleaved, so a change in the machine's load hits all of
them alike), on one torch thread; CPU seconds are the child's user + system time (getrusage), wall seconds
include waiting for the cores, and the 1-minute load average is recorded before each run. With ``--cold`` the
first run of each checkout gets an empty dataset cache (``$WSZOO_CACHE``): what the first process after an
install pays. Writes ``--json`` and prints a markdown table.

Rerun (the figures in docs/generators-resnet.md; BASE is a copy of the code before, e.g.
``git archive b6c3449 | tar -x -C /tmp/base``):
    .venv/bin/python bench/sample_command.py --run /tmp/h27/runs-lr005/simplex --tree before=/tmp/base \\
        --tree after=. --reps 3 --cold --json docs/sample-command.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(tree: str, run_dir: str, n: int, out: str, cache: str | None) -> dict:
    """One ``zoo sample`` process from checkout ``tree``: wall and CPU seconds, load average before it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(tree).resolve())}
    if cache is not None:
        env["WSZOO_CACHE"] = cache
    argv = [sys.executable, "-m", "zoo.commands.main", "sample", run_dir, "-n", str(n), "--out", out]
    argv += ["--metrics", "none", "--overwrite", "--threads", "1"]
    load = round(os.getloadavg()[0], 2)
    r0, w0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    # cwd: ``python -m`` puts the working directory first on sys.path, before PYTHONPATH
    subprocess.run(argv, check=True, env=env, capture_output=True, cwd=Path(tree).resolve())
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"wall": round(time.perf_counter() - w0, 2), "cpu": round(cpu, 2), "load1": load}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="fitted run folder (zoo fit)")
    p.add_argument("--tree", action="append", required=True, help="LABEL=PATH of a checkout (repeatable)")
    p.add_argument("-n", type=int, default=100)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--cold", action="store_true", help="first run of each checkout with an empty dataset cache")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    trees = {k: str(Path(v).resolve()) for k, v in (t.split("=", 1) for t in args.tree)}
    args.run = str(Path(args.run).resolve())
    rows: dict[str, list[dict]] = {k: [] for k in trees}
    cold: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="sample-command-") as tmp:
        out = os.path.join(tmp, "samples.zarr")
        warm_cache = os.path.join(tmp, "cache")
        if args.cold:
            for label, tree in trees.items():
                cold[label] = run_once(tree, args.run, args.n, out, warm_cache)  # fills the cache for the warm runs
        for _ in range(args.reps):
            for label, tree in trees.items():
                rows[label].append(run_once(tree, args.run, args.n, out, warm_cache))
    command = f"zoo sample RUN -n {args.n} --out OUT --metrics none --threads 1"
    report = {"command": command, "run": args.run, "trees": trees, "runs": rows, "cold_cache": cold}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print("| checkout | CPU s, each run | median CPU s | wall s, each run | load average (1 min) before each |")
    print("|---|---|---|---|---|")
    for label, rs in rows.items():
        print(
            f"| {label} | {', '.join(str(r['cpu']) for r in rs)} | {statistics.median(r['cpu'] for r in rs):.2f} "
            f"| {', '.join(str(r['wall']) for r in rs)} | {', '.join(str(r['load1']) for r in rs)} |"
        )
    for label, r in cold.items():
        print(f"| {label}, empty dataset cache | {r['cpu']} | | {r['wall']} | {r['load1']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
