"""``zoo info PATH [--json]``: what a zoo holds, without reading any weights."""
from __future__ import annotations

from .argparsing import ArgumentParser, parse
import json

from .store import open as open_zoo
from .store import summarize


def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="zoo info", description="summarize a zoo")
    parser.add_argument("path")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parse(parser, argv)
    if args is None:
        return 0
    s = summarize(open_zoo(args.path))
    if args.json:
        print(json.dumps(s))
        return 0
    print(f"zoo      {s['path']}  (schema {s['schema_version']}, datasets {', '.join(s['datasets'])})")
    print(f"models   {s['models']}: {s['done']} done, {s['diverged']} diverged, {s['pending']} pending")
    for key, L in s["layouts"].items():
        print(f"layout   {key}: {L['models']} models x {L['parameters']} parameters ({L['arch']})")
    print(f"epochs   {s['checkpoints']}  ({len(s['checkpoints'])} checkpoints)")
    if s["score_min"] is not None:
        print(f"{s['score']:<8} {s['score_min']:.4f} .. {s['score_max']:.4f} (mean {s['score_mean']:.4f})")
    if s["tables"] or s["has_canonical"]:
        print(f"extras   tables {s['tables']}, canonical weights: {s['has_canonical']}")
    return 0
