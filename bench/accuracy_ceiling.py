"""How high can any encoder's Kendall tau of test accuracy go on a zoo? The target itself is noisy: a model's test
accuracy is measured on a finite test set, so even a predictor that knew every model's true accuracy would not
rank the measured ones perfectly. Split-half estimate: each model's final checkpoint is evaluated on two disjoint
stratified halves of the test split (``--halvings`` random halvings); the agreement of the two halves measures the
measurement noise, and Spearman-Brown lifts it to the full test set:

    r_half = Pearson r of (acc on half A, acc on half B)       over the zoo's models
    rel    = 2 r_half / (1 + r_half)                           reliability of the full-test accuracy
    tau_oracle ~ (2 / pi) * arcsin(sqrt(rel))                  Kendall tau of truth vs measurement (normal scores)

The last step assumes bivariate-normal scores, which the bimodal, tied near-chance accuracies of a Small-CNN-Zoo
break: read tau_oracle as an estimate. tau_half is measured as such: the tau between two independent test sets of
half the size, a floor for what a predictor of true accuracy scores against the full test set (less noisy).

    .venv/bin/python bench/accuracy_ceiling.py --zoo data/zoos/cnn-zoo-digits.zarr \
        --json docs/accuracy-ceiling-cnn-zoo-digits.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, pearsonr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import zoo  # noqa: E402
from zoo.evaluate import evaluate  # noqa: E402


def stratified_halves(y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint index sets of the test labels ``y``, each holding half of every class (odd leftovers alternate)."""
    a, b = [], []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        half = (len(idx) + (len(a) % 2 if len(idx) % 2 else 0)) // 2
        a.append(idx[:half])
        b.append(idx[half:])
    return torch.cat(a), torch.cat(b)


def final_weights(z, ids: np.ndarray) -> list[tuple[object, np.ndarray, torch.Tensor]]:
    """Each model's final-checkpoint weights, read once: (layout, positions in ``ids``, weights) per layout."""
    m = z.models.set_index("model_id").loc[ids]
    return [
        (z.layouts[key], rows, z.weights(ids[rows].tolist(), checkpoint=-1))
        for key, rows in m.groupby("layout").indices.items()
    ]


def accuracies(groups: list[tuple[object, np.ndarray, torch.Tensor]], n: int, dataset) -> np.ndarray:
    """Test accuracy of the ``n`` models of ``groups`` on ``dataset``'s test split, in the order of their ids."""
    out = np.empty(n)
    for layout, rows, weights in groups:
        out[rows] = evaluate(layout, weights, dataset)["acc"].numpy()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", required=True)
    ap.add_argument("--halvings", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    z = zoo.open(args.zoo)
    d = z.dataset()
    m = z.models
    ids = m.loc[m["status"] == "done", "model_id"].to_numpy()
    groups = final_weights(z, ids)
    full = accuracies(groups, len(ids), d)
    stored = m.set_index("model_id").loc[ids, "test_acc"].to_numpy()
    gap = float(np.abs(full - stored).max())
    gen = torch.Generator().manual_seed(args.seed)
    rows = []
    for h in range(args.halvings):
        ia, ib = stratified_halves(d.y_test, gen)
        half = {
            k: accuracies(groups, len(ids), dataclasses.replace(d, X_test=d.X_test[i], y_test=d.y_test[i]))
            for k, i in (("a", ia), ("b", ib))
        }
        r = float(pearsonr(half["a"], half["b"]).statistic)
        rel = 2 * r / (1 + r)
        rows.append(
            {
                "halving": h,
                "tau_half": float(kendalltau(half["a"], half["b"]).statistic),
                "r_half": r,
                "reliability_full": rel,
                "tau_oracle_estimate": 2 / math.pi * math.asin(math.sqrt(max(rel, 0.0))),
            }
        )
        last = rows[-1]
        print(f"halving {h}: tau between halves {last['tau_half']:.3f}, r {r:.3f}")
    summary = {
        k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows]))}
        for k in ("tau_half", "r_half", "reliability_full", "tau_oracle_estimate")
    }
    result = {
        "command": "python " + " ".join(sys.argv),
        "zoo": args.zoo,
        "models": int(len(ids)),
        "test_images": int(len(d.y_test)),
        "max_abs_diff_vs_stored_test_acc": gap,
        "seconds": round(time.time() - start, 1),
        "summary": summary,
        "halvings": rows,
    }
    print(
        f"{len(ids)} models, {len(d.y_test)} test images (recomputed accuracy within {gap:.1e} of the stored one):"
        f" tau between two half test sets {summary['tau_half']['mean']:.3f} +- {summary['tau_half']['std']:.3f};"
        f" estimated oracle tau on the full test set {summary['tau_oracle_estimate']['mean']:.3f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"rerun: {result['command']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
