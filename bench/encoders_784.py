"""Encoders on 784-input networks: seconds per epoch, peak memory and Kendall tau of every encoder on one zoo
of MLPs 784-32-32-10, with the graph encoder before (one node per input pixel, ``input_nodes=null``) and after
(at most 64 input nodes, the default) in the same run, on the same machine and zoo.

The zoo's data: scikit-learn's 8x8 digits upsampled (bilinear) to 28x28 = 784 features, a stratified 80/20
split (real images at MNIST's input size; no MNIST download). The zoo: ``recipe=encoders-mlp-digits`` on that
file with width 32 only, 3 learning rates x 2 batch sizes x 2 weight decays x 40 seeds = 480 models, 5 epochs.
Each encoder trains in its own process (one torch thread) so its peak resident memory (``ru_maxrss``, which
includes Python, torch and Lightning: compare with the mlp row) is its own. Seconds per epoch are the fit's
wall time (training + validation) over its epochs.

    .venv/bin/python bench/encoders_784.py                      # writes docs/bench-encoders-784.json
    .venv/bin/python bench/encoders_784.py --epochs 1 --encoders graph-per-input graph --json /tmp/g.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zoo.errors import ZooError  # noqa: E402

# name: `zoo train` overrides; graph-per-input is the graph encoder as it was (a node per input pixel)
CASES = {
    "mlp": ["encoder=mlp"],
    "statnn": ["encoder=statnn"],
    "transformer": ["encoder=transformer"],
    "nfn": ["encoder=nfn"],
    "graph-per-input": ["encoder=graph", "encoder.input_nodes=null"],
    "graph": ["encoder=graph"],
}
RECIPE = [
    "recipe=encoders-mlp-digits",
    "recipe.widths=[32]",
    "recipe.learning_rates=[0.005,0.02,0.1]",
    "recipe.batch_sizes=[32,128]",
    "recipe.weight_decays=[0.0,0.001]",
    "recipe.seeds=40",
    "recipe.epochs=5",
    "recipe.checkpoint_epochs=[0,1,5]",
]


def make_dataset(path: Path) -> None:
    """digits upsampled to 28x28 (784 features in [0, 1]) as an .npz with a stratified 80/20 split."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    X = x.reshape(len(x), 784).numpy()
    X_tr, X_te, y_tr, y_te = train_test_split(X, d.target, test_size=0.2, stratify=d.target, random_state=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, X_train=X_tr, y_train=y_tr, X_test=X_te, y_test=y_te)


def ensure_zoo(zoo_path: Path, data: Path) -> float | None:
    """Build the 480-model zoo when missing (one thread); returns the build seconds."""
    if zoo_path.exists():
        return None
    import zoo
    from zoo.app.config import compose

    if not data.exists():
        make_dataset(data)
    t0 = time.time()
    over = [*RECIPE, f"recipe.dataset={data.resolve()}", f"out={zoo_path}", "progress=false", "threads=1"]
    zoo.build(compose("build", over))
    return time.time() - t0


def one(zoo_path: str, case: str, epochs: int, seed: int, out: str) -> dict:
    """Train one case in this process; its figures (peak RSS of this process included)."""
    import torch

    from wsl.train import train
    from zoo.app.config import compose

    torch.set_num_threads(1)
    over = [
        f"zoo={zoo_path}",
        *CASES[case],
        f"seed={seed}",
        f"out={out}",
        "overwrite=true",  # a rerun of the bench replaces its own runs
        f"trainer.max_epochs={epochs}",
        "trainer.enable_progress_bar=false",
        "threads=1",
    ]
    s = train(compose("train", over))
    return {
        "case": case,
        "overrides": CASES[case],
        "seconds_per_epoch": s["fit_seconds"] / epochs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "kendall_tau": s["test"]["kendall_tau"],
        "r2": s["test"]["r2"],
        "best_val": s["best_val"],
        "parameters": s["parameters"],
        "epochs": epochs,
        "train_models": s["splits"]["train"]["models"],
    }


def graph_sizes(zoo_path: str) -> dict:
    """Nodes and edges per model of the graph encoder, per input_nodes setting."""
    from wsl.data import WeightDataModule
    from wsl.encoders import build_encoder

    dm = WeightDataModule(zoo_path)
    dm.setup()
    assert dm.space is not None
    out = {}
    for name, input_nodes in (("graph-per-input", None), ("graph", 64)):
        enc = build_encoder("graph", dm.space, 1, input_nodes=input_nodes)
        nodes, edges = enc.size()
        out[name] = {"nodes": nodes, "edges": edges, "estimated_activation_gib_bs64": enc.training_bytes(64) / 2**30}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zoo", default="data/zoos/mlp784-480.zarr")
    ap.add_argument("--data", default="data/datasets/digits28.npz", help="the 784-feature .npz (written if missing)")
    ap.add_argument("--encoders", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default="data/runs/bench-encoders-784")
    ap.add_argument("--json", default="docs/bench-encoders-784.json")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child mode: train one case, print JSON
    a = ap.parse_args()
    if a.one:
        print("RESULT " + json.dumps(one(a.zoo, a.one, a.epochs, a.seed, str(Path(a.runs) / a.one))), flush=True)
        return 0
    cmd = "bench/encoders_784.py " + " ".join(sys.argv[1:])
    build_s = ensure_zoo(Path(a.zoo), Path(a.data))
    out: dict = {"command": cmd.strip(), "zoo": a.zoo, "build_seconds": build_s, "epochs": a.epochs, "cases": {}}
    out["graph_sizes"] = graph_sizes(a.zoo)
    out["load_start"] = os.getloadavg()[0]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for case in a.encoders:
        argv = [sys.executable, __file__, "--one", case, "--zoo", a.zoo, "--epochs", str(a.epochs)]
        argv += ["--seed", str(a.seed), "--runs", a.runs]
        p = subprocess.run(argv, env=env, capture_output=True, text=True)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if p.returncode or not lines:
            print(f"{case}: failed\n{p.stderr[-2000:]}", file=sys.stderr)
            return 1
        r = json.loads(lines[-1].removeprefix("RESULT "))
        r["warning"] = next((ln for ln in p.stderr.splitlines() if "warning:" in ln), None)
        out["cases"][case] = r
        print(
            f"{case:>16}: {r['seconds_per_epoch']:6.1f} s/epoch  peak RSS {r['peak_rss_mb']:6.0f} MB"
            f"  tau {r['kendall_tau']:.3f}  ({r['train_models']} train models, {a.epochs} epochs)",
            flush=True,
        )
    c = out["cases"]
    if "graph" in c and "graph-per-input" in c:
        out["graph_speedup"] = c["graph-per-input"]["seconds_per_epoch"] / c["graph"]["seconds_per_epoch"]
        out["graph_memory_ratio"] = c["graph-per-input"]["peak_rss_mb"] / c["graph"]["peak_rss_mb"]
        print(
            f"graph encoder, input_nodes 64 vs one node per input: {out['graph_speedup']:.1f}x faster per epoch,"
            f" {out['graph_memory_ratio']:.1f}x less peak memory"
        )
    out["load_end"] = os.getloadavg()[0]
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.json}; rerun: .venv/bin/python {cmd.strip()}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ZooError as e:
        sys.exit(f"{Path(__file__).name}: {e}")
