"""``zoo sample RUN_DIR -n N --out OUT.zarr``: load a fitted generator's run folder and write its samples as a
zoo with train/test metrics and provenance."""

from __future__ import annotations

from generators import Generator, load
from zoo.app.args import ArgumentParser, parse
from zoo.app.runtime import DEVICE_HELP, THREADS, THREADS_HELP, resolve_device, set_threads
from zoo.errors import ZooError


def _parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="zoo sample",
        description="sample networks from a fitted generator and write them as a zoo (train/test metrics, provenance)",
    )
    p.add_argument("run", help="run folder written by `zoo fit`")
    p.add_argument("-n", type=int, default=100, help="number of networks (default 100)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--out", required=True, help="zoo to write (local path or fsspec URL)")
    p.add_argument("--condition", default=None, help="value of the conditioning column (default: drawn as in training)")
    p.add_argument(
        "--dataset",
        default=None,
        help="dataset-conditioned generators (d2nwg): the dataset to make "
        "weights for, a name or a .npz file with X_train, y_train, X_test, y_test",
    )
    p.add_argument(
        "--shots",
        type=int,
        default=None,
        help="with --dataset: training examples per class the "
        "generator sees, drawn with --seed (default: the run's setting)",
    )
    p.add_argument("--snapshot", type=int, default=None, help="use the raw weights saved at this training step")
    p.add_argument(
        "--data-root",
        default=None,
        help="folder that now holds the training zoo's data on disk, if it moved (default: $WSZOO_DATA_ROOT)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing zoo at --out")
    p.add_argument(
        "--metrics",
        default="train,test",
        help="splits to score the samples on into the models table: train,test (default), test, train or none"
        " (scoring big networks costs far more than sampling them)",
    )
    p.add_argument(
        "--png",
        default=None,
        help="INR zoos: the PNG of rendered samples beside their nearest training INRs (default: OUT without .zarr"
        " + .png)",
    )
    p.add_argument("--threads", type=int, default=THREADS, help=THREADS_HELP)
    p.add_argument(
        "--device",
        default="cpu",
        help=f"where the sampling network and the scoring run: {DEVICE_HELP} (default cpu; the random draws are"
        " made on the CPU, so a seed draws the same on every device)",
    )
    return p


def main(argv: list[str]) -> int:
    """sample networks from a fitted generator into a zoo"""
    args = parse(_parser(), argv)
    if args is None:
        return 0
    set_threads(args.threads)
    resolve_device(args.device)  # --device cuda without a GPU: one line before anything is loaded or written
    g = load(args.run, snapshot=args.snapshot)
    if not isinstance(g, Generator):
        raise ZooError(
            f"{args.run!r} holds a {g.name} run, which predicts weights rather than sampling them "
            "(zoo nowcast applies it)"
        )
    g.data_root = args.data_root
    g.check_sample_zoo(args.n, args.out, overwrite=args.overwrite)  # before any compute: -n, --out
    condition = args.condition
    if args.dataset is not None or args.shots is not None:
        if not g.conditions_on_dataset:
            raise ZooError(f"--dataset/--shots are for dataset-conditioned generators (d2nwg); this run is {g.name}")
        if args.dataset is None:
            raise ZooError("--shots needs --dataset NAME|file.npz")
        if args.condition is not None:
            raise ZooError("give --dataset or --condition, not both")
        condition = g.dataset_condition(args.dataset, shots=args.shots)
    z = g.sample_zoo(
        args.n,
        args.out,
        seed=args.seed,
        condition=condition,
        overwrite=args.overwrite,
        threads=args.threads,
        metrics=args.metrics,
        device=args.device,
    )
    df = z.models
    acc = df["test_acc"].dropna() if "test_acc" in df else None
    tail = (
        f"; test_acc mean {acc.mean():.4f} (min {acc.min():.4f}, max {acc.max():.4f})"
        if acc is not None and len(acc)
        else ""
    )
    print(
        f"zoo sample: {len(df)} networks from {args.run} (seed {args.seed}) -> {args.out}: "
        f"{int((df['status'] == 'done').sum())} finite{tail}"
    )
    training_zoo = g.origin.get("zoo")
    if g.origin.get("inr") and training_zoo:  # INRs draw images: show them beside the nearest training images
        from generators.diagnose.inr import nearest_renders, write_nearest_png  # Re-Basin, scipy: ~0.65 s of CPU

        png = args.png or str(args.out).rstrip("/").removesuffix(".zarr") + ".png"
        r = nearest_renders(z, training_zoo)
        write_nearest_png(png, r)
        print(
            f"wrote {png}: {len(r.sample_ids)} samples (left of each pair) beside the training INR whose image is"
            f" nearest (right); PSNR to it mean {r.psnr.mean():.1f} dB (min {r.psnr.min():.1f}, max {r.psnr.max():.1f})"
        )
    if training_zoo and not g.conditions_on_dataset:  # d2nwg's samples are for another dataset than its zoo's
        stem = str(args.out).rstrip("/").rsplit("/", 1)[-1].removesuffix(".zarr")
        print(f"next: zoo diagnose {args.out} --train {training_zoo} --out data/runs/diagnose-{stem}")
    return 0
