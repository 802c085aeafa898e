"""DeepWeightFlow on an INR zoo, the quick sweep of docs/dwf-inr-digits.md: one flow fitted in this process (the
velocity MLP, loss and ODE solver of generators.dwf.flow; EMA, AdamW and cosine as `zoo fit`), its samples
measured at several step counts. Train/validation INRs only (the zoo's split by image); nothing reads the test one.

    OMP_NUM_THREADS=1 .venv/bin/python bench/dwf_inr.py data/zoos/inr-digits-shared.zarr --cond 1 --steps 250,500,1000

Per checkpoint, for 128 samples (condition: label i % 10 for sample i): the median PSNR of a render to the
nearest training INR's render (``psnr_train_med``; the training INRs' own nearest other one is
``ref_train_nn_psnr``) and to the nearest validation INR's render (``psnr_val_med``: an image the flow never
saw; a training INR's is ``ref_train_to_val_psnr``), the share within 30 dB of a training render (``copy30``),
the share nearer a training render than the training INRs' median (``nearer_than_train``), the raw-weight L2 to
the nearest training INR over the training INRs' median (``nn_w_med``: no alignment, sound on a
shared-initialization zoo only), and with a condition the share whose nearest training INR has that label.
One JSON line per checkpoint on stdout; ``--json FILE`` appends the run to FILE (a JSON list).

``--probe``: no flow; the zoo's sensitivity instead (training INRs): Gaussian noise of a share of each
coordinate's std against the clean render, midpoints of random (and same-label) pairs against the average of
their images, the mean image, and PCA projections' renders (training and validation INRs) with k components.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # not bench/generators.py

import zoo  # noqa: E402
from generators.dwf.flow import VelocityMLP, cfm_loss, solve  # noqa: E402
from zoo.inr import image_shape, render_weights  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("zoo")
    ap.add_argument("--pca", type=float, default=0.0, help="variance share of the PCA kept (0: no PCA)")
    ap.add_argument("--whiten", type=int, default=1, help="PCA components scaled to unit variance (1, as dwf)")
    ap.add_argument("--source", type=float, default=0.05, help="source std over the coordinates' (dwf source_scale)")
    ap.add_argument("--steps", default="250,500,1000", help="step counts to measure at; the last ends the fit")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--cond", type=int, default=0, help="1: condition on the digit label")
    ap.add_argument("--ema", type=float, default=0.99)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--json", default=None, help="append the run to this JSON list")
    ap.add_argument("--probe", action="store_true", help="the zoo's sensitivity figures instead of a flow")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    z = zoo.open(a.zoo)
    m = z.models
    lay, shape = z.layout(int(m.model_id.iloc[0])), image_shape(z.attrs)

    def part(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        sel = m[(m.split == split) & (m.status == "done")]
        return z.weights(sel.model_id.tolist()), torch.as_tensor(sel.label.to_numpy().copy())

    if a.probe:
        probe(z, part, lay, shape)
        return
    w_train, y_train = part("train")
    w_val, _ = part("validation")
    r_train = render_weights(lay, w_train, shape).flatten(1)
    r_val = render_weights(lay, w_val, shape).flatten(1)
    mean, sd = w_train.mean(0), w_train.std(0).clamp_min(1e-8)
    x = (w_train - mean) / sd
    if a.pca > 0:
        mu = x.mean(0)
        _, s, vh = torch.linalg.svd(x - mu, full_matrices=False)
        k = int((torch.cumsum(s**2, 0) / (s**2).sum() < a.pca).sum()) + 1
        v = vh[:k]
        cs = s[:k] / math.sqrt(len(x) - 1) if a.whiten else torch.ones(k)

        def encode(w: torch.Tensor) -> torch.Tensor:
            return (((w - mean) / sd - mu) @ v.T) / cs

        def decode(zc: torch.Tensor) -> torch.Tensor:
            return ((zc * cs) @ v + mu) * sd + mean
    else:
        k = x.shape[1]

        def encode(w: torch.Tensor) -> torch.Tensor:
            return (w - mean) / sd

        def decode(zc: torch.Tensor) -> torch.Tensor:
            return zc * sd + mean

    z_train = encode(w_train)
    net = VelocityMLP(k, hidden=a.hidden, dropout=a.dropout, num_conditions=10 if a.cond else 0)
    ema = copy.deepcopy(net)
    steps = [int(s) for s in a.steps.split(",")]
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-5, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps[-1])
    g = torch.Generator().manual_seed(a.seed)

    def nearest_psnr(r: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d, i = torch.cdist(r, ref).min(1)
        return -10 * torch.log10(d**2 / r.shape[1] + 1e-10), i

    d = torch.cdist(r_train, r_train).fill_diagonal_(float("inf"))
    head = {
        "args": vars(a),
        "dims": k,
        "ref_train_nn_psnr": round(float((-10 * torch.log10(d.min(1).values ** 2 / r_train.shape[1])).median()), 2),
        "ref_train_to_val_psnr": round(float(nearest_psnr(r_train, r_val)[0].median()), 2),
    }
    dw = torch.cdist(w_train, w_train).fill_diagonal_(float("inf"))
    med_w = float(dw.min(1).values.median())
    print(json.dumps(head), flush=True)
    t0, rows = time.time(), []
    for step in range(1, steps[-1] + 1):
        idx = torch.randint(len(z_train), (a.batch,), generator=g)
        loss = cfm_loss(net, z_train[idx], a.source, 1e-3, y_train[idx] if a.cond else None, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.mul_(a.ema).add_(p, alpha=1 - a.ema)
        if step not in steps:
            continue
        ema.eval()
        x0 = torch.randn(a.samples, k, generator=torch.Generator().manual_seed(123)) * a.source
        cond = torch.arange(a.samples) % 10 if a.cond else None
        w_s = decode(solve(ema, x0, steps=20, condition=cond))
        r_s = render_weights(lay, w_s, shape).flatten(1)
        p_train, i_train = nearest_psnr(r_s, r_train)
        p_val, _ = nearest_psnr(r_s, r_val)
        row = {
            "step": step,
            "sec": round(time.time() - t0),
            "loss": round(loss.item(), 4),
            "psnr_train_med": round(float(p_train.median()), 2),
            "psnr_val_med": round(float(p_val.median()), 2),
            "copy30": round(float((p_train > 30).float().mean()), 3),
            "nn_w_med": round(float((torch.cdist(w_s, w_train).min(1).values / med_w).median()), 3),
            "nearer_than_train": round(float((p_train > head["ref_train_nn_psnr"]).float().mean()), 3),
        }
        if cond is not None:
            row["label_match"] = round(float((y_train[i_train] == cond).float().mean()), 3)
        print(json.dumps(row), flush=True)
        rows.append(row)
        ema.train()
    if a.json:
        path = Path(a.json)
        runs = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps([*runs, {**head, "checkpoints": rows}], indent=1) + "\n")


def _psnr_med(a: torch.Tensor, b: torch.Tensor) -> float:
    return round(float((-10 * torch.log10((a - b).square().flatten(1).mean(1))).median()), 1)


def probe(z: zoo.Zoo, part, lay, shape) -> None:  # noqa: ANN001
    """Print the zoo's sensitivity figures (``--probe``) as one JSON object."""
    w, y = part("train")
    w_val, _ = part("validation")
    r, r_val = render_weights(lay, w, shape), render_weights(lay, w_val, shape)
    g = torch.Generator().manual_seed(0)
    std, out = w.std(0), {}
    for f in (0.01, 0.03, 0.1, 0.3):
        noisy = w[:200] + f * std * torch.randn(200, w.shape[1], generator=g)
        out[f"noise_{f}"] = _psnr_med(render_weights(lay, noisy, shape), r[:200])
    i, j = torch.randint(len(w), (200,), generator=g), torch.randint(len(w), (200,), generator=g)
    out["midpoint_vs_average_image"] = _psnr_med(render_weights(lay, (w[i] + w[j]) / 2, shape), (r[i] + r[j]) / 2)
    same = [
        int(torch.nonzero(y == y[a]).flatten()[torch.randint(int((y == y[a]).sum()), (1,), generator=g)])
        for a in range(200)
    ]
    mid = render_weights(lay, (w[:200] + w[same]) / 2, shape)
    out["same_label_midpoint_vs_average_image"] = _psnr_med(mid, (r[:200] + r[same]) / 2)
    out["mean_image"] = _psnr_med(r.mean(0, keepdim=True).expand_as(r), r)
    mean, sd = w.mean(0), w.std(0).clamp_min(1e-8)
    _, s, vh = torch.linalg.svd((w - mean) / sd, full_matrices=False)
    ratio = torch.cumsum(s**2, 0) / (s**2).sum()
    for k in (16, 64, 128, 256, 512):
        v = vh[:k]

        def proj(x: torch.Tensor) -> torch.Tensor:
            return (((x - mean) / sd) @ v.T @ v) * sd + mean  # noqa: B023

        out[f"pca_{k}"] = {
            "variance": round(float(ratio[k - 1]), 3),
            "train": _psnr_med(render_weights(lay, proj(w), shape), r),
            "validation": _psnr_med(render_weights(lay, proj(w_val), shape), r_val),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
