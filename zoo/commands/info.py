"""``zoo info PATH [--json] [--render PNG [--count N]]``: what a zoo holds, without reading any weights; for an
INR zoo, ``--render`` writes a PNG grid of the images its first N finished INRs draw (zoo.inr).

Without ``--render`` it reads the zoo's metadata only (:mod:`zoo.store.meta`) and imports no torch: ~1 s of CPU
instead of ~3 s (docs/startup.md)."""

from __future__ import annotations

import json

from zoo.app.args import ArgumentParser, parse
from zoo.errors import ZooError
from zoo.store.meta import open_meta, summarize

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
    parser.add_argument("--render", metavar="PNG", help="INR zoos: write a PNG grid of the images the INRs draw")
    parser.add_argument("--count", type=int, default=64, help="INRs in the --render grid (default 64)")
    args = parse(parser, argv)
    if args is None:
        return 0
    if args.render and args.count < 1:
        raise ZooError(f"--count must be >= 1, got {args.count}")
    z = open_meta(args.path)
    s = summarize(z)
    if args.render:
        _render(args.path, args.render, args.count)
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


def _render(path: str, png: str, count: int) -> None:
    """Write the PNG grid of the images the first ``count`` finished INRs of the zoo at ``path`` draw."""
    # torch only here: the summary above reads no weights, and importing torch would triple its start-up
    from zoo.inr import image_grid, render, write_png
    from zoo.store.reader import open as open_zoo

    z = open_zoo(path)
    models = z.models
    ids = models.loc[models["status"] == "done", "model_id"].to_numpy()[:count]
    if len(ids) == 0:
        raise ZooError(f"{path} has no finished models to render")
    write_png(png, image_grid(render(z, ids.tolist()), columns=16))
    print(f"wrote {png}: the images of INRs {ids[0]}..{ids[-1]} ({len(ids)})")
