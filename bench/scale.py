"""A 100,000-model zoo through the writer API, then read as a user would; optionally built by ``zoo build``.

Write: N models of the digits MLP layout (64-32-32-10, 3,466 parameters) with C=3 checkpoints, seeded
random weights and metrics, through ``zoo.create`` + ``ZooWriter.write`` one block at a time. Read, each
in a fresh process so nothing is cached in Python: ``zoo.open`` + ``Zoo.models``; random batches of 256
models through ``Zoo.weights`` (models/s; the OS page cache is warm from the write, as on a machine
that just built or read the zoo); ``zoo info`` wall time (the CLI, imports included). Files on disk per
model-checkpoint. Targets (issue 8): open+models <= 1 s, >= 20,000 models/s, <= 1 file per 64
model-checkpoints, zoo info <= 2 s.

``--train`` also builds a 100,000-model zoo with ``zoo build`` (small digits MLPs, a few epochs) and
reports its wall time (goal <= 30 min on this 2-core machine).

    .venv/bin/python bench/scale.py [--models 100000] [--out /tmp/scale.zarr] [--train] [--json docs/bench-scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ZOO = [sys.executable, "-c", "import sys; from zoo.commands.main import main; sys.exit(main())"]
TRAIN_RECIPE = [
    "recipe=default",
    "recipe.name=scale",
    "recipe.widths=[8,16]",
    "recipe.depths=[1]",  # 100,000 models
    "recipe.learning_rates=[0.03,0.1]",
    "recipe.batch_sizes=[64,128]",
    "recipe.weight_decays=[0.0,0.0001]",
    "recipe.seeds=6250",
    "recipe.epochs=3",
    "recipe.checkpoint_epochs=[0,1,3]",
    "progress=true",
]


def write_zoo(path: str, n: int, block: int) -> dict:
    """Write n models through the writer API; returns timings."""
    import zoo
    from zoo.arch import arch_spec, build_model
    from zoo.layout import layout_of

    spec = arch_spec("mlp", (64,), 10, 32, 2, "relu", False, 3)
    layout = layout_of(build_model(spec), spec)
    rng = np.random.default_rng(0)
    models = pd.DataFrame(
        {
            "width": 32,
            "depth": 2,
            "learning_rate": rng.choice([0.01, 0.03, 0.1], n),
            "seed": np.arange(n),
            "source": "bench/scale.py",
        }
    )
    t0 = time.perf_counter()
    w = zoo.create(
        path,
        models,
        {layout.key(): layout},
        [0, 5, 10],
        ["train_loss", "train_acc", "test_loss", "test_acc"],
        attrs={"producer": "bench/scale.py"},
        datasets=[zoo.load_dataset("digits")],
        overwrite=True,
        block_size=block,
    )
    created = time.perf_counter() - t0
    for lo in range(0, n, block):
        ids = list(range(lo, min(lo + block, n)))
        weights = rng.standard_normal((len(ids), 3, layout.size), dtype=np.float32) * 0.1
        metrics = rng.uniform(0, 1, (len(ids), 3, 4))
        w.write(ids, weights, metrics)
        if (lo // block) % 50 == 0:
            print(f"  wrote {lo + len(ids):,}/{n:,} models ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {"create_s": created, "write_s": time.perf_counter() - t0, "parameters": layout.size}


READ_SCRIPT = r"""
import json, sys, time
import numpy as np
t0 = time.perf_counter()
import zoo
t_import = time.perf_counter() - t0
t0 = time.perf_counter()
z = zoo.open(sys.argv[1])
df = z.models
t_models = time.perf_counter() - t0
assert len(df) == int(sys.argv[2]) and (df.status == "done").all()
rng = np.random.default_rng(1)
z.weights(rng.choice(len(df), 256, replace=False))  # first call pays lazy imports
times = []
for _ in range(int(sys.argv[3])):
    ids = np.sort(rng.choice(len(df), 256, replace=False))
    t0 = time.perf_counter()
    w = z.weights(ids)
    times.append(time.perf_counter() - t0)
    assert w.shape[0] == 256 and bool(w.isfinite().all())
print(json.dumps({"import_s": t_import, "open_models_s": t_models, "batch_s": times}))
"""


def count_files(path: str) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=100_000)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--out", default="/tmp/wszoo-scale.zarr")
    ap.add_argument("--train", action="store_true", help="also build a 100k-model zoo with zoo build")
    ap.add_argument("--json", default="docs/bench-scale.json", help="write the figures here")
    ap.add_argument("--reuse", action="store_true", help="read an existing --out zoo instead of writing it again")
    args = ap.parse_args()
    torch.set_num_threads(2)
    report: dict = {"models": args.models, "checkpoints": 3, "block_size": args.block}
    if args.reuse and os.path.exists(args.out):
        print(f"reusing {args.out} (write figures not measured in this run)", flush=True)
        report.update(write_s=float("nan"), parameters=3466)
    else:
        print(f"writing {args.models:,} models x 3 checkpoints to {args.out} ...", flush=True)
        report.update(write_zoo(args.out, args.models, args.block))
    files = count_files(args.out)
    report.update(
        files=files,
        model_checkpoints_per_file=args.models * 3 / files,
        bytes=sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.out) for f in fs),
    )
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", READ_SCRIPT, args.out, str(args.models), str(args.batches)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        for _ in range(3)
    ]
    report["open_models_s"] = min(r["open_models_s"] for r in runs)
    batch = float(np.median([t for r in runs for t in r["batch_s"]]))
    report["weights_models_per_s"] = 256 / batch
    info = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([*ZOO, "info", args.out], check=True, capture_output=True)
        info.append(time.perf_counter() - t0)
    report["zoo_info_s"] = min(info)
    if args.train:
        out = args.out.replace(".zarr", "-built.zarr")
        t0 = time.perf_counter()
        subprocess.run([*ZOO, "build", f"out={out}", "overwrite=true", *TRAIN_RECIPE], check=True)
        report["build_s"] = time.perf_counter() - t0
        import zoo

        z = zoo.open(out)
        df = z.models
        report.update(
            build_models=len(df),
            build_done=int((df.status == "done").sum()),
            build_test_acc_mean=float(df.test_acc.mean()),
            build_recipe=TRAIN_RECIPE,
        )
    targets = [
        ("zoo.open + Zoo.models", report["open_models_s"], "s", "<=", 1.0),
        ("Zoo.weights, random batches of 256", report["weights_models_per_s"], "models/s", ">=", 20_000),
        ("model-checkpoints per file", report["model_checkpoints_per_file"], "", ">=", 64),
        ("zoo info (CLI, imports included)", report["zoo_info_s"], "s", "<=", 2.0),
    ]
    if "build_s" in report:
        targets.append((f"zoo build of {report['build_models']:,} models", report["build_s"] / 60, "min", "<=", 30))
    print(
        f"\n{args.models:,} models, {report['parameters']} parameters, 3 checkpoints;"
        f" write {report['write_s']:.1f} s ({report['bytes'] / 1e9:.2f} GB, {files} files)"
    )
    for name, value, unit, op, goal in targets:
        ok = value <= goal if op == "<=" else value >= goal
        print(
            f"  {name:<40} {value:>10.3f} {unit:<9} target {op} {goal:<8} {'met' if ok else 'MISSED'}"
            f"  (ratio to target {value / goal:.2f})"
        )
    print("\nrerun: .venv/bin/python bench/scale.py" + "".join(f" {x}" for x in sys.argv[1:]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
