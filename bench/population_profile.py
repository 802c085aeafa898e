"""Where a population step's time goes, any bench/population.py case: torch.profiler on bare training steps.

Builds the case's ``PopulationModule`` (the trainer ``zoo build`` runs) and times, alternating in one process so
that all see the same load: the whole ``train_population`` (Lightning loop included), the same steps called bare
(no Lightning) and one checkpoint ``evaluate()``; then prints torch.profiler's op tables of ``--profile-steps``
bare steps and of one evaluation. (MLP cases have their own parts breakdown: bench/population_mlp_profile.py.)

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/population_profile.py --case siren
    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/population_profile.py --case cnn-bn --profile-steps 5 --json /tmp/p.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from population import CASES, case_spec, matmul_gflops, step_flops  # noqa: E402
from population_mlp_profile import alternating_rounds, bare_epochs, bare_module  # noqa: E402

from zoo.app.memory import retain_freed_memory  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", default="siren", choices=list(CASES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the whole-run timings")
    ap.add_argument("--profile-steps", type=int, default=20)
    ap.add_argument("--rows", type=int, default=22, help="rows of the op tables")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    retain_freed_memory()  # as train_population does (spec.retain_memory): the bare steps see the same allocator
    case = CASES[a.case]
    spec, task = case_spec(case, a.models or case[-1])
    m = len(spec.init_states)
    load0 = os.getloadavg()[0]
    rate = matmul_gflops(a.threads)
    train_f, _ = step_flops(spec, task)
    module = bare_module(spec, task)
    steps = module.steps_per_epoch * spec.epochs
    bare_epochs(module, 1)  # warm-up
    whole_s, bare_s, eval_s = alternating_rounds(spec, task, a.rounds)
    row = {
        "case": a.case,
        "threads": a.threads,
        "models": m,
        "steps": steps,
        "checkpoints": len(spec.checkpoint_epochs),
        "matmul_gflops": rate,
        "train_gflop_per_step": train_f * m / 1e9,
        "train_population_s": whole_s,
        "bare_steps_s": bare_s,
        "bare_step_ms": bare_s / steps * 1e3,
        "evaluate_s": eval_s,
        "lightning_and_checkpoints_s": whole_s - bare_s,
        "load_average": [load0, os.getloadavg()[0]],
    }
    print(json.dumps(row, indent=1), flush=True)
    from torch.profiler import ProfilerActivity, profile

    module = bare_module(spec, task)
    bare_epochs(module, 1)
    n = module.steps_per_epoch
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(a.profile_steps):
            module.training_step(i % n, i % n)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows)
    print(f"{a.profile_steps} training steps:\n{table}")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        module.evaluate()
    print("one evaluate():\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows // 2))
    if a.json:
        Path(a.json).write_text(json.dumps(row, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
