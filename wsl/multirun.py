"""``zoo train -m key=a,b other=range(3) ...``: a Hydra multirun sweep of ``zoo train``.

Sweeps are expanded as Hydra's basic sweeper does (comma lists, ``range()``, ``choice()``, cartesian
product, in argument order). Every job is composed and checked before the first one trains, so a bad
choice anywhere is a one-line error with nothing written. Each job writes its own run folder
``<root>/<job number>-<run name>`` (root: ``out=DIR`` when given, else
``data/runs/multirun/<date>_<time>``), prints one summary line, and ``<root>/multirun.json`` lists every
job's overrides, folder and test metrics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

from wsl.train import check_train_config, refuse_finished_run, run_name, train
from zoo.app.config import compose
from zoo.app.trainer import checked_overrides
from zoo.errors import ZooError


def expand(argv: list[str]) -> tuple[list[list[str]], list[str]]:
    """Overrides of every job (Hydra's basic-sweeper order) and the keys that are swept."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(argv))
        batches = BasicSweeper.split_arguments(parsed, None)
    except HydraException as e:
        raise ZooError(f"bad sweep override: {' '.join(str(e).split())}") from None
    swept = [o.get_key_element() for o in parsed if o.is_sweep_override()]
    return [job for batch in batches for job in batch], swept


def metrics_text(test: Mapping) -> str:
    """``kendall_tau 0.8123, r2 ...``; a metric that is undefined (null) says so."""
    return ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} undefined" for k, v in test.items())


def multirun(
    argv: list[str], config_name: str = "train", groups: tuple[str, ...] = ("encoder", "task", "augment")
) -> int:
    """Run every job of the sweep ``argv`` describes; prints one line per job and returns 0."""
    jobs, swept = expand(argv)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    cfgs, roots = [], set()
    for i, job in enumerate(jobs):
        cfg = compose(config_name, checked_overrides(job, config_name, groups))
        if not cfg.get("zoo"):
            raise ZooError("zoo=PATH is required (the zoo to learn from)")
        check_train_config(cfg)
        root = Path(cfg["out"]) if cfg.get("out") else Path("data/runs/multirun") / stamp
        roots.add(root)
        cfg["out"] = str(root / f"{i}-{run_name(cfg)}")
        refuse_finished_run(Path(cfg["out"]), bool(cfg.get("overwrite", False)))  # every job's, before any trains
        cfgs.append(cfg)
    print(
        f"zoo train -m: {len(jobs)} runs, sweeping {', '.join(swept) or 'nothing'}; "
        f"run folders under {', '.join(sorted(map(str, roots)))}",
        flush=True,
    )
    records = []
    for i, (job, cfg) in enumerate(zip(jobs, cfgs)):
        s = train(cfg)
        label = (
            " ".join(o for o in job if o.split("=", 1)[0].lstrip("+~") in {k.lstrip("+~") for k in swept}) or f"job {i}"
        )
        print(
            f"[{i + 1}/{len(jobs)}] {label}: {metrics_text(s['test'])} ({s['epochs']} epochs, "
            f"{s['fit_seconds']:.0f} s) -> {s['out']}",
            flush=True,
        )
        records.append({"job": i, "overrides": job, "out": s["out"], "test": s["test"], "best_val": s["best_val"]})
    for root in roots:
        mine = [r for r in records if Path(r["out"]).parent == root]
        (root / "multirun.json").write_text(json.dumps({"argv": list(argv), "swept": swept, "runs": mine}, indent=2))
    return 0
