"""Issue 24's open bar: every try of a generator both good (>= 0.99 of the training models' test accuracy) and more
novel than noise at equal accuracy, collected from the ``zoo diagnose`` reports the tries wrote.

Each try was run by hand (commands in TRIES, one fit each, seed 0, 100 samples seed 0, 1 torch thread); this script
only reads their ``diagnose.json`` and writes docs/generators-openbar.json. Rerun a try with its command, then:
.venv/bin/python bench/openbar.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generators.diagnose import method_rows  # noqa: E402

FIT = ".venv/bin/zoo fit generator=simplex zoo=data/zoos/{zoo}.zarr out=data/runs/try/{name} {args}"
SAMPLE = ".venv/bin/zoo sample data/runs/try/{name} -n 100 --seed 0 --out data/runs/try/{name}/samples.zarr"
DIAG = ".venv/bin/zoo diagnose data/runs/try/{name}/samples.zarr --train data/zoos/{zoo}.zarr --out {diag}"
# (name, zoo, fit overrides, diagnose folder, what it tried)
TRIES = [
    (
        "digits-k3-all-s400",
        "dwf-mlp-digits-seeds",
        "generator.vertices=null generator.k=3 generator.steps=400 generator.lr=0.02 generator.val_every=50",
        "data/runs/diag-simplex-digits",
        "first try: 115 vertices, k=3",
    ),
    (
        "mnist-k3-all-s400",
        "dwf-mlp-mnist",
        "generator.vertices=null generator.k=3 generator.steps=400 generator.lr=0.02 generator.val_every=50",
        "data/runs/diag-simplex-mnist",
        "115 vertices, k=3, 400 steps",
    ),
    (
        "mnist-k2-s1500",
        "dwf-mlp-mnist",
        "generator.vertices=null generator.k=2 generator.steps=1500 generator.lr=0.05 generator.val_every=100",
        "data/runs/try/diag-mnist-k2-s1500",
        "115 vertices, k=2, 1500 steps",
    ),
    (
        "mnist-v16-k2-s1000",
        "dwf-mlp-mnist",
        "generator.vertices=16 generator.k=2 generator.steps=1000 generator.lr=0.05 generator.val_every=100",
        "data/runs/try/diag-mnist-v16-k2-s1000",
        "16 vertices, k=2, 1000 steps",
    ),
    (
        "mnist-v16-k2-s2500",
        "dwf-mlp-mnist",
        "generator.vertices=16 generator.k=2 generator.steps=2500 generator.lr=0.05 generator.val_every=250",
        "data/runs/try/diag-mnist-v16-k2-s2500",
        "16 vertices, k=2, 2500 steps",
    ),
]
BENCH = ".venv/bin/python bench/generators.py --zoos-list {zoo}"  # the defaults, as bench/generators.py fits them
# the same fitted defaults, another sample seed: zoo sample RUN -n 100 --seed 1, then zoo diagnose
SEED1 = ".venv/bin/zoo sample data/runs/bench-generators/simplex-{zoo} -n 100 --seed 1 --out data/runs/try/{out}.zarr"
SEEDS = [
    ("default-dwf-mlp-mnist-seed1", "dwf-mlp-mnist", "seed1-mnist", "data/runs/try/diag-seed1-mnist"),
    ("default-mlp1-mnist-seed1", "mlp1-mnist", "seed1-mlp1", "data/runs/try/diag-seed1-mlp1"),
]
DEFAULTS = [
    (f"default-{zoo}", zoo, "(defaults)", f"data/runs/bench-generators/diagnose-{zoo}", "the shipped defaults")
    for zoo in ("dwf-mlp-mnist", "mlp1-mnist", "dwf-mlp-digits-seeds")
]


def main() -> int:
    out = []
    for name, zoo, args, diag, what in TRIES + DEFAULTS:
        path = Path(diag, "diagnose.json")
        rec = {
            "try": name,
            "zoo": zoo,
            "what": what,
            "commands": [BENCH.format(zoo=zoo)]
            if name.startswith("default-")
            else [
                FIT.format(zoo=zoo, name=name, args=args),
                SAMPLE.format(name=name),
                DIAG.format(name=name, zoo=zoo, diag=diag),
            ],
        }
        if not path.is_file():
            out.append({**rec, "measured": False})
            continue
        report = json.loads(path.read_text())
        rows = {r["method"]: r for r in method_rows(report)}
        s, t = rows["simplex"], rows["train"]
        rec.update(
            measured=True,
            test_acc=s["test_acc"],
            train_models_test_acc=t["test_acc"],
            acc_ratio=s["test_acc"] / t["test_acc"],
            nn_l2_over_train_median=s["nn_l2_over_train_median"],
            max_iou=s["max_iou"],
            noise_max_iou_at_equal_acc=s["noise_max_iou_at_equal_acc"],
            more_novel_than_noise=s["more_novel_than_noise"],
            good_and_novel=s["good_and_novel"],
            zoo_sets_novelty_bar=(report.get("novelty_bar") or {}).get("training_models_more_novel_than_noise"),
        )
        out.append(rec)
    for name, zoo, zout, diag in SEEDS:
        path = Path(diag, "diagnose.json")
        cmds = [
            SEED1.format(zoo=zoo, out=zout),
            f".venv/bin/zoo diagnose data/runs/try/{zout}.zarr --train data/zoos/{zoo}.zarr --out {diag}",
        ]
        rec = {"try": name, "zoo": zoo, "what": "the shipped defaults' fit, sample seed 1", "commands": cmds}
        if path.is_file():
            report = json.loads(path.read_text())
            rows = {r["method"]: r for r in method_rows(report)}
            s, t = next(r for k, r in rows.items() if r["kind"] == "samples"), rows["train"]
            rec.update(
                measured=True,
                test_acc=s["test_acc"],
                train_models_test_acc=t["test_acc"],
                acc_ratio=s["test_acc"] / t["test_acc"],
                nn_l2_over_train_median=s["nn_l2_over_train_median"],
                max_iou=s["max_iou"],
                noise_max_iou_at_equal_acc=s["noise_max_iou_at_equal_acc"],
                more_novel_than_noise=s["more_novel_than_noise"],
                good_and_novel=s["good_and_novel"],
            )
        else:
            rec["measured"] = False
        out.append(rec)
    Path("docs/generators-openbar.json").write_text(json.dumps({"tries": out}, indent=2))
    for r in out:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
