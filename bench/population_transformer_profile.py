"""Where a transformer population's time goes (bench/population.py cases vit and grok), and candidates side by side.

Builds the case's ``PopulationModule`` (the trainer ``zoo build`` runs), times bare ``training_step`` calls (no
Lightning), one checkpoint ``evaluate()`` and the step's parts (batch gather, forward+loss, backward, optimizer),
and sums torch.profiler's self CPU time of a few steps and of one evaluation into categories (attention GEMMs,
softmax, SDPA's masked-row check, LayerNorm, GELU/ReLU, linear-layer GEMMs, copies, optimizer, ...). With
``--compare`` it then alternates, in one process, the trainer as it was before issue 25's transformer work
(``scaled_dot_product_attention``, the memory-bound evaluation chunk) with today's, round after round, on one
epoch of bare steps and one evaluation each, and checks that the steps give the same bits.

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/population_transformer_profile.py --case vit --compare 3
    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/population_transformer_profile.py --case grok --compare 3
    # whole train_population runs (Lightning and checkpoints included), before and today alternating
    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/population_transformer_profile.py --case grok --models 32 --whole 5 \\
        --skip-profile --json docs/profile-population-transformer-grok-whole.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from population import CASES, case_spec, matmul_gflops, step_flops  # noqa: E402
from population_mlp_profile import bare_epochs, bare_module  # noqa: E402

import zoo.forward as zf  # noqa: E402
from zoo.app.memory import retain_freed_memory  # noqa: E402
from zoo.arch import Block, Transformer  # noqa: E402


def sdpa_forward(template, params, x, shared_input):  # the stacked forward before this work: SDPA's math path
    t: Transformer = template
    m = next(iter(params.values())).shape[0]
    if shared_input:
        x = x.expand(m, *x.shape)
    w_e, b_e = params["embed.weight"], params["embed.bias"]
    if t.patch:
        p = t.patch
        mm, b, c, hh, ww = x.shape
        patches = x.reshape(mm, b, c, hh // p, p, ww // p, p).permute(0, 1, 3, 5, 2, 4, 6)
        patches = patches.reshape(mm, b, (hh // p) * (ww // p), c * p * p)
        h = zf._stacked_linear(patches, w_e.reshape(m, w_e.shape[1], -1), b_e)
    else:
        h = zf._stacked_linear(x.unflatten(-1, (t.tokens, -1)), w_e, b_e)
    h = h + params["pos"].unsqueeze(1)
    for i, block in enumerate(t.blocks):
        assert isinstance(block, Block)
        pre, attn = f"blocks.{i}.", block.attn
        a = zf._stacked_layer_norm(h, params[pre + "ln1.weight"], params[pre + "ln1.bias"], block.ln1.eps)
        q, k, v = (
            zf._stacked_linear(a, params[f"{pre}attn.{n}.weight"], params[f"{pre}attn.{n}.bias"])
            .unflatten(-1, (attn.heads, -1))
            .transpose(-3, -2)
            for n in "qkv"
        )
        o = F.scaled_dot_product_attention(q, k, v).transpose(-3, -2).flatten(-2)
        h = h + zf._stacked_linear(o, params[pre + "attn.o.weight"], params[pre + "attn.o.bias"])
        a = zf._stacked_layer_norm(h, params[pre + "ln2.weight"], params[pre + "ln2.bias"], block.ln2.eps)
        a = block.mlp[1](zf._stacked_linear(a, params[pre + "mlp.0.weight"], params[pre + "mlp.0.bias"]))
        h = h + zf._stacked_linear(a, params[pre + "mlp.2.weight"], params[pre + "mlp.2.bias"])
    h = zf._stacked_layer_norm(h, params["norm.weight"], params["norm.bias"], t.norm.eps).mean(-2)
    return zf._stacked_linear(h, params["head.weight"], params["head.bias"])


TODAY = zf.stacked_transformer_forward


def category(name: str, shapes: list, m: int) -> str:
    """The part of a population step an aten op belongs to, from its name and input shapes."""
    first = shapes[0] if shapes and isinstance(shapes[0], list) else []
    if name in ("aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm"):
        batch = first[0] if name == "aten::bmm" and first else (shapes[1][0] if len(shapes) > 1 and shapes[1] else 0)
        return "attention GEMMs (q k^T, a v)" if batch and batch > m else "linear-layer GEMMs (incl. patch embedding)"
    if "softmax" in name:
        return "softmax (attention; cross-entropy's log_softmax)"
    if name in ("aten::isneginf", "aten::all", "aten::where", "aten::logical_not", "aten::any"):
        return "SDPA's all-masked-row check (isneginf/all/where)"
    if "layer_norm" in name:
        return "layer_norm (normalization)"
    if name in ("aten::addcmul",):
        return "LayerNorm affine (addcmul)"
    if "gelu" in name or name in ("aten::clamp_min", "aten::threshold_backward", "aten::relu"):
        return "activation (GELU / ReLU) fwd+bwd"
    if "_foreach" in name:
        return "optimizer (foreach SGD)"
    if name in ("aten::copy_", "aten::clone", "aten::contiguous"):
        return "copies (transposes to contiguous, patchify, bias broadcast)"
    if "scaled_dot_product" in name or "flash" in name:
        return "SDPA wrapper / flash kernel"
    if name in ("aten::mul", "aten::mul_", "aten::add", "aten::add_", "aten::sum", "aten::mean", "aten::div"):
        return "elementwise and reductions (residual adds, q/k scaling, bias grads, means)"
    if "nll" in name or "cross_entropy" in name:
        return "loss"
    if name in ("aten::randperm", "aten::index_select", "aten::index"):
        return "data (randperm, gather)"
    return "other (views, allocation, autograd bookkeeping)"


def categories(prof, m: int) -> dict[str, float]:
    """Self CPU ms per category over a profile's aten ops (group_by_input_shape)."""
    out: dict[str, float] = defaultdict(float)
    for e in prof.key_averages(group_by_input_shape=True):
        if not e.key.startswith("aten::"):
            cat = "other (views, allocation, autograd bookkeeping)"
        else:
            cat = category(e.key, e.input_shapes, m)
        out[cat] += e.self_cpu_time_total / 1e3
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def parts(module, steps: int) -> dict[str, float]:
    """ms per step of the step's parts, each timed alone (the code of training_step without Lightning)."""
    b, n = module.batch_size, len(module.dataset.X_train)
    t = {"perm_and_gather": 0.0, "forward_loss": 0.0, "backward": 0.0, "optimizer": 0.0}
    module.template.train()
    for s in range(steps):
        i = s % module.steps_per_epoch
        t0 = time.perf_counter()
        if i == 0:
            module._perm = torch.stack([torch.randperm(n, generator=g) for g in module._generators])
        idx = module._perm[:, i * b : (i + 1) * b].reshape(-1)
        m = module._perm.shape[0]
        x = module.dataset.X_train.index_select(0, idx).view(m, b, *module.dataset.X_train.shape[1:])
        y = module.dataset.y_train.index_select(0, idx).view(m, b)
        t1 = time.perf_counter()
        out = module._forward(module._params(), module._buffers_stacked, x, shared_input=False, training=True)
        loss = module._per_model_loss(out, y)
        bool((module.active & ~torch.isfinite(loss)).any())
        t2 = time.perf_counter()
        for p in module.stacked:
            p.grad = None
        torch.where(module.active, loss, torch.zeros_like(loss)).sum().backward()
        t3 = time.perf_counter()
        module._optimizer_step()
        t4 = time.perf_counter()
        for k, a, z in (("perm_and_gather", t0, t1), ("forward_loss", t1, t2), ("backward", t2, t3)):
            t[k] += z - a
        t["optimizer"] += t4 - t3
    return {k: v / steps * 1e3 for k, v in t.items()}


def profile_now(spec, task, steps: int) -> dict:
    """Times and op categories of today's trainer."""
    from torch.profiler import ProfilerActivity, profile

    m = len(spec.init_states)
    module = bare_module(spec, task)
    bare_epochs(module, 1)  # warm-up
    t = time.perf_counter()
    bare_epochs(module, 1)
    step_ms = (time.perf_counter() - t) / module.steps_per_epoch * 1e3
    t = time.perf_counter()
    module.evaluate()
    eval_s = time.perf_counter() - t
    part = parts(module, min(module.steps_per_epoch, 10))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for i in range(steps):
            j = i % module.steps_per_epoch
            module.training_step(j, j)
    step_cats = {k: v / steps for k, v in categories(prof, m).items()}
    top = prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        module.evaluate()
    eval_cats = categories(prof, m)
    return {
        "steps_per_epoch": module.steps_per_epoch,
        "eval_chunk": module._cpu_eval_chunk,
        "bare_step_ms": step_ms,
        "evaluate_s": eval_s,
        "parts_ms": part,
        "step_ms_by_category": step_cats,
        "evaluate_ms_by_category": eval_cats,
        "top_ops": top,
    }


def compare(spec, task, rounds: int) -> dict:
    """Before (SDPA, memory-bound eval chunk) vs today, alternating: one epoch of bare steps and one evaluation."""
    times: dict[str, dict[str, list[float]]] = {k: {"epoch": [], "evaluate": []} for k in ("before", "after")}
    weights = {}
    for r in range(rounds + 1):  # round 0 warms both up
        for kind in ("before", "after"):
            zf.stacked_transformer_forward = sdpa_forward if kind == "before" else TODAY
            module = bare_module(spec, task)
            if kind == "before":
                act = zf.activation_floats_per_sample(module.template, task.X_train)
                module._eval_chunk = max(1, spec.eval_memory_floats // (len(spec.init_states) * act))
                module._cpu_eval_chunk = module._eval_chunk  # before the cache bound too
            t = time.perf_counter()
            bare_epochs(module, 1)
            epoch = time.perf_counter() - t
            t = time.perf_counter()
            module.evaluate()
            ev = time.perf_counter() - t
            weights[kind] = torch.cat([p.detach().flatten(1) for p in module.stacked], 1)
            if r:
                times[kind]["epoch"].append(epoch)
                times[kind]["evaluate"].append(ev)
            chunk = module._cpu_eval_chunk
            print(f"  round {r} {kind}: epoch {epoch:.2f} s, evaluate {ev:.2f} s (chunk {chunk})", flush=True)
    zf.stacked_transformer_forward = TODAY
    ratio = {
        part: [b / a for b, a in zip(times["before"][part], times["after"][part])] for part in ("epoch", "evaluate")
    }
    return {
        "rounds": rounds,
        "seconds": times,
        "ratio_before_over_after": ratio,
        "median_ratio": {k: statistics.median(v) for k, v in ratio.items()},
        "same_weights_after_one_epoch": bool(torch.equal(weights["before"], weights["after"])),
    }


def whole(spec, task, rounds: int) -> dict:
    """Whole ``train_population`` runs (Lightning, checkpoints), before and today alternating, after a warm-up each."""
    import zoo.training.population_module as pm
    from zoo.training.population import train_population

    limit = pm.EVAL_ATTENTION_FLOATS
    times: dict[str, list[float]] = {"before": [], "after": []}
    for r in range(rounds + 1):
        for kind in ("before", "after"):
            zf.stacked_transformer_forward = sdpa_forward if kind == "before" else TODAY
            pm.EVAL_ATTENTION_FLOATS = 2**62 if kind == "before" else limit  # before: the memory bound's chunk
            t = time.perf_counter()
            train_population(spec, task, progress=False)
            if r:
                times[kind].append(time.perf_counter() - t)
                print(f"  whole run, round {r} {kind}: {times[kind][-1]:.2f} s", flush=True)
    zf.stacked_transformer_forward, pm.EVAL_ATTENTION_FLOATS = TODAY, limit
    ratio = [b / a for b, a in zip(times["before"], times["after"])]
    return {
        "rounds": rounds,
        "seconds": times,
        "ratio_before_over_after": ratio,
        "median_ratio": statistics.median(ratio),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", default="vit", choices=["vit", "grok"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", type=int, default=None)
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--compare", type=int, default=0, help="alternating before/after rounds (0: none)")
    ap.add_argument("--whole", type=int, default=0, help="alternating whole train_population rounds (0: none)")
    ap.add_argument("--skip-profile", action="store_true", help="only the comparisons")
    ap.add_argument(
        "--no-retain-memory",
        dest="retain_memory",
        action="store_false",
        help="leave glibc's default (freed large blocks unmapped), as bare steps ran before this flag existed",
    )
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    case = CASES[a.case]
    spec, task = case_spec(case, a.models or case[-1])
    if a.retain_memory:  # what train_population sets (spec.retain_memory): glibc keeps freed large blocks
        retain_freed_memory()
    m = len(spec.init_states)
    load0 = os.getloadavg()[0]
    rate = matmul_gflops(a.threads)
    train_f, _ = step_flops(spec, task)
    row: dict = {
        "case": a.case,
        "threads": a.threads,
        "models": m,
        "batch_size": spec.batch_size,
        "matmul_gflops": rate,
        "train_gflop_per_step": train_f * m / 1e9,
        "load_average_start": load0,
        "retain_freed_memory": a.retain_memory,
    }
    print(f"[{a.case}] {m} models, matmul {rate:.1f} GFLOP/s, load {load0:.1f}", flush=True)
    if not a.skip_profile:
        now = profile_now(spec, task, a.profile_steps)
        print(now.pop("top_ops"))
        row["today"] = now
        print(json.dumps(now, indent=1), flush=True)
    if a.compare:
        row["compare"] = compare(spec, task, a.compare)
        print(json.dumps({k: v for k, v in row["compare"].items() if k != "seconds"}, indent=1), flush=True)
    if a.whole:
        row["whole"] = whole(spec, task, a.whole)
        print(json.dumps({k: v for k, v in row["whole"].items() if k != "seconds"}, indent=1), flush=True)
    row["load_average_end"] = os.getloadavg()[0]
    if a.json:
        Path(a.json).write_text(json.dumps(row, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
