"""``zoo align PATH [--reference ID|auto] [--checkpoint all|last|N]``: write canonical weights and a report."""

from __future__ import annotations

import json

from zoo.app.args import ArgumentParser, parse
from zoo.app.runtime import DEVICE_HELP, THREADS, THREADS_HELP, resolve_device, set_threads
from zoo.errors import ZooError
from zoo.rebasin.align import align_zoo
from zoo.store import open as open_zoo
from zoo.store.lock import writing

EPILOG = """reference auto: per (layout, dataset), the done model with the best final train accuracy
(regression: lowest train loss), ties by lowest id: the test split is never used to choose.
--checkpoint all matches every checkpoint to the reference's same checkpoint; last / N match and write
only that one; --trajectory applies one permutation per model (found at the last selected checkpoint) to
all checkpoints. Diverged models are skipped unless --diverged finite. --repair auto (default) also
measures the aligned barrier with REPAIR (interpolated units reset to the endpoints' interpolated statistics
on training data) for layouts with BatchNorm; on / off for every layout / none. --symmetries
permutation,scale,sign also puts every ReLU unit's incoming weights at unit norm (scale) and every tanh/sine
unit at its canonical sign (sign) before matching; permutations are always resolved. --method activations
matches units by the correlation of their activations with the reference's on 512 training inputs instead
of by their weights (better on transformers: docs/transformers-align.md). Tables 'alignment' and
'alignment_summary' are stored in the zoo."""


def _parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="zoo align",
        description="Git Re-Basin: align every done model of a zoo to a reference and store canonical weights",
        epilog=EPILOG,
    )
    p.add_argument("path", help="zoo store (local path or fsspec URL)")
    p.add_argument("--reference", default="auto", help="model id, or auto (default)")
    p.add_argument("--checkpoint", default="all", help="all (default), last, or a checkpoint index")
    p.add_argument("--trajectory", action="store_true", help="one permutation per model for all checkpoints")
    p.add_argument("--diverged", default="skip", choices=["skip", "finite"], help="diverged models (default skip)")
    p.add_argument("--seed", type=int, default=0, help="seed of the group order and restarts")
    p.add_argument("--restarts", type=int, default=0, help="extra random restarts per model (best kept)")
    p.add_argument("--max-iter", type=int, default=100, help="most coordinate-descent passes")
    p.add_argument("--pairs", type=int, default=8, help="models per group whose loss barrier is measured")
    p.add_argument(
        "--repair",
        default="auto",
        choices=["auto", "on", "off"],
        help="barrier after matching + REPAIR: auto (BatchNorm layouts, default), on, off",
    )
    p.add_argument(
        "--symmetries",
        default="permutation",
        help="comma-separated from permutation,scale,sign (default permutation; sine signs always)",
    )
    p.add_argument(
        "--method",
        default="weights",
        choices=["weights", "activations"],
        help="weight matching (default) or activation matching on training inputs",
    )
    p.add_argument("--threads", type=int, default=THREADS, help=THREADS_HELP)
    p.add_argument(
        "--device",
        default="cpu",
        help=f"where the loss barriers are evaluated: {DEVICE_HELP} (default cpu; the matching, scipy's assignment"
        " solves, and REPAIR run on the CPU, so the canonical weights do not depend on it)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument(
        "--allow-pending",
        action="store_true",
        help="align although some models are still pending (a build in progress or interrupted)",
    )
    return p


def main(argv: list[str]) -> int:
    """Git Re-Basin: write canonical (permutation-aligned) weights

    User errors raise ZooError (the dispatcher prints one line, exit 2)."""
    args = parse(_parser(), argv)
    if args is None:
        return 0
    if args.restarts < 0 or args.max_iter < 1 or args.pairs < 0 or args.threads < 0:
        raise ZooError("--restarts, --pairs and --threads must be >= 0 and --max-iter >= 1")
    set_threads(args.threads)
    device = resolve_device(args.device)  # --device cuda without a GPU: one line before the zoo is locked or read
    with writing(args.path, "zoo align"):
        z = open_zoo(args.path)
        pending = int((z.models["status"] == "pending").sum())
        if pending and not args.allow_pending:
            raise ZooError(
                f"{pending} of {len(z)} models of {args.path!r} are still pending (a build in progress or"
                " interrupted): finish the build, or pass --allow-pending to align the others"
            )
        _, summary = align_zoo(
            z,
            args.reference,
            args.checkpoint,
            trajectory=args.trajectory,
            diverged=args.diverged,
            seed=args.seed,
            restarts=args.restarts,
            max_iter=args.max_iter,
            pairs=args.pairs,
            progress=not args.json,
            repair={"auto": "auto", "on": True, "off": False}[args.repair],
            symmetries=args.symmetries,
            method=args.method,
            device=device,
        )
    if args.json:
        print(json.dumps(summary))
        return 0
    models = sum(g["models"] for g in summary["groups"])
    print(
        f"aligned {models} models of {args.path}: canonical weights written beside the raw ones, tables 'alignment'"
        f" and 'alignment_summary'; checkpoints {summary['epochs']} (epochs),"
        f" reference rule: {summary['reference_rule']}; symmetries: {','.join(summary['symmetries'])};"
        f" matched by {summary['method']}"
    )
    for g in summary["groups"]:

        def f(x):
            return "n/a" if x is None else f"{x:.4g}"

        print(
            f"  {g['layout']} ({g['dataset']}): {g['models']} models -> reference {g['reference_id']}, "
            f"{g['seconds']:.1f} s, skipped diverged {g['skipped_diverged']}"
        )
        print(f"    L2 to reference      {f(g['mean_l2_before'])} -> {f(g['mean_l2_after'])}")
        print(f"    top-SV agreement     {f(g['mean_svd_before'])} -> {f(g['mean_svd_after'])}")
        print(
            f"    loss barrier ({g['barrier_pairs']} pairs) {f(g['mean_barrier_before'])} -> "
            f"{f(g['mean_barrier_after'])}"
            + (f" -> {f(g['mean_barrier_repair'])} with REPAIR" if g.get("repair") else "")
        )
    print(f"next: zoo train zoo={args.path} data.canonical=true ...  (encoders on the aligned weights)")
    return 0
