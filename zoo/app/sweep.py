"""``zoo build|train|fit [-m] [hydra flags] overrides``: one command as a Hydra app (:mod:`zoo.app.hydra_app`).

A run (no ``-m``) is composed and checked before Hydra starts it, so a bad value is one line with nothing written.
``-m`` is Hydra's multirun: its sweeper expands the jobs and its launcher runs them (the basic one in this process,
``hydra/launcher=joblib`` in parallel processes, ``submitit_slurm`` on a cluster). With the basic sweeper, every job
is first expanded here as that sweeper expands them (comma lists, ``range()``, ``choice()``, ``glob()``; the
cartesian product in argument order, through Hydra's public override grammar), composed, checked, and its output
refused if it must not be replaced, all before the first job runs: a bad value anywhere is a one-line error with
nothing written. (A sweeper plugin, ``hydra/sweeper=optuna``, chooses jobs as it goes: each is checked when it
starts, and returns its :attr:`Command.objective` for the plugin to optimize.) Each job writes its own output
``<root>/<job number>-<name>``, where root is ``out=`` when given (a folder of outputs, then), else
``<default root>/<date>_<time>`` (Hydra's ``hydra.sweep.dir``, which ``multirun.yaml`` and a plugin's files, e.g.
optuna's ``optimization_results.yaml``, go into); each prints one line, and ``<root>/multirun.json`` lists every
job's overrides, output and result.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from zoo.app.hydra_app import check_flags, is_hydra_key, key_of, one_line, quoted, run_app, split_flags
from zoo.errors import ZooError

OPTIMIZERS = ("optuna", "ax", "nevergrad")  # Hydra's sweeper plugins that optimize the jobs' return values
SWEEP_ENV = "WSZOO_SWEEP"  # the sweep's argv, swept keys and job count, for jobs in other processes (joblib)
SHOW = ("--cfg", "-c", "--info", "-i", "--hydra-help", "-sc", "--shell-completion")  # flags that run no job


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


def no_objective(record: Mapping) -> float | None:
    """A command whose runs have no validation figure for a sweeper plugin to optimize (``zoo build``)."""
    return None


@dataclass(frozen=True)
class Command:
    """What Hydra's runs of one command need: compose and check a job's config (nothing written), check a config
    Hydra composed, name a sweep job's output, refuse an output it must not replace, run a sweep job and say in one
    line (and a JSON record) what it gave, and run a single job."""

    name: str  # build, train, fit (and conf/<name>.yaml)
    compose: Callable[[list[str]], dict]  # overrides -> a composed, checked config
    check: Callable[[dict], None]  # raise a one-line ZooError if a composed config must not run
    output_name: Callable[[Mapping], str]  # a job's output under the root (without the job number)
    default_root: str  # where outputs go when out= is not given
    refuse: Callable[[Mapping], None]  # raise a ZooError if the job's output must not be replaced
    run: Callable[[dict], tuple[str, dict, bool]]  # runs a sweep's job: its line, its record, whether it finished
    single: Callable[[dict], int]  # runs the one job of a run without -m: prints its lines, returns the exit code
    overrides: Callable[[list[str]], list[str]] = list  # the command line's overrides as Hydra gets them
    # what a finished job returns to Hydra (its JobReturn.return_value), the figure an optimizing sweeper plugin
    # (hydra/sweeper=optuna) minimizes or maximizes: a validation score from the job's record, never a test one
    objective: Callable[[Mapping], float | None] = no_objective


def container(cfg: Any) -> dict:
    """Hydra's composed DictConfig as the plain, resolved dict the commands run on."""
    from omegaconf import OmegaConf

    out = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(out, dict)
    return out


def main(command: Command, argv: list[str]) -> int:
    """``zoo <command> [-m] [hydra flags] overrides`` through Hydra; the exit code (``-m``: 0 when every job
    finished, else 1)."""
    flags, overrides = split_flags(argv)
    check_flags(flags)  # before a sweep's folders are made
    names = {f.split("=", 1)[0] for f in flags}
    if names & {"-m", "--multirun"}:
        return multirun(command, flags, overrides)
    if names & set(SHOW):  # Hydra shows the config, its defaults, its plugins or its help: no job runs
        run_app(command.name, [*flags, *command.overrides(overrides)], lambda cfg: None)
        return 0
    command.compose(overrides)  # every value (hydra/launcher=... too) checked: one line, nothing written
    code = 0
    error: ZooError | None = None

    def task(cfg: Any) -> None:
        nonlocal code, error
        try:  # a ZooError leaves the job as a return, not a failure Hydra would report in more lines
            plain = container(cfg)
            command.check(plain)
            code = command.single(plain)
        except ZooError as e:
            error = e

    run_app(command.name, [*flags, *command.overrides(overrides)], task)
    if error is not None:
        raise error
    return code


@dataclass(frozen=True)
class Plan:
    """A basic sweep, checked: its jobs' overrides, swept keys, output roots and Hydra sweep folder."""

    jobs: list[list[str]]
    swept: list[str]
    roots: list[Path]
    sweep_dir: Path


def plan(command: Command, overrides: list[str], stamped: Path) -> Plan:
    """Expand a basic sweep and check every job (composed, checked, output refused): one line, nothing written.
    ``stamped``: the root of jobs without ``out=``."""
    hydra = [o for o in overrides if is_hydra_key(o)]  # composed with each job: a missing launcher plugin is refused
    jobs, swept = expand([o for o in overrides if not is_hydra_key(o)])
    explicit_out = any(key_of(o) == "out" for job in jobs for o in job)
    roots: list[Path] = []
    for i, job in enumerate(jobs):
        cfg = command.compose([*job, *hydra])
        root = Path(cfg["out"]) if explicit_out and cfg.get("out") else stamped
        refuse_url(root)
        roots += [root] if root not in roots else []
        cfg["out"] = str(root / f"{i}-{command.output_name(cfg)}")
        command.refuse(cfg)  # every job's output, before any job runs
    return Plan(jobs, swept, roots, roots[0] if len(roots) == 1 else stamped)


def refuse_url(root: Path) -> None:
    """A sweep's root must be a local folder (its jobs' outputs and multirun.json go into it)."""
    if str(root).startswith("memory:") or "://" in str(root):
        raise ZooError(f"out={root}: a sweep writes its outputs into a local folder; give a path")


def multirun(command: Command, flags: list[str], overrides: list[str]) -> int:
    """Hydra's multirun of ``overrides``; a basic sweep is checked whole first (:func:`plan`) and prints its size."""
    sweepers = [o.split("=", 1)[1] for o in overrides if key_of(o) == "hydra/sweeper"]
    plugin_sweeper = bool(sweepers) and sweepers[-1] != "basic"
    if plugin_sweeper and sweepers[-1] in OPTIMIZERS and command.objective is no_objective:
        raise ZooError(
            f"hydra/sweeper={sweepers[-1]} optimizes what each job returns, and zoo {command.name} jobs return no"
            " validation figure (a zoo is not scored on a validation split): sweep it with the basic sweeper (a,b"
            " lists, range(), choice()), or optimize zoo train or zoo fit runs"
        )
    given = [o.split("=", 1)[1].strip("'\"") for o in overrides if key_of(o) == "hydra.sweep.dir"]
    stamped = Path(given[-1] if given else Path(command.default_root) / time.strftime("%Y-%m-%d_%H-%M-%S"))
    checked = None if plugin_sweeper else plan(command, overrides, stamped)
    if checked is not None:
        print(
            f"zoo {command.name} -m: {len(checked.jobs)} runs, sweeping {', '.join(checked.swept) or 'nothing'}; "
            f"outputs under {', '.join(sorted(map(str, checked.roots)))}",
            flush=True,
        )
        sweep_dir = checked.sweep_dir
        for root in checked.roots:  # a fresh record per sweep; each job adds its run as it ends
            root.mkdir(parents=True, exist_ok=True)
            (root / "multirun.json").write_text(json.dumps({"argv": overrides, "swept": checked.swept, "runs": []}))
    else:  # the plugin's own files (optuna: optimization_results.yaml) go beside the jobs' outputs
        sweep_dir = _plugin_root(overrides, stamped)
        refuse_url(sweep_dir)
    swept = checked.swept if checked else _plugin_swept(overrides)
    info = {"argv": overrides, "swept": swept, "jobs": len(checked.jobs) if checked else 0}
    saved = os.environ.get(SWEEP_ENV)
    os.environ[SWEEP_ENV] = json.dumps(info)  # read by each job, in this process or in a launcher's
    plugin_error: Exception | None = None
    try:
        run_app(
            command.name,
            [*flags, *command.overrides(overrides)],
            lambda cfg: job(command, cfg),
            (f"hydra.sweep.dir={quoted(str(sweep_dir))}",),
        )
    except ZooError:
        raise
    except Exception as e:  # a sweeper plugin's own failure (optuna: no trial returned a number): one line below
        if checked is not None:
            raise
        plugin_error = e
    finally:
        if saved is None:
            os.environ.pop(SWEEP_ENV, None)
        else:
            os.environ[SWEEP_ENV] = saved
    roots = checked.roots if checked else [_plugin_root(overrides, stamped)]
    runs = [r for root in roots if (root / "multirun.json").is_file() for r in _runs(root)]
    jobs = len(checked.jobs) if checked else len(runs)
    failed = [r for r in runs if r.get("error")]
    if failed:
        raise ZooError(f"{len(failed)} of {jobs} jobs failed; job {failed[0]['job']}: {failed[0]['error']}")
    if plugin_error is not None:
        raise ZooError(f"the sweeper plugin stopped: {one_line(plugin_error)}")
    if checked is not None and len(runs) != jobs:
        return 1
    return 0 if all(r.get("finished", True) for r in runs) else 1


def _plugin_swept(overrides: list[str]) -> list[str]:
    """The keys a sweeper plugin sweeps from the command line (``lr=interval(0.001,0.1)``, ``a=1,2``), for each job's
    line; its config's ``hydra.sweeper.params`` ones are shown as all overrides are."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not is_hydra_key(o)])
    except HydraException as e:
        raise ZooError(f"bad sweep override: {' '.join(str(e).split())}") from None
    return [o.get_key_element() for o in parsed if o.is_sweep_override()]


def _runs(root: Path) -> list[dict]:
    return list(json.loads((root / "multirun.json").read_text())["runs"])


def _plugin_root(overrides: list[str], stamped: Path) -> Path:
    """Where a sweeper plugin's jobs put ``multirun.json``: ``out=`` when given (one value), else the sweep folder."""
    outs = [o.split("=", 1)[1].strip("'\"") for o in overrides if key_of(o) == "out"]
    return Path(outs[-1]) if outs and outs[-1] not in ("", "null") else stamped


def job(command: Command, cfg: Any) -> float | None:
    """One job of a sweep (Hydra's task function): checked, run into ``<root>/<job>-<name>``, one line printed
    and its record added to ``<root>/multirun.json``; returns its objective (None when it failed or has none)."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    info = json.loads(os.environ.get(SWEEP_ENV) or "{}")
    overrides = [str(o) for o in hydra.overrides.task]
    num = int(hydra.job.num)
    plain = container(cfg)
    explicit_out = any(key_of(o) == "out" for o in overrides)
    root = Path(plain["out"]) if explicit_out and plain.get("out") else Path(str(hydra.sweep.dir))
    refuse_url(root)
    swept = {key_of(k) for k in info.get("swept", [])}
    label = " ".join(o for o in overrides if key_of(o) in swept) if swept else " ".join(overrides)
    count = f"{num + 1}/{info['jobs']}" if info.get("jobs") else f"job {num}"
    try:  # a ZooError ends this job in one line and its record; the sweep goes on and then exits 2
        command.check(plain)
        plain["out"] = str(root / f"{num}-{command.output_name(plain)}")
        command.refuse(plain)
        line, record, ok = command.run(plain)
    except ZooError as e:
        line, record, ok = f"error: {e}", {"error": str(e)}, False
    print(f"[{count}] {label or f'job {num}'}: {line} -> {plain['out']}", flush=True)
    add_record(root, info, {"job": num, "overrides": overrides, "out": plain["out"], **record, "finished": ok})
    return command.objective(record) if ok else None


def add_record(root: Path, info: Mapping, record: dict) -> None:
    """Put one job's record into ``<root>/multirun.json`` (replacing that job's earlier one), under a file lock:
    jobs may end at once in several processes."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "multirun.json"
    with FileLock(str(path) + ".lock"):
        data = json.loads(path.read_text()) if path.is_file() else {}
        data = data or {"argv": info.get("argv", []), "swept": info.get("swept", []), "runs": []}
        runs = [r for r in data["runs"] if r["job"] != record["job"]] + [record]
        data["runs"] = sorted(runs, key=lambda r: r["job"])
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)  # whole or not at all
