"""``zoo verify PATH [--repair] [--json]``: read back every committed model's chunks and report damage."""

from __future__ import annotations

import json

from zoo.app.args import ArgumentParser, parse
from zoo.store import open as open_zoo
from zoo.store.verify import repair, restore_advice, verify


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
        advice = restore_advice(z) if reports else None
        print(json.dumps({"damaged_blocks": [r.__dict__ for r in reports], "models_reset": reset, "restore": advice}))
    else:
        for r in reports:
            which = f"models {r.damaged}" if r.damaged is not None else f"models {r.model_ids[0]}..{r.model_ids[-1]}"
            print(f"damaged  layout {r.layout} block {r.block} ({which}): {'; '.join(r.problems)}")
        if not reports:
            print(f"zoo {z.path}: every committed model reads back intact ({len(z)} models)")
        elif args.repair:
            print(f"repaired: {reset} models marked pending; to restore them, {restore_advice(z)}")
        else:
            print(f"{len(reports)} damaged blocks; `zoo verify {args.path} --repair` marks them for rebuild")
    return 0 if not reports or args.repair else 1
