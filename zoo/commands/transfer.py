"""``zoo export ZOO DIR`` and ``zoo import DIR --out NEW.zarr``: the command-line face of :mod:`zoo.store.transfer`."""

from __future__ import annotations

from pathlib import Path

from zoo.app.args import ArgumentParser, parse
from zoo.errors import ZooError
from zoo.store.transfer import export_zoo, import_zoo, parse_arch, read_json


def main_export(argv: list[str]) -> int:
    """write a zoo as zoo.json + one safetensors file per model"""
    usage = "zoo export ZOO DIR"
    parser = ArgumentParser(
        prog="zoo export",
        usage=usage,
        description="export a zoo: zoo.json + one safetensors file per model (state dict at every checkpoint, metrics)",
    )
    parser.add_argument("zoo", help="the zoo to export (a .zarr path or URL)")
    parser.add_argument("dir", help="a new (or empty) folder to write")
    args = parse(parser, argv)
    if args is None:
        return 0
    out = export_zoo(args.zoo, args.dir)
    files = len(list((out / "models").glob("*.safetensors")))
    print(f"exported {args.zoo} to {out}: zoo.json and {files} model files")
    return 0


def main_import(argv: list[str]) -> int:
    """read an export or the flat weights.npy format into a new zoo

    The flat format: weights.npy, layout.csv, metrics.csv."""

    usage = (
        "zoo import DIR --out NEW.zarr [--overwrite] [--no-datasets]"
        " [--arch-file SPEC.json | --arch KEY=VALUE ...] [--epoch N] [--dataset NAME]"
        " [--metrics NAME ...]"
    )
    parser = ArgumentParser(
        prog="zoo import",
        usage=usage,
        description="import a folder into a new zoo: a `zoo export`"
        " folder, or the flat format (weights.npy [N, P], layout.csv, metrics.csv) of one architecture",
    )
    parser.add_argument("dir", help="the folder to import")
    parser.add_argument("--out", required=True, help="the zoo to create (.zarr path or URL)")
    parser.add_argument("--overwrite", action="store_true", help="replace a zoo already at --out")
    parser.add_argument(
        "--no-datasets", action="store_true", help="export folders: do not reattach the datasets the zoo records"
    )
    parser.add_argument("--arch-file", help="flat format: architecture spec as JSON (default: DIR/arch.json)")
    parser.add_argument(
        "--arch",
        nargs="+",
        metavar="KEY=VALUE",
        help="flat format: architecture spec, e.g. name=mlp input_shape=64 num_outputs=10 width=16 depth=1",
    )
    parser.add_argument("--epoch", type=int, default=0, help="flat format: the epoch the weights were saved at")
    parser.add_argument("--dataset", help="flat format: the dataset the models were trained on (a name or .npz)")
    parser.add_argument(
        "--metrics",
        nargs="+",
        metavar="NAME",
        help="flat format: metrics.csv columns that are metrics (default: the known names)",
    )
    args = parse(parser, argv)
    if args is None:
        return 0
    if args.arch_file and args.arch:
        raise ZooError("give the architecture once: --arch-file or --arch, not both")
    arch = parse_arch(args.arch) if args.arch else None
    if args.arch_file:
        if not Path(args.arch_file).is_file():
            raise ZooError(f"no architecture spec file at {args.arch_file!r}")
        arch = read_json(Path(args.arch_file))
    z = import_zoo(
        args.dir,
        args.out,
        arch=arch,
        epoch=args.epoch,
        metric_names=args.metrics,
        dataset=args.dataset,
        datasets=not args.no_datasets,
        overwrite=args.overwrite,
    )
    counts = z.models["status"].value_counts().to_dict()
    print(f"imported {args.dir} into {args.out}: {len(z)} models {counts}, layouts {list(z.layouts)}")
    return 0
