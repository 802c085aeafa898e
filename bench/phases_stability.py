"""How stable are a phase recipe's labels when it is rebuilt with other seeds?

Rebuilds a phase recipe (landscape enabled) for every seed offset x task seed, labels each rebuild's cells
with the configured rule, and reports per cell how often each label appears (and how often it was marginal,
i.e. its interval crossed a cut-off) and per phase in how many rebuilds it is present at all and present in
at least one cell that is not marginal. Writes ``docs/<name>.json`` and ``docs/<name>.png``; with
``--diagram STEM`` also the phase diagram of the rebuild at the recipe's own seeds as ``docs/STEM.{png,json}``.
Zoos are kept under ``--work``; ``--reuse`` relabels kept zoos without rebuilding (cut-offs only).

Rerun:  .venv/bin/python bench/phases_stability.py --recipe phase-mlp-digits --offsets 0,100,200,300,400 \\
            --task-seeds 0,1 --diagram phase-mlp-digits
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402
from zoo.app.config import compose  # noqa: E402
from zoo.commands.landscape import parse_overrides  # noqa: E402
from zoo.landscape.compute import landscape_cells, resolve_config  # noqa: E402
from zoo.landscape.phases import PHASES  # noqa: E402
from zoo.landscape.plot import PHASE_COLORS, phase_diagram  # noqa: E402
from zoo.training.build import build  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def rebuild(
    recipe: str, offset: int, task_seed: int, path: Path, reuse: bool, extra: list[str]
) -> tuple[object, float]:
    """The zoo of one rebuild (built here unless ``reuse`` and it exists with landscape tables), build seconds."""
    if reuse and path.exists():
        z = zoo.open(str(path))
        if z.landscape is not None and z.table("landscape_pairs") is not None:
            return z, 0.0
    cfg = compose(
        "build",
        [
            f"recipe={recipe}",
            f"out={path}",
            "progress=false",
            "overwrite=true",
            "threads=1",
            f"recipe.seed_offset={offset}",
            f"recipe.task_seed={task_seed}",
            "recipe.landscape.enabled=true",
            *extra,
        ],
    )
    t0 = time.perf_counter()
    z = build(cfg)
    return z, time.perf_counter() - t0


def summarize(runs: list[dict], cell_axes: list[str]) -> dict:
    """Per cell: label counts and marginal counts over rebuilds; per phase: rebuilds where present / robust."""
    cells: dict[str, dict] = {}
    for run in runs:
        for c in run["cells"]:
            key = "|".join(f"{a}={c[a]}" for a in cell_axes)
            e = cells.setdefault(
                key, {**{a: c[a] for a in cell_axes}, "labels": Counter(), "marginal": 0, "robust_labels": Counter()}
            )
            e["labels"][c["phase"] or "unlabelled"] += 1
            if c["marginal"]:
                e["marginal"] += 1
            else:
                e["robust_labels"][c["phase"] or "unlabelled"] += 1
    n = len(runs)
    out_cells = []
    for e in cells.values():
        top, k = e["labels"].most_common(1)[0]
        out_cells.append(
            {
                **{a: v for a, v in e.items() if a not in ("labels", "robust_labels")},
                "labels": dict(e["labels"]),
                "robust_labels": dict(e["robust_labels"]),
                "modal": top,
                "modal_share": k / n,
                "stable": k == n,
            }
        )
    by_task: dict[str, list[dict]] = {}
    for run in runs:
        by_task.setdefault(str(run["task_seed"]), []).append(run)
    per_phase = {}
    for p in PHASES:
        per_phase[p] = {
            "present": sum(p in r["phases_present"] for r in runs),
            "robust": sum(p in r["phases_robust"] for r in runs),
            "present_by_task_seed": {t: sum(p in r["phases_present"] for r in rs) for t, rs in by_task.items()},
            "robust_by_task_seed": {t: sum(p in r["phases_robust"] for r in rs) for t, rs in by_task.items()},
        }
    return {
        "rebuilds": n,
        "cells": out_cells,
        "phases": per_phase,
        "all_five_present": sum(set(PHASES) <= set(r["phases_present"]) for r in runs),
        "all_five_robust": sum(set(PHASES) <= set(r["phases_robust"]) for r in runs),
        "stable_cells": sum(c["stable"] for c in out_cells),
        "cells_total": len(out_cells),
    }


def draw(summary: dict, png: Path, title: str) -> None:
    """Left: modal label per cell (share in text, hatched if ever marginal); right: rebuilds per phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches  # noqa: F401 (hatching)
    import matplotlib.pyplot as plt
    import numpy as np

    cells = summary["cells"]
    widths = sorted({c["width"] for c in cells})
    temps = sorted({c["batch_size"] for c in cells})
    n = summary["rebuilds"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.6, 1]})
    rgb = np.ones((len(temps), len(widths), 3))
    for c in cells:
        i, j = temps.index(c["batch_size"]), widths.index(c["width"])
        rgb[i, j] = matplotlib.colors.to_rgb(PHASE_COLORS.get("" if c["modal"] == "unlabelled" else c["modal"]))
    ax.imshow(rgb, origin="lower", aspect="auto")
    for c in cells:
        i, j = temps.index(c["batch_size"]), widths.index(c["width"])
        others = ", ".join(f"{k} {v}" for k, v in sorted(c["labels"].items(), key=lambda kv: -kv[1]) if k != c["modal"])
        ax.text(
            j,
            i,
            f"{c['modal']} {c['labels'][c['modal']]}/{n}\nmarg {c['marginal']}" + (f"\n{others}" if others else ""),
            ha="center",
            va="center",
            fontsize=5.5,
        )
        if c["marginal"]:
            ax.add_patch(
                matplotlib.patches.Rectangle(
                    (j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="black", linewidth=0, alpha=0.35
                )
            )
    ax.set_xticks(range(len(widths)), [str(w) for w in widths], fontsize=7)
    ax.set_yticks(range(len(temps)), [str(t) for t in temps], fontsize=7)
    ax.set_xlabel("width (load)")
    ax.set_ylabel("batch size (temperature ↓)")
    ax.set_title(f"modal label over {n} rebuilds (count/{n}; 'marg': rebuilds where marginal, hatched)", fontsize=8)
    xs = np.arange(len(PHASES))
    pres = [summary["phases"][p]["present"] for p in PHASES]
    rob = [summary["phases"][p]["robust"] for p in PHASES]
    bx.bar(xs - 0.2, pres, 0.4, color=[PHASE_COLORS[p] for p in PHASES], alpha=0.45, label="present")
    bx.bar(xs + 0.2, rob, 0.4, color=[PHASE_COLORS[p] for p in PHASES], label="in a non-marginal cell")
    for x, a, b in zip(xs, pres, rob):
        bx.text(x - 0.2, a + 0.1, str(a), ha="center", fontsize=7)
        bx.text(x + 0.2, b + 0.1, str(b), ha="center", fontsize=7)
    bx.set_xticks(xs, PHASES)
    bx.set_ylim(0, n + 1)
    bx.axhline(n, color="gray", lw=0.5)
    bx.set_ylabel(f"rebuilds (of {n})")
    bx.legend(fontsize=7)
    bx.set_title("rebuilds in which each phase appears", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="phase-mlp-digits")
    ap.add_argument("--offsets", default="0,100,200,300,400", help="recipe.seed_offset values")
    ap.add_argument("--task-seeds", default="0,1", help="recipe.task_seed values")
    ap.add_argument(
        "--work", default=None, help="where rebuilt zoos are kept (default data/runs/phases-stability/RECIPE)"
    )
    ap.add_argument("--reuse", action="store_true", help="relabel zoos already under --work instead of rebuilding")
    ap.add_argument(
        "--name", default=None, help="docs/NAME.{json,png} (default phases-stability-RECIPE minus 'phase-')"
    )
    ap.add_argument("--diagram", default=None, help="also write the recipe-seed rebuild's diagram as docs/STEM.*")
    ap.add_argument("--landscape", nargs="*", default=[], help="cut-off overrides, e.g. phases.mc_tol=0.05")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("overrides", nargs="*", help="extra build overrides (recipe.KEY=VALUE)")
    a = ap.parse_args()
    offsets = [int(x) for x in a.offsets.split(",")]
    tasks = [int(x) for x in a.task_seeds.split(",")]
    work = Path(a.work or ROOT / "data" / "runs" / "phases-stability" / a.recipe)
    work.mkdir(parents=True, exist_ok=True)
    name = a.name or "phases-stability-" + a.recipe.removeprefix("phase-")
    out = Path(a.out)
    runs = []
    recipe_defaults = compose("build", [f"recipe={a.recipe}", *a.overrides])["recipe"]
    for t in tasks:
        for o in offsets:
            path = work / f"o{o}-t{t}.zarr"
            z, secs = rebuild(a.recipe, o, t, path, a.reuse, a.overrides)
            recipe_land = dict((z.config.get("recipe") or {}).get("landscape") or {})
            merged = {**recipe_land, **parse_overrides(a.landscape)}
            merged["phases"] = {**dict(recipe_land.get("phases") or {}), **dict(merged.get("phases") or {})}
            cfg = resolve_config(merged)
            cells, h_cut = landscape_cells(z, cfg)
            recs = json.loads(cells.to_json(orient="records"))
            present = sorted({c["phase"] for c in recs if c["phase"]})
            robust = sorted({c["phase"] for c in recs if c["phase"] and not c["marginal"]})
            runs.append(
                {
                    "seed_offset": o,
                    "task_seed": t,
                    "build_seconds": round(secs, 1),
                    "phases_present": present,
                    "phases_robust": robust,
                    "counts": dict(Counter(c["phase"] or "unlabelled" for c in recs)),
                    "marginal_cells": sum(c["marginal"] for c in recs),
                    "cells": recs,
                }
            )
            print(
                f"offset {o} task {t}: built in {secs:.0f}s; present {present}; robust {robust};"
                f" marginal {runs[-1]['marginal_cells']}/{len(recs)}",
                flush=True,
            )
            if a.diagram and o == int(recipe_defaults["seed_offset"]) and t == int(recipe_defaults["task_seed"]):
                extra = {
                    "zoo": f"{a.recipe} rebuilt by bench/phases_stability.py",
                    "recipe": a.recipe,
                    "hessian_threshold": h_cut,
                }
                phase_diagram(cells, out, cfg["phases"], extra, name=a.diagram)
    summary = summarize(runs, ["width", "batch_size"])
    payload = {
        "recipe": a.recipe,
        "seed_offsets": offsets,
        "task_seeds": tasks,
        "build_overrides": a.overrides,
        "cutoffs": resolve_config(parse_overrides(a.landscape))["phases"],
        **summary,
        "runs": [{k: v for k, v in r.items() if k != "cells"} for r in runs],
        "rerun": "python bench/phases_stability.py " + " ".join(sys.argv[1:]),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1))
    draw(
        summary, out / f"{name}.png", f"{a.recipe}: {len(runs)} rebuilds (seed offsets {offsets} x task seeds {tasks})"
    )
    print(
        "per phase (rebuilds present / in a non-marginal cell):",
        {p: (v["present"], v["robust"]) for p, v in summary["phases"].items()},
    )
    print(
        f"all five present in {summary['all_five_present']}/{len(runs)}, robustly in {summary['all_five_robust']};"
        f" stable cells {summary['stable_cells']}/{summary['cells_total']}"
    )
    print(f"wrote {out / (name + '.json')} and {out / (name + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
