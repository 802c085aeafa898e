"""``zoo build|train|fit -m key=a,b other=range(3) ...``: a Hydra-style multirun of one command.

Sweeps expand as Hydra's basic sweeper expands them (comma lists, ``range()``, ``choice()``, ``glob()``; the
cartesian product in argument order; a key given twice keeps its first place and its last value), through Hydra's
public override grammar. Every job is composed and checked before the first one runs, so a bad value anywhere
is a one-line error with nothing written. Each job writes its own output ``<root>/<job number>-<name>``, where
root is ``out=`` when given (a folder of outputs, then), else ``<default root>/<date>_<time>``; each prints one
line, and ``<root>/multirun.json`` lists every job's overrides, output and result.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import ZooError


def expand(argv: list[str]) -> tuple[list[list[str]], list[str]]:
    """The overrides of every job (the basic sweeper's order) and the keys that are swept."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(argv))
        choices: dict[str, list[str]] = {}
        for o in parsed:
            key = o.get_key_element()
            if o.is_sweep_override() and not o.is_discrete_sweep():
                raise ZooError(f"{key}: an interval sweep needs a sweeper plugin; give a list, range() or choice()")
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
            choices[key] = [f"{key}={v}" for v in values]
    except HydraException as e:
        raise ZooError(f"bad sweep override: {' '.join(str(e).split())}") from None
    swept = [o.get_key_element() for o in parsed if o.is_sweep_override()]
    return [list(job) for job in itertools.product(*choices.values())], swept


@dataclass(frozen=True)
class Command:
    """What a sweep needs of one command: compose and check a job's config (nothing written), name its output,
    refuse an output it must not replace, run it, and say in one line (and a JSON record) what it gave."""

    name: str  # build, train, fit
    compose: Callable[[list[str]], dict]  # overrides -> a composed, checked config
    output_name: Callable[[Mapping], str]  # a job's output under the root (without the job number)
    default_root: str  # where outputs go when out= is not given
    refuse: Callable[[Mapping], None]  # raise a ZooError if the job's output must not be replaced
    run: Callable[[dict], tuple[str, dict, bool]]  # runs the job: its line, its record, whether it finished


def multirun(command: Command, argv: list[str]) -> int:
    """Run every job of the sweep ``argv`` describes; one line per job; 0 when every job finished, else 1."""
    jobs, swept = expand(argv)
    explicit_out = any(k.lstrip("+~") == "out" for job in jobs for k in (o.split("=", 1)[0] for o in job))
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    cfgs: list[dict] = []
    roots: set[Path] = set()
    for i, job in enumerate(jobs):
        cfg = command.compose(job)
        root = Path(cfg["out"]) if explicit_out and cfg.get("out") else Path(command.default_root) / stamp
        if str(root).startswith("memory:") or "://" in str(root):
            raise ZooError(f"out={root}: a sweep writes its outputs into a local folder; give a path")
        roots.add(root)
        cfg["out"] = str(root / f"{i}-{command.output_name(cfg)}")
        command.refuse(cfg)  # every job's output, before any job runs
        cfgs.append(cfg)
    print(
        f"zoo {command.name} -m: {len(jobs)} runs, sweeping {', '.join(swept) or 'nothing'}; "
        f"outputs under {', '.join(sorted(map(str, roots)))}",
        flush=True,
    )
    swept_keys = {k.lstrip("+~") for k in swept}
    records: list[dict[str, Any]] = []
    finished = True
    for i, (job, cfg) in enumerate(zip(jobs, cfgs)):
        line, record, ok = command.run(cfg)
        finished &= ok
        label = " ".join(o for o in job if o.split("=", 1)[0].lstrip("+~") in swept_keys) or f"job {i}"
        print(f"[{i + 1}/{len(jobs)}] {label}: {line} -> {cfg['out']}", flush=True)
        records.append({"job": i, "overrides": job, "out": cfg["out"], **record})
    for root in roots:
        mine = [r for r in records if Path(r["out"]).parent == root]
        root.mkdir(parents=True, exist_ok=True)
        (root / "multirun.json").write_text(json.dumps({"argv": list(argv), "swept": swept, "runs": mine}, indent=2))
    return 0 if finished else 1
