"""``zoo build [hydra overrides]``: compose conf/build.yaml and build the zoo."""

from __future__ import annotations

import json
import time

from zoo.app.config import cfg_request, compose, config_yaml, help_text
from zoo.errors import ZooError
from zoo.store import summarize
from zoo.training.build import BuildConfig, ExecutorConfig, RecipeConfig, build

USAGE = "usage: zoo build [GROUP=NAME] [KEY=VALUE ...]   (Hydra overrides of conf/build.yaml)"
EXAMPLES = [
    "zoo build                       # recipe=default -> data/zoos/mlp-digits.zarr",
    "zoo build recipe=tiny out=/tmp/t.zarr",
    "zoo build out=data/zoos/x.zarr recipe.widths=[8,16] recipe.seeds=2 recipe.epochs=5",
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
    argv, show = cfg_request(argv)
    cfg = compose("build", argv)
    if show:  # --cfg job: the composed config, nothing run
        print(config_yaml(cfg))
        return 0
    if str(cfg.get("out", "")).startswith("memory://"):
        raise ZooError(
            f"out={cfg['out']} is an in-memory store that vanishes when this command exits;"
            " build into a path or a persistent fsspec URL (memory:// works from Python)"
        )
    t0 = time.perf_counter()
    z = build(cfg)
    s = summarize(z)
    print(report(s, time.perf_counter() - t0))
    return 0 if s["pending"] == 0 else 1


if __name__ == "__main__":
    print(json.dumps(compose("build", [])))
