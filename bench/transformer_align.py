"""Loss barriers of transformer zoos before and after alignment: weight vs activation matching (issue 23 item 3).

For each zoo (one layout), every model in turn up to ``--references`` is the reference and every other model is
aligned to it by each method; the barrier is ``zoo.rebasin.loss_barriers`` on the straight path (training split,
11 points, the loss minus the chord between the endpoints), as ``zoo align`` reports it. Methods:

- ``raw``: no alignment;
- ``weights``: weight matching (``match_population``, what ``zoo align`` does by default);
- ``activations``: activation matching on 512 seeded training inputs (``activation_matching``: ``--method
  activations``);
- ``weights+rot`` / ``activations+rot``: the same, then per head an orthogonal map R of the query/key dims
  (q -> R q, k -> R k keeps every q.k) and one of the value dims (v -> R v, o -> o R^T), each the orthogonal
  Procrustes solution bringing the model's [W_q | b_q | W_k | b_k] (resp. [W_v | b_v | W_o^T]) rows onto the
  reference's: a continuous symmetry of attention that permutations cannot reach (an ablation, not in zoo align).

Also the training accuracy along the path (mean over pairs) and the matched-unit correlation of each group.

    PYTHONPATH=. .venv/bin/python bench/transformer_align.py /tmp/h34/vit64.zarr --name vit64 --json out.json

``matched_correlation_activations``: per group, the mean over its feature sites and matched units of the
correlation with the reference's unit after activation matching (1 = the same features up to permutation).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import zoo
from zoo.evaluate import evaluate
from zoo.rebasin import activation_matching, activation_similarity, match_population, permute_flat, spec_for_layout
from zoo.rebasin.report import loss_barriers

METHODS = ("raw", "weights", "activations", "weights+rot", "activations+rot")
STEPS = 11


def rotate_heads(layout, spec, state: dict, ref: dict) -> dict:
    """The per-head orthogonal Procrustes maps of q/k and v/o dims applied to ``state`` (module docstring)."""
    s = {k: v.clone().double() for k, v in state.items()}
    r = {k: v.double() for k, v in ref.items()}
    heads = next(iter(spec.heads.values()))[1]
    blocks = sorted({k.split(".attn.")[0] for k in ref if ".attn." in k})
    for b in blocks:
        a = b + ".attn."
        d = s[a + "q.weight"].shape[0] // heads
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)

            def rows(t, kind, a=a, sl=sl):
                if kind == "qk":
                    parts = [t[a + "q.weight"][sl], t[a + "q.bias"][sl, None], t[a + "k.weight"][sl]]
                    return torch.cat(parts + [t[a + "k.bias"][sl, None]], 1)
                return torch.cat([t[a + "v.weight"][sl], t[a + "v.bias"][sl, None], t[a + "o.weight"][:, sl].T], 1)

            for kind in ("qk", "vo"):
                U, _, Vh = torch.linalg.svd(rows(r, kind) @ rows(s, kind).T)
                R = U @ Vh
                for n in ("q", "k") if kind == "qk" else ("v",):
                    s[a + n + ".weight"][sl] = R @ s[a + n + ".weight"][sl]
                    s[a + n + ".bias"][sl] = R @ s[a + n + ".bias"][sl]
                if kind == "vo":
                    s[a + "o.weight"][:, sl] = s[a + "o.weight"][:, sl] @ R.T
    return {k: v.to(state[k].dtype) for k, v in s.items()}


def run(path: str, references: int, samples: int) -> dict:
    z = zoo.open(path)
    ((key, layout),) = z.layouts.items()
    ids = z.models.model_id.tolist()
    W = z.weights(ids, checkpoint=-1)
    ds = z.dataset()
    spec = spec_for_layout(layout)
    module = layout.build()
    X = ds.X_train[torch.randperm(len(ds.X_train), generator=torch.Generator().manual_seed(0))[:samples]]
    pairs = {m: [] for m in METHODS}
    acc_path = {m: [] for m in METHODS}
    loss_path = {m: [] for m in METHODS}
    corr: dict[str, list] = {}
    seconds = {m: 0.0 for m in METHODS}
    for r in ids[:references]:
        others = [i for i in ids if i != r]
        ref = layout.unflatten(W[r])
        stack = layout.unflatten_batch(W[others])
        ends = {"raw": W[others]}
        t = time.process_time()
        ends["weights"] = permute_flat(spec, layout, W[others], match_population(spec, ref, stack).perms)
        seconds["weights"] += time.process_time() - t
        t = time.process_time()
        res = activation_matching(spec, module, ref, stack, X)
        ends["activations"] = permute_flat(spec, layout, W[others], res.perms)
        seconds["activations"] += time.process_time() - t
        for base in ("weights", "activations"):
            t = time.process_time()
            rot = [layout.flatten(rotate_heads(layout, spec, layout.unflatten(w), ref)) for w in ends[base]]
            ends[base + "+rot"] = torch.stack(rot)
            seconds[base + "+rot"] += time.process_time() - t  # the rotation alone
        for j in range(len(others)):
            sim = activation_similarity(spec, module, ref, layout.unflatten(ends["activations"][j]), X)
            for g, A in sim.items():
                corr.setdefault(g, []).append(float(A.diagonal().mean()))
        allends = torch.cat([ends[m] for m in METHODS])
        out = loss_barriers(layout, W[r : r + 1].expand_as(allends), allends, ds, STEPS)
        n = len(others)
        ts = np.linspace(0, 1, STEPS)
        path_w = torch.stack([(1 - t) * W[r] + t * allends for t in ts], 1).reshape(-1, W.shape[1])
        acc = evaluate(layout, path_w, ds, "train")["acc"].view(len(allends), STEPS)
        for k, m in enumerate(METHODS):
            sl = slice(k * n, (k + 1) * n)
            for j, o in enumerate(others):
                pairs[m].append(
                    {
                        "reference": r,
                        "model": o,
                        "barrier": float(out["barrier"][sl][j]),
                        "l2": float((ends[m][j] - W[r]).norm()),
                    }
                )
            loss_path[m] += out["losses"][sl].tolist()
            acc_path[m] += acc[sl].tolist()
    summary = {}
    for m in METHODS:
        b = np.array([p["barrier"] for p in pairs[m]])
        summary[m] = {
            "mean_barrier": float(b.mean()),
            "sem_barrier": float(b.std(ddof=1) / np.sqrt(len(b))) if len(b) > 1 else None,
            "mean_l2": float(np.mean([p["l2"] for p in pairs[m]])),
            "mid_train_acc": float(np.mean([a[STEPS // 2] for a in acc_path[m]])),
            "cpu_seconds_matching": seconds[m],
        }
    return {
        "zoo": path,
        "layout": key,
        "arch": layout.arch,
        "models": len(ids),
        "references": min(references, len(ids)),
        "pairs": len(pairs["raw"]),
        "matching_samples": samples,
        "train_acc": z.models["train_acc"].round(4).tolist() if "train_acc" in z.models else None,
        "test_acc": z.models["test_acc"].round(4).tolist() if "test_acc" in z.models else None,
        "summary": summary,
        "matched_correlation_activations": {g: float(np.mean(v)) for g, v in corr.items()},
        "mean_loss_path": {m: np.mean(loss_path[m], 0).tolist() for m in METHODS},
        "mean_acc_path": {m: np.mean(acc_path[m], 0).tolist() for m in METHODS},
        "pairs_detail": pairs,
    }


def plot(doc: dict, out: str) -> None:
    """Mean training loss and accuracy along the path per method, one column per zoo."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["zoos"])
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 5.6), squeeze=False)
    ts = np.linspace(0, 1, STEPS)
    styles = {"raw": ("k", "-"), "weights": ("C0", "-"), "activations": ("C3", "-")}
    styles |= {"weights+rot": ("C0", ":"), "activations+rot": ("C3", ":")}
    for j, name in enumerate(names):
        res = doc["zoos"][name]
        for m, (c, ls) in styles.items():
            b = res["summary"][m]["mean_barrier"]
            axes[0, j].plot(ts, res["mean_loss_path"][m], color=c, ls=ls, label=f"{m} ({b:.2f})")
            axes[1, j].plot(ts, res["mean_acc_path"][m], color=c, ls=ls, label=m)
        axes[0, j].set_title(f"{name}: width {res['arch']['width']}, {res['pairs']} pairs", fontsize=9)
        axes[0, j].legend(fontsize=6, title="mean barrier", title_fontsize=6)
        axes[1, j].set_xlabel("t (0: reference, 1: aligned model)")
    axes[0, 0].set_ylabel("training loss")
    axes[1, 0].set_ylabel("training accuracy")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("zoos", nargs="*")
    p.add_argument("--name", nargs="+", help="one name per zoo (default: the path)")
    p.add_argument("--references", type=int, default=2, help="models used in turn as the reference")
    p.add_argument("--samples", type=int, default=512, help="training inputs for activation matching")
    p.add_argument("--json", default=None, help="merge the results into this JSON file under each name")
    p.add_argument("--plot", default=None, help="only draw this PNG from --json's results (no zoo is read)")
    a = p.parse_args()
    if a.plot:
        plot(json.loads(Path(a.json).read_text()), a.plot)
        return
    torch.set_num_threads(1)
    names = a.name or a.zoos
    doc = json.loads(Path(a.json).read_text()) if a.json and Path(a.json).exists() else {}
    for name, path in zip(names, a.zoos):
        res = run(path, a.references, a.samples)
        res["command"] = f"PYTHONPATH=. .venv/bin/python bench/transformer_align.py {path} --name {name} " + (
            f"--references {a.references} --samples {a.samples}"
        )
        print(name, json.dumps(res["summary"], indent=1), res["matched_correlation_activations"], flush=True)
        doc.setdefault("zoos", {})[name] = res
        if a.json:
            Path(a.json).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
