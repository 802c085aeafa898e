"""One training step (forward + backward) of a Small-CNN-Zoo MNIST population, four ways of computing the convolutions.

64 models of recipe cnn-zoo-mnist's network (3 convs of 16 3x3 filters, stride 2, valid padding, ReLU, global
average pool, linear head), each on its own batch of 32 28x28 images, one thread: the grouped convolutions the
trainer runs (``zoo.forward.stacked_cnn_forward``, channels-last), plain ``F.conv2d`` looped over the models in one
autograd graph (NCHW and channels-last), and im2col (``Tensor.unfold``) + ``baddbmm``. Timed alternating step by
step (median), outputs compared with the grouped path's.

    .venv/bin/python bench/population_cnn_step_variants.py --json docs/bench-population-cnn-step-variants.json
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.app.memory import retain_freed_memory  # noqa: E402
from zoo.arch import CNN  # noqa: E402
from zoo.forward import stacked_cnn_forward  # noqa: E402

CONVS = ("features.0", "features.2", "features.4")


def variants(template: CNN, params: dict, x: torch.Tensor) -> dict:
    """name -> a function computing the population's outputs [M, b, 10] from ``params`` and ``x`` [M, b, 1, 28, 28]."""
    m = x.shape[0]

    def grouped() -> torch.Tensor:
        return stacked_cnn_forward(template, params, {}, x, False)

    def head(h: torch.Tensor, j: int) -> torch.Tensor:
        return F.linear(h.mean((2, 3)), params["head.weight"][j], params["head.bias"][j])

    def looped(channels_last: bool) -> torch.Tensor:
        outs = []
        for j in range(m):
            h = x[j]
            if channels_last:
                h = torch.empty(h.shape, memory_format=torch.channels_last).copy_(h)
            for c in CONVS:
                h = torch.relu(F.conv2d(h, params[f"{c}.weight"][j], params[f"{c}.bias"][j], stride=2))
            outs.append(head(h, j))
        return torch.stack(outs)

    def im2col() -> torch.Tensor:
        h = x.permute(0, 1, 3, 4, 2)  # [M, b, H, W, C]
        for c in CONVS:
            w, bias = params[f"{c}.weight"], params[f"{c}.bias"]
            cols = h.unfold(2, 3, 2).unfold(3, 3, 2)  # [M, b, Ho, Wo, C, 3, 3]
            ho, wo = cols.shape[2], cols.shape[3]
            cols = cols.reshape(m, -1, w[0, 0].numel())
            h = torch.relu(torch.baddbmm(bias.unsqueeze(1), cols, w.flatten(2).transpose(1, 2)))
            h = h.view(m, x.shape[1], ho, wo, -1)
        pooled = h.mean((2, 3))
        return torch.baddbmm(params["head.bias"].unsqueeze(1), pooled, params["head.weight"].transpose(1, 2))

    return {
        "grouped_channels_last": grouped,
        "looped_nchw": lambda: looped(False),
        "looped_channels_last": lambda: looped(True),
        "im2col_bmm": im2col,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    retain_freed_memory()  # as train_population does
    torch.manual_seed(0)
    template = CNN(1, 10, 16, 3, "relu", batchnorm=False, kernel_size=3, stride=2, padding="valid")
    params = {n: (0.3 * torch.randn(a.models, *p.shape)).requires_grad_() for n, p in template.named_parameters()}
    x = torch.rand(a.models, a.batch, 1, 28, 28)
    y = torch.randint(0, 10, (a.models, a.batch))
    fns = variants(template, params, x)
    with torch.no_grad():
        ref = fns["grouped_channels_last"]()
        diffs = {n: (f() - ref).abs().max().item() for n, f in fns.items()}
    times: dict[str, list[float]] = {n: [] for n in fns}
    for step in range(a.steps + 1):  # step 0 warms up
        for n, f in fns.items():
            t = time.perf_counter()
            for p in params.values():
                p.grad = None
            F.cross_entropy(f().transpose(1, 2), y, reduction="none").mean(1).sum().backward()
            if step:
                times[n].append(time.perf_counter() - t)
    ms = {n: 1e3 * statistics.median(v) for n, v in times.items()}
    for n in fns:
        print(f"{n:24s} {ms[n]:7.1f} ms a step   max |output - grouped| {diffs[n]:.1e}")
    if a.json:
        out = {
            "command": "python " + " ".join(sys.argv),
            "models": a.models,
            "batch": a.batch,
            "threads": a.threads,
            "load_average": list(os.getloadavg()),
            "step_ms_median": ms,
            "max_abs_output_diff_vs_grouped": diffs,
        }
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
