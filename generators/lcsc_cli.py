"""``zoo lcsc ZOO [--models IDS|all] --out OUT.zarr``: LCSC over every chosen model's saved checkpoints.

Writes the merged weights as a zoo (BatchNorm statistics recomputed on the training split) with the table
``lcsc`` (``zoo.open(OUT).table("lcsc")``): per source model, validation and test metrics of the last
checkpoint, the best EMA, the best uniform average and LCSC, and the coefficients over the source's checkpoints.
"""
from __future__ import annotations

import argparse

from zoo.errors import ZooError

USAGE = "zoo lcsc ZOO --out OUT.zarr [--models IDS|all] [--metric loss|acc] [options]"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one-line ZooErrors (the CLI prints them, no usage dump)."""

    def error(self, message: str):
        raise ZooError(f"{message} (usage: {USAGE})")


def _parser() -> argparse.ArgumentParser:
    from .lcsc import SearchConfig

    d = SearchConfig()
    p = _Parser(prog="zoo lcsc", usage=USAGE, description="LCSC: search coefficients of linear combinations of "
                "saved checkpoints on a validation split carved from the training data; write the merged models")
    p.add_argument("zoo", help="the zoo whose models' checkpoints to combine")
    p.add_argument("--out", required=True, help="zoo to write the merged models to (with the table 'lcsc')")
    p.add_argument("--models", default="all", help="'all' (every done model) or ids such as 0,3,5-9")
    p.add_argument("--metric", default="loss", help="fitness on the validation split: loss (default), acc or r2")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of the training split used for "
                   "validation (default 0.2)")
    p.add_argument("--val-seed", type=int, default=0, help="seed of the validation split (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the search (default 0)")
    p.add_argument("--upto", type=int, default=None, help="combine checkpoints 0..UPTO only (index; default all)")
    p.add_argument("--population", type=int, default=d.population, help=f"candidates per generation ({d.population})")
    p.add_argument("--max-evals", type=int, default=d.max_evals, help=f"evaluations per model ({d.max_evals})")
    p.add_argument("--lower", type=float, default=d.lower, help=f"lower bound of a coefficient ({d.lower})")
    p.add_argument("--upper", type=float, default=d.upper, help=f"upper bound of a coefficient ({d.upper})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing zoo at --out")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return p


def main(argv: list[str]) -> int:
    """Entry point of ``zoo lcsc``."""
    import dataclasses

    p = _parser()
    try:
        args = p.parse_args(argv)
    except SystemExit:  # --help
        return 0
    if args.threads < 0:
        raise ZooError("--threads must be >= 0")
    import torch

    import zoo

    from .lcsc import SearchConfig, lcsc_zoo, write_lcsc_zoo

    if args.threads:
        torch.set_num_threads(args.threads)
    src = zoo.open(args.zoo)
    if not args.overwrite and _exists(args.out):
        raise ZooError(f"{args.out!r} already exists; pass --overwrite to replace it")
    config = dataclasses.replace(SearchConfig(), population=args.population, max_evals=args.max_evals,
                                 lower=args.lower, upper=args.upper)
    result = lcsc_zoo(src, args.models, config, seed=args.seed, val_fraction=args.val_fraction,
                      val_seed=args.val_seed, metric=args.metric, upto=args.upto)
    out = write_lcsc_zoo(src, result, args.out, overwrite=args.overwrite)
    t = result.table
    score = "acc" if "lcsc_test_acc" in t else "r2"
    line = (f"zoo lcsc: {len(t)} models of {args.zoo} over {int(t['checkpoints'].iloc[0])} checkpoints in "
            f"{result.seconds:.1f}s -> {out.path}; mean test {score}: last {t[f'last_test_{score}'].mean():.4f}, "
            f"EMA {t[f'ema_test_{score}'].mean():.4f}, uniform {t[f'uniform_test_{score}'].mean():.4f}, "
            f"LCSC {t[f'lcsc_test_{score}'].mean():.4f}")
    print(line)
    return 0


def _exists(path: str) -> bool:
    """Whether a zoo (or anything) is at ``path``."""
    from zoo import store

    return store.path_exists(path)
