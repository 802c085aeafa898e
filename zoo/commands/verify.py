"""``zoo verify PATH [--repair] [--json]``: read back every committed model's chunks and report damage."""

from __future__ import annotations

import json

from zoo.app.args import ArgumentParser, parse
from zoo.store import open as open_zoo
from zoo.store.verify import repair, verify


def main(argv: list[str]) -> int:
    """check every committed model's stored data; --repair marks damage for rebuild"""
    parser = ArgumentParser(prog="zoo verify", description="check every committed model's data")
    parser.add_argument("path")
    parser.add_argument(
        "--repair",
        action="store_true",
        help="mark damaged blocks pending (and delete their data) so `zoo build` retrains them",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parse(parser, argv)
    if args is None:
        return 0
    z = open_zoo(args.path)
    reports = verify(z)
    reset = repair(z, reports) if args.repair and reports else 0
    if args.json:
        print(json.dumps({"damaged_blocks": [r.__dict__ for r in reports], "models_reset": reset}))
    else:
        for r in reports:
            print(
                f"damaged  layout {r.layout} block {r.block} (models {r.model_ids[0]}..{r.model_ids[-1]}):"
                f" {'; '.join(r.problems)}"
            )
        if not reports:
            print(f"zoo {z.path}: every committed model reads back intact ({len(z)} models)")
        elif args.repair:
            print(f"repaired: {reset} models marked pending; run the same `zoo build` again to retrain them")
        else:
            print(f"{len(reports)} damaged blocks; `zoo verify {args.path} --repair` marks them for rebuild")
    return 0 if not reports or args.repair else 1
