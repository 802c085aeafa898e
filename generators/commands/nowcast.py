"""``zoo nowcast RUN --zoo Z --out OUT.zarr [--steps K]``: KNOWN applied recursively to a trajectory zoo,
written as a zoo (the library: :func:`generators.known.nowcast_zoo`)."""

from __future__ import annotations

import sys
import warnings

import pandas as pd

from generators.known import nowcast_zoo
from generators.registry import get, load
from zoo.app.args import ArgumentParser, parse
from zoo.app.runtime import DEVICE_HELP, THREADS, THREADS_HELP, resolve_device, set_threads
from zoo.errors import ZooError


def _parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="zoo nowcast",
        description="apply a fitted KNOWN nowcaster recursively to a "
        "trajectory zoo's models and write the predicted weights as a zoo",
    )
    p.add_argument("run", help="run folder written by `zoo fit generator=known`")
    p.add_argument("--zoo", required=True, help="trajectory zoo whose models to nowcast")
    p.add_argument("--out", required=True, help="zoo to write: one checkpoint per recursive step")
    p.add_argument("--steps", type=int, default=1, help="recursive steps past the full-data weights, 1..10 (default 1)")
    p.add_argument(
        "--query",
        default=None,
        help='filter over the models table of --zoo that runs no code, e.g. "seed < 3" (default: all done)',
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing zoo at --out")
    p.add_argument("--threads", type=int, default=THREADS, help=THREADS_HELP)
    p.add_argument(
        "--device",
        default="cpu",
        help=f"where the predictor, the BatchNorm re-estimates and the scoring run: {DEVICE_HELP} (default cpu)",
    )
    return p


def main(argv: list[str]) -> int:
    """KNOWN: predict weights past a trajectory zoo's full data, as a zoo"""
    args = parse(_parser(), argv)
    if args is None:
        return 0
    set_threads(args.threads)
    resolve_device(args.device)  # --device cuda without a GPU: one line before anything is read or written
    g = load(args.run)
    if not isinstance(g, get("known").cls):
        raise ZooError(f"{args.run!r} holds a {g.name} generator; zoo nowcast needs a KNOWN run (generator=known)")
    with warnings.catch_warnings(record=True) as caught:  # e.g. a weight kind KNOWN never trained on: one line each
        warnings.simplefilter("always", UserWarning)
        z = nowcast_zoo(
            g, args.zoo, args.out, steps=args.steps, query=args.query, overwrite=args.overwrite, device=args.device
        )
    for w in {str(w.message) for w in caught if issubclass(w.category, UserWarning) and "KNOWN" in str(w.message)}:
        print(f"zoo nowcast: note: {w}", file=sys.stderr)
    df = z.models
    acc = df["test_acc"].dropna() if "test_acc" in df else pd.Series(dtype=float)
    tail = f"; test_acc after {args.steps} step(s) mean {acc.mean():.4f}" if len(acc) else ""
    print(
        f"zoo nowcast: {len(df)} models of {args.zoo} nowcast {args.steps} step(s) with {args.run} -> "
        f"{args.out} ({int((df['status'] == 'done').sum())} finite){tail}"
    )
    return 0
