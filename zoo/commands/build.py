"""``zoo build [-m] [hydra overrides]``: compose conf/build.yaml and build the zoo (``-m``: one zoo per job of a
sweep, :mod:`zoo.app.sweep`)."""

from __future__ import annotations

import json
import time

from zoo.app import sweep
from zoo.app.config import compose, help_text
from zoo.app.sweep import Command
from zoo.errors import ZooError
from zoo.store import summarize
from zoo.training.build import BuildConfig, ExecutorConfig, RecipeConfig, build, check_build_config, refuse_other_zoo

USAGE = (
    "usage: zoo build [-m] [GROUP=NAME] [KEY=VALUE ...]   (a Hydra app over conf/build.yaml: -m sweeps, --cfg job,"
    " --info, hydra/launcher=...; --hydra-help)"
)
EXAMPLES = [
    "zoo build                       # recipe=default -> data/zoos/mlp-digits.zarr",
    "zoo build recipe=tiny out=/tmp/t.zarr",
    "zoo build out=data/zoos/x.zarr recipe.widths=[8,16] recipe.seeds=2 recipe.epochs=5",
    "zoo build -m recipe=tiny recipe.epochs=3,6 out=/tmp/sweep   # one zoo per job: /tmp/sweep/<job>-tiny.zarr",
    "zoo build -m recipe=tiny recipe.seed_offset=0,2 out=/tmp/sweep hydra/launcher=joblib hydra.launcher.n_jobs=2"
    "   # jobs in parallel processes (pip install 'wszoo[launchers]')",
    "zoo build recipe=tiny --cfg job --resolve       # Hydra's flags: --cfg job|hydra|all, --info, --hydra-help",
]


def usage() -> str:
    """``zoo build --help``: recipes and executors, every key of build.yaml and of the default recipe."""
    return help_text(
        "build",
        USAGE,
        EXAMPLES,
        BuildConfig,
        {"recipe": lambda name: RecipeConfig, "executor": lambda name: ExecutorConfig},
    )


def report(s: dict, seconds: float) -> str:
    """What a build produced and where, and what to run next (the lines ``zoo build`` ends with)."""
    finished = s["done"] + s["diverged"]
    line = (
        f"built {finished}/{s['models']} models ({s['done']} done, {s['diverged']} diverged) into {s['path']}"
        f" in {seconds:.0f} s"
    )
    if s["score"] and s["score_mean"] is not None:
        line += f"; {s['score']} mean {s['score_mean']:.4f} ({s['score_min']:.4f} .. {s['score_max']:.4f})"
    if s["pending"]:
        return line + f"\n{s['pending']} models still pending: run the same command again to finish them"
    return line + f"\nnext: zoo info {s['path']}  |  zoo align {s['path']}  |  zoo landscape {s['path']}"


def main(argv: list[str]) -> int:
    """train a zoo from a recipe into a Zarr store (Hydra overrides)"""
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    return sweep.main(SWEEP, argv)


def _single(cfg: dict) -> int:
    """Build one zoo and print what it holds; 1 while models are still pending."""
    t0 = time.perf_counter()
    s = summarize(build(cfg))
    print(report(s, time.perf_counter() - t0))
    return 0 if s["pending"] == 0 else 1


def _refuse_memory(cfg: dict) -> None:
    if str(cfg.get("out", "")).startswith("memory://"):
        raise ZooError(
            f"out={cfg['out']} is an in-memory store that vanishes when this command exits;"
            " build into a path or a persistent fsspec URL (memory:// works from Python)"
        )


def _check(cfg: dict) -> None:
    """A composed build config's values, and its output a store that outlives the command."""
    check_build_config(cfg)
    _refuse_memory(cfg)


def _checked(job: list[str]) -> dict:
    """A job's composed config, checked before any job builds."""
    cfg = compose("build", job)
    _check(cfg)
    return cfg


def _run(cfg: dict) -> tuple[str, dict, bool]:
    """Build one job's zoo: its one-line result and its record for multirun.json."""
    t0 = time.perf_counter()
    s = summarize(build(cfg))
    seconds = time.perf_counter() - t0
    line = f"{s['done']} done, {s['diverged']} diverged, {s['pending']} pending in {seconds:.0f} s"
    if s["score"] and s["score_mean"] is not None:
        line += f"; {s['score']} mean {s['score_mean']:.4f}"
    keys = ("models", "done", "diverged", "pending", "score", "score_min", "score_max", "score_mean")
    return line, {k: s[k] for k in keys} | {"seconds": round(seconds, 1)}, s["pending"] == 0


SWEEP = Command(
    name="build",
    compose=_checked,
    check=_check,
    output_name=lambda cfg: f"{cfg['recipe']['name']}.zarr",
    default_root="data/zoos/multirun",
    refuse=refuse_other_zoo,
    run=_run,
    single=_single,
)


if __name__ == "__main__":
    print(json.dumps(compose("build", [])))
