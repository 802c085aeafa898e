"""``zoo info PATH [--json]``: what a zoo holds, without reading any weights."""

from __future__ import annotations

import json

from zoo.app.args import ArgumentParser, parse
from zoo.store import open as open_zoo
from zoo.store import summarize

SHOWN_DATASETS = 4  # a zoo over hundreds of tasks names a few and counts the rest


def dataset_text(names: list[str]) -> str:
    """``datasets a, b`` or, for many, ``232 datasets: a, b, c, d, ...`` (``--json`` lists them all)."""
    if len(names) <= SHOWN_DATASETS:
        return f"datasets {', '.join(names)}"
    return f"{len(names)} datasets: {', '.join(names[:SHOWN_DATASETS])}, ... (--json lists all)"


def main(argv: list[str]) -> int:
    """summarize a zoo: models by status, layouts, checkpoints, accuracy"""
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
    print(f"zoo      {s['path']}  (schema {s['schema_version']}, {dataset_text(s['datasets'])})")
    print(f"models   {s['models']}: {s['done']} done, {s['diverged']} diverged, {s['pending']} pending")
    for key, L in s["layouts"].items():
        print(f"layout   {key}: {L['models']} models x {L['parameters']} parameters ({L['arch']})")
    print(f"epochs   {s['checkpoints']}  ({len(s['checkpoints'])} checkpoints)")
    if s["score_min"] is not None:
        print(f"{s['score']:<8} {s['score_min']:.4f} .. {s['score_max']:.4f} (mean {s['score_mean']:.4f})")
    if s["tables"] or s["has_canonical"]:
        print(f"extras   tables {s['tables']}, canonical weights: {s['has_canonical']}")
    return 0
