"""``zoo lcsc ZOO [--models IDS|all] --out OUT.zarr``: LCSC over every chosen model's saved checkpoints;
``zoo lcsc RUN_DIR --generator --out DIR``: LCSC over a fitted generator's training snapshots.

Zoos: writes the merged weights as a zoo (BatchNorm statistics recomputed on the training split) with the
table ``lcsc`` (``zoo.open(OUT).table("lcsc")``): per source model, validation and test metrics of the last
checkpoint, the best EMA, the best uniform average and LCSC, and the coefficients over the source's checkpoints.
Generators: writes a run folder (``generators.load``, ``zoo sample``) with the combined weights and ``lcsc.json``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import zoo
from generators.lcsc.search import GENERATOR_SEARCH, SearchConfig
from generators.lcsc.snapshots import check_run_out, lcsc_generator
from generators.lcsc.zoo import lcsc_zoo, write_lcsc_zoo
from zoo.app.args import ArgumentParser, parse
from zoo.app.runtime import DEVICE_HELP, THREADS, THREADS_HELP, resolve_device, set_threads
from zoo.errors import ZooError
from zoo.store import path_exists

USAGE = (
    "zoo lcsc ZOO --out OUT.zarr [--models IDS|all] [--metric loss|acc] [options]"
    " | zoo lcsc RUN_DIR --generator --out DIR [--samples 16] [options]"
)


def doc(name: str) -> str:
    """The doc of a search setting (:class:`SearchConfig`, the typed config its flags fill)."""
    return next(f.metadata["help"] for f in dataclasses.fields(SearchConfig) if f.name == name)


def _parser() -> ArgumentParser:
    d = SearchConfig()
    p = ArgumentParser(
        prog="zoo lcsc",
        usage=USAGE,
        description="LCSC: search coefficients of linear combinations of "
        "saved checkpoints on a validation split carved from the training data; write the merged models",
    )
    p.add_argument("zoo", help="the zoo whose models' checkpoints to combine (a run folder with --generator)")
    p.add_argument(
        "--out",
        required=True,
        help="zoo to write the merged models to (with the table 'lcsc'); with --generator, the run folder to write",
    )
    p.add_argument("--generator", action="store_true", help="combine a fitted generator's snapshots instead")
    p.add_argument("--samples", type=int, default=16, help="--generator: fixed-seed samples per candidate (16)")
    p.add_argument("--sample-seed", type=int, default=0, help="--generator: seed of those samples (0)")
    p.add_argument("--models", default="all", help="'all' (every done model) or ids such as 0,3,5-9")
    p.add_argument("--metric", default="loss", help="fitness on the validation split: loss (default), acc or r2")
    p.add_argument(
        "--val-fraction", type=float, default=0.2, help="share of the training split used for validation (default 0.2)"
    )
    p.add_argument("--val-seed", type=int, default=0, help="seed of the validation split (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the search (default 0)")
    p.add_argument(
        "--upto",
        type=int,
        default=None,
        help="combine checkpoints 0..UPTO only (index; default all); --generator: snapshots up to training step UPTO",
    )
    p.add_argument(
        "--population",
        type=int,
        default=None,
        help=f"{doc('population')} ({d.population}; --generator: {GENERATOR_SEARCH.population})",
    )
    p.add_argument(
        "--max-evals",
        type=int,
        default=None,
        help=f"{doc('max_evals')} ({d.max_evals}; --generator: {GENERATOR_SEARCH.max_evals})",
    )
    p.add_argument("--lower", type=float, default=d.lower, help=f"{doc('lower')} ({d.lower})")
    p.add_argument("--upper", type=float, default=d.upper, help=f"{doc('upper')} ({d.upper})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing zoo at --out")
    p.add_argument("--threads", type=int, default=THREADS, help=THREADS_HELP)
    p.add_argument(
        "--device",
        default="cpu",
        help=f"where the candidates (or, with --generator, their samples) are evaluated: {DEVICE_HELP} (default"
        " cpu; the search itself runs on the CPU)",
    )
    return p


def main(argv: list[str]) -> int:
    """LCSC: search linear combinations of saved checkpoints (val split)"""
    args = parse(_parser(), argv)
    if args is None:  # --help
        return 0
    set_threads(args.threads)
    resolve_device(args.device)  # --device cuda without a GPU: one line before anything is read or written
    base = GENERATOR_SEARCH if args.generator else SearchConfig()
    config = dataclasses.replace(
        base,
        lower=args.lower,
        upper=args.upper,
        population=base.population if args.population is None else args.population,
        max_evals=base.max_evals if args.max_evals is None else args.max_evals,
    )
    if args.generator:
        return _generator(args, config)
    src = zoo.open(args.zoo)
    if not args.overwrite and _exists(args.out):
        raise ZooError(f"{args.out!r} already exists; pass --overwrite to replace it")
    result = lcsc_zoo(
        src,
        args.models,
        config,
        seed=args.seed,
        val_fraction=args.val_fraction,
        val_seed=args.val_seed,
        metric=args.metric,
        upto=args.upto,
        progress=True,
        device=args.device,
    )
    out = write_lcsc_zoo(src, result, args.out, overwrite=args.overwrite, device=args.device)
    t = result.table
    score = "acc" if "lcsc_test_acc" in t else "r2"
    line = (
        f"zoo lcsc: {len(t)} models of {args.zoo} over {int(t['checkpoints'].iloc[0])} checkpoints in "
        f"{result.seconds:.1f}s -> {out.path}; mean test {score}: last {t[f'last_test_{score}'].mean():.4f}, "
        f"EMA {t[f'ema_test_{score}'].mean():.4f}, uniform {t[f'uniform_test_{score}'].mean():.4f}, "
        f"LCSC {t[f'lcsc_test_{score}'].mean():.4f}"
    )
    print(line + f"\nwrote {out.path} (merged weights; per-model search results: zoo.open(...).table('lcsc'))")
    return 0


def _generator(args, config) -> int:
    """``zoo lcsc RUN_DIR --generator --out DIR``: search over the run's snapshots, write a run folder."""
    out = Path(args.out)
    check_run_out(args.zoo, out, args.overwrite)
    if args.models != "all":
        raise ZooError("--models selects zoo models; a generator run has none (drop it with --generator)")
    r = lcsc_generator(
        args.zoo,
        config,
        samples=args.samples,
        sample_seed=args.sample_seed,
        seed=args.seed,
        val_fraction=args.val_fraction,
        val_seed=args.val_seed,
        upto=args.upto,
        progress=True,
        device=args.device,
    )
    r.save(out)
    score = next(k for k in r.results["lcsc"] if k.startswith("test_") and not k.endswith("loss"))
    print(
        f"zoo lcsc: generator {args.zoo} over {len(r.steps)} snapshots (steps {r.steps[0]}..{r.steps[-1]}) in "
        f"{r.seconds:.1f}s -> {out}; mean {score} of {args.samples} samples: "
        + ", ".join(f"{m} {v[score]:.4f}" for m, v in r.results.items())
    )
    print(f"wrote {out} (a run folder with lcsc.json: zoo sample {out} -n 100 --out OUT.zarr)")
    return 0


def _exists(path: str) -> bool:
    """Whether a zoo (or anything) is at ``path``."""
    return path_exists(path)
