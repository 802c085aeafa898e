"""What a fresh process pays: CPU seconds (user + sys) of ``import torch``, ``zoo --help``, ``zoo info ZOO`` and a
saved generator's ``generators.load(run).sample(100)``, each in a new interpreter, the minimum and median of
``--reps`` runs (the minimum is the figure on a busy machine: other processes only add to it).

    OMP_NUM_THREADS=1 .venv/bin/python bench/startup.py --zoo data/zoos/tiny.zarr --run data/runs/dwf-tiny \
        --json docs/startup.json --md docs/startup.md

``--root`` measures another checkout of the source (e.g. ``git archive COMMIT | tar -x -C /tmp/base``) with this
interpreter, for before/after figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cases(zoo: str, run: str | None) -> dict[str, str]:
    """name -> the Python code a fresh interpreter runs."""
    out = {
        "import torch": "import torch",
        "zoo --help": "from zoo.commands.main import main\nmain(['--help'])",
        "zoo info ZOO": f"from zoo.commands.main import main\nassert main(['info', {zoo!r}]) == 0",
    }
    if run:
        out["generators.load(run).sample(100)"] = (
            f"import generators\nassert len(generators.load({run!r}).sample(100)) == 100"
        )
    return out


def cpu_seconds(code: str, root: Path) -> tuple[float, float, list[str]]:
    """(CPU seconds, wall seconds, heavy packages loaded) of ``python -c code`` in a fresh process."""
    heavy = {"torch", "lightning", "scipy", "torchdiffeq", "pandas", "zarr"}
    probe = f"\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy!r}))"
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code + probe], capture_output=True, text=True, env=env, cwd=root)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        raise SystemExit(f"{code!r} failed:\n{r.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, eval(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", required=True, help="a zoo for zoo info")
    p.add_argument("--run", default=None, help="a saved generator run folder (dwf) for the sampling case")
    p.add_argument("--root", default=str(ROOT), help="the source tree to measure (default: this checkout)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", default=None)
    p.add_argument("--md", default=None)
    args = p.parse_args()
    root = Path(args.root)
    rows = {}
    for name, code in cases(str(Path(args.zoo).resolve()), args.run and str(Path(args.run).resolve())).items():
        runs = [cpu_seconds(code, root) for _ in range(args.reps)]
        cpu = [r[0] for r in runs]
        rows[name] = {
            "cpu_min_s": round(min(cpu), 3),
            "cpu_median_s": round(statistics.median(cpu), 3),
            "wall_median_s": round(statistics.median(r[1] for r in runs), 3),
            "loaded": runs[-1][2],
        }
        print(f"{name:<36} CPU min {min(cpu):.2f} s, median {statistics.median(cpu):.2f} s; loads {runs[-1][2]}")
    torch_min = rows["import torch"]["cpu_min_s"]
    for row in rows.values():
        row["cpu_min_above_torch_s"] = round(row["cpu_min_s"] - torch_min, 3)
    record = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python bench/startup.py " + " ".join(sys.argv[1:]),
        "root": str(root),
        "reps": args.reps,
        "load_average": os.getloadavg(),
        "cases": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    if args.md:
        lines = [
            "| case | CPU s (min) | CPU s (median) | above `import torch` (min) | heavy packages loaded |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| `{k}` | {v['cpu_min_s']:.2f} | {v['cpu_median_s']:.2f} | {v['cpu_min_above_torch_s']:+.2f} |"
            f" {', '.join(v['loaded']) or 'none'} |"
            for k, v in rows.items()
        ]
        Path(args.md).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
