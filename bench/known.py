"""KNOWN against naive fine-tuning and task-vector extrapolation on downstream tasks unlike the pretraining task.

Pretraining: trajectory zoos (recipe know-trajectories: 30 epochs on the full training set, then 6 one-epoch
stages on nested shrinking subsets; learning rate and batch size sampled per model) on digits-classes-01234
(digits 0-4). KNOWN is meta-trained on the ``--models`` MLP 32x2 zoo's models with seed < ``--fit-models``
(its validation: held-out models among those). Evaluated on models KNOWN never saw: (i) ``--units``
held-out pretraining models (seed >= --fit-models, same architecture) and (ii) a held-out architecture
(MLP 64x1, its own trajectory zoo of ``--units`` models).

Downstream tasks, both on digits 5-9 (classes and images never seen in pretraining): ``classes-56789``
(5-way) and ``parity-56789`` (odd/even of those digits, a relabelled 2-way task). Few-shot: ``--shots``
training examples per class drawn per seed from the TRAINING split; the rest of the training split is the
VALIDATION set (alpha and the KNOWN step count are chosen on it); the test split gives the final numbers.
Budget, the same for every initialization: the pretrained head is replaced by a zero-initialized one
(classes differ), a linear probe (head only, Adam ``--probe-lr``, ``--probe-epochs``) then full fine-tuning
(Adam ``--ft-lr``, ``--ft-epochs``), batch 32, one data order per seed shared by every method (paired).
Initializations of the body: (a) naive = the full-data weights; (b) task vector theta_full + alpha
(theta_full - theta_stage1), alpha in ``--alphas`` chosen by mean validation accuracy; (c) KNOWN after
1, 2, 3 recursive steps, the step count chosen on validation among them, and the step count chosen on validation
among 1, 2, 3, 5, 10, 20, 40 (recursing further than the paper's 3 rounds). Seeds: every held-out pretrained model is
one seed (its own few-shot draw, data order); mean +- std over seeds, paired t-test and Wilcoxon vs naive.
Also reported: KNOWN's held-out window MAE against no change, the pretraining-task test accuracy of the
nowcast weights (``zoo nowcast`` API), and the time to predict a 1M-parameter network (1 thread).

Rerun (about 3 minutes on 1 thread of a loaded 2-core machine):
    OMP_NUM_THREADS=1 .venv/bin/python bench/known.py --json docs/known.json --png docs/known.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import generators  # noqa: E402
import zoo  # noqa: E402
from generators.known import nowcast_zoo  # noqa: E402
from generators.known.fit import windows  # noqa: E402
from generators.known.model import weight_kinds  # noqa: E402
from zoo.app.config import compose  # noqa: E402
from zoo.arch import arch_spec, build_model  # noqa: E402
from zoo.datasets import Dataset, load_dataset  # noqa: E402
from zoo.forward import population_forward  # noqa: E402
from zoo.layout import Layout, layout_of  # noqa: E402
from zoo.training.trajectory import reversed_trajectories  # noqa: E402

PRETRAIN = "digits-classes-01234"
TASKS = {"classes-56789": ("digits-classes-56789", None), "parity-56789": ("digits-classes-56789", [1, 0, 1, 0, 1])}
STEPS = (1, 2, 3)


# ---------------------------------------------------------------------------------------------- zoos and KNOWN
def build(out: Path, *overrides: str) -> zoo.Zoo:
    """A know-trajectories zoo on the pretraining task (reused when it is already there)."""
    if (out / "zarr.json").exists():
        return zoo.open(str(out))
    cfg = compose(
        "build",
        [
            f"out={out}",
            "recipe=know-trajectories",
            f"recipe.dataset={PRETRAIN}",
            "progress=false",
            "threads=1",
            *overrides,
        ],
    )
    return zoo.build(cfg)


def window_mae(g, z: zoo.Zoo, ids: np.ndarray) -> dict:
    """MAE of KNOWN's next change on the held-out models' windows, against predicting no change."""
    key = z.models.loc[ids[0], "layout"]
    w, k = windows(reversed_trajectories(z, key, ids), weight_kinds(z.layouts[key]), g.history)
    hist, target = w[:, :-1], w[:, -1] - w[:, -2]
    with torch.no_grad():
        pred = g.change(hist, k)
    traj = reversed_trajectories(z, key, ids)
    step = g.predict(traj, z.layouts[key]) - traj[:, -1]  # KNOWN's first step past the full data
    tv = traj[:, -1] - traj[:, -2]  # the task vector's direction (stage 1 -> full data)
    return {
        "known_mae": float((pred - target).abs().mean()),
        "no_change_mae": float(target.abs().mean()),
        "last_change_mae": float((hist[:, -1] - hist[:, -2] - target).abs().mean()),
        "windows": len(w),
        "known_step_norm_over_last_step_norm": float((step.norm(dim=1) / tv.norm(dim=1)).mean()),
        "cosine_known_step_vs_last_step": float(torch.nn.functional.cosine_similarity(step, tv, dim=1).mean()),
    }


def predict_seconds(g, repeats: int = 3) -> dict:
    """Best-of time to predict one step of a 1,076,010-parameter MLP (64-1000-1000-10) on this thread count."""
    spec = arch_spec("mlp", (64,), 10, 1000, 2)
    layout = layout_of(build_model(spec), spec)
    traj = torch.randn(1, g.history, layout.size, generator=torch.Generator().manual_seed(0)) * 0.05
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        g.predict(traj, layout)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "parameters": layout.size,
        "seconds_best": round(min(times), 3),
        "seconds_all": [round(t, 3) for t in times],
        "cpu_seconds_best": round(min(cpu), 3),
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
    }


# ---------------------------------------------------------------------------------------------- downstream
def task_data(name: str, seed: int, shots: int) -> tuple[Dataset, Dataset]:
    """(train = few-shot draw, test = rest of the TRAINING split) for validation, and (train, test split) for
    the final numbers; labels optionally mapped (parity)."""
    source, relabel = TASKS[name]
    d = load_dataset(source)
    ytr, yte = d.y_train, d.y_test
    if relabel is not None:
        m = torch.as_tensor(relabel)
        ytr, yte = m[ytr], m[yte]
    k = int(max(ytr.max(), yte.max())) + 1
    g = torch.Generator().manual_seed(seed)
    chosen = torch.cat(
        [
            torch.nonzero(ytr == c).squeeze(1)[torch.randperm(int((ytr == c).sum()), generator=g)[:shots]]
            for c in range(k)
        ]
    )
    rest = torch.ones(len(ytr), dtype=torch.bool)
    rest[chosen] = False
    Xs, ys = d.X_train[chosen], ytr[chosen]
    val = Dataset(f"{name}-val", Xs, ys, d.X_train[rest], ytr[rest], "classification", k, "val")
    test = Dataset(f"{name}-test", Xs, ys, d.X_test, yte, "classification", k, "test")
    return val, test


def downstream_layout(layout: Layout, classes: int) -> tuple[Layout, list[str]]:
    """The pretrained architecture with a ``classes``-way head, and the names of the head's tensors."""
    spec = dict(layout.arch, num_outputs=int(classes))
    module = build_model(spec)
    last = [n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    return layout_of(module, spec), [f"{last}.weight", f"{last}.bias"]


def finetune(layout: Layout, bodies: torch.Tensor, val: Dataset, test: Dataset, seed: int, a) -> tuple:
    """Linear probe then full fine-tuning of M initializations at once (one population, one data order);
    returns (validation accuracy [M], test accuracy [M])."""
    new, head = downstream_layout(layout, val.num_outputs)
    old = layout.unflatten_batch(bodies)
    template = new.build()
    params = {}
    for e in new.entries:
        t = torch.zeros(len(bodies), *e.shape) if e.name in head else old[e.name].clone()
        params[e.name] = t.contiguous().requires_grad_(True)
    X, y = val.X_train, val.y_train
    g = torch.Generator().manual_seed(seed)
    for lr, epochs, names in ((a.probe_lr, a.probe_epochs, head), (a.ft_lr, a.ft_epochs, list(params))):
        opt = torch.optim.Adam([params[n] for n in names], lr=lr)
        for _ in range(epochs):
            for idx in torch.randperm(len(X), generator=g).split(32):
                out = population_forward(template, params, {}, X[idx])  # [M, b, K]
                loss = F.cross_entropy(out.transpose(1, 2), y[idx].expand(out.shape[0], -1), reduction="none")
                opt.zero_grad()
                loss.mean(1).sum().backward()  # each model its own mean loss: independent gradients
                opt.step()
    flat = new.flatten_batch({k: v.detach() for k, v in params.items()})
    return (
        zoo.evaluate(new, flat, val, split="test")["acc"].numpy(),
        zoo.evaluate(new, flat, test, split="test")["acc"].numpy(),
    )


def initializations(
    g, z: zoo.Zoo, ids: np.ndarray, alphas: list[float], steps: list[int]
) -> tuple[list[str], torch.Tensor, Layout]:
    """Method names and [n_models, n_methods, P] initial weights: naive, task vectors, KNOWN after ``steps``."""
    key = z.models.loc[ids[0], "layout"]
    layout = z.layouts[key]
    traj = reversed_trajectories(z, key, ids)  # [n, T, P]
    full, prev = traj[:, -1], traj[:, -2]
    known = g.nowcast(traj, layout, max(steps))
    names = ["naive", *[f"tv{a:g}" for a in alphas], *[f"known{s}" for s in steps]]
    inits = torch.stack([full, *[full + a * (full - prev) for a in alphas], *[known[:, s - 1] for s in steps]], 1)
    return names, inits, layout


def paired(x: np.ndarray, ref: np.ndarray) -> dict:
    from scipy.stats import ttest_rel, wilcoxon

    d = x - ref
    if not np.any(d != 0):  # every seed tied: the tests are undefined; no difference at all
        return {
            "mean_diff": 0.0,
            "std_diff": 0.0,
            "t": 0.0,
            "p_ttest": 1.0,
            "p_wilcoxon": 1.0,
            "wins": 0,
            "losses": 0,
            "all_tied": True,
        }
    t, w = ttest_rel(x, ref), wilcoxon(x, ref)
    return {
        "mean_diff": float(d.mean()),
        "std_diff": float(d.std(ddof=1)),
        "t": float(t.statistic),
        "p_ttest": float(t.pvalue) if np.isfinite(t.pvalue) else 1.0,
        "p_wilcoxon": float(w.pvalue),
        "wins": int((d > 0).sum()),
        "losses": int((d < 0).sum()),
        "all_tied": False,
    }


def evaluate_group(g, z: zoo.Zoo, ids: np.ndarray, a) -> dict:
    """Every task's per-seed val/test accuracy of every initialization, the choices on validation, the tests."""
    steps = [*STEPS, *a.extra_steps]
    names, inits, layout = initializations(g, z, ids, a.alphas, steps)
    out = {}
    for task in TASKS:
        val_acc, test_acc = np.zeros((len(ids), len(names))), np.zeros((len(ids), len(names)))
        for i, mid in enumerate(ids):
            v, t = task_data(task, seed=int(mid), shots=a.shots)
            val_acc[i], test_acc[i] = finetune(layout, inits[i], v, t, int(mid), a)
        col = {n: j for j, n in enumerate(names)}
        tv = max((n for n in names if n.startswith("tv")), key=lambda n: val_acc[:, col[n]].mean())
        kn = max((f"known{s}" for s in STEPS), key=lambda n: val_acc[:, col[n]].mean())
        kn_any = max((f"known{s}" for s in steps), key=lambda n: val_acc[:, col[n]].mean())
        res = {
            "seeds": [int(i) for i in ids],
            "alpha_chosen_on_val": float(tv[2:]),
            "known_steps_chosen_on_val": int(kn[5:]),
            "known_steps_chosen_on_val_any": int(kn_any[5:]),
            "val_acc_mean": {n: float(val_acc[:, col[n]].mean()) for n in names},
            "test_acc": {n: test_acc[:, col[n]].tolist() for n in names},
            "test_acc_mean": {n: float(test_acc[:, col[n]].mean()) for n in names},
            "test_acc_std": {n: float(test_acc[:, col[n]].std(ddof=1)) for n in names},
        }
        naive = test_acc[:, col["naive"]]
        res["vs_naive"] = {n: paired(test_acc[:, col[n]], naive) for n in (tv, *[f"known{s}" for s in steps])}
        res["vs_naive"]["known_val_chosen"] = res["vs_naive"][kn]
        res["vs_naive"]["known_val_chosen_any"] = res["vs_naive"][kn_any]
        res["vs_naive"]["tv_val_chosen"] = res["vs_naive"][tv]
        out[task] = res
        print(
            f"  {task:<14} naive {naive.mean():.4f}+-{naive.std(ddof=1):.4f} | tv(alpha={tv[2:]}) "
            f"{res['test_acc_mean'][tv]:.4f} p={res['vs_naive'][tv]['p_ttest']:.3f} | "
            + " | ".join(
                f"K{s} {res['test_acc_mean'][f'known{s}']:.4f} ({res['vs_naive'][f'known{s}']['mean_diff']:+.4f},"
                f" p={res['vs_naive'][f'known{s}']['p_ttest']:.3f})"
                for s in steps
            )
            + f" | K chosen {kn}, among all {kn_any}",
            flush=True,
        )
    return out


def plot(results: dict, path: str) -> None:
    """Per group and task: paired test-accuracy differences to naive fine-tuning (dots: seeds; bar: mean +- std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(results["groups"])
    fig, axes = plt.subplots(
        len(groups), len(TASKS), figsize=(5.2 * len(TASKS), 3.6 * len(groups)), squeeze=False, constrained_layout=True
    )
    for r, grp in enumerate(groups):
        for c, task in enumerate(TASKS):
            res, ax = results["groups"][grp][task], axes[r][c]
            naive = np.asarray(res["test_acc"]["naive"])
            tv = f"tv{res['alpha_chosen_on_val']:g}"
            any_ = res["known_steps_chosen_on_val_any"]
            methods = [tv, *[f"known{s}" for s in STEPS], f"known{any_}"]
            labels = [
                f"task vector\nalpha={res['alpha_chosen_on_val']:g}",
                *[f"KNOWN\n{s} step{'s' * (s > 1)}" for s in STEPS],
                f"KNOWN {any_} steps\n(val-chosen of all)",
            ]
            for j, m in enumerate(methods):
                d = (np.asarray(res["test_acc"][m]) - naive) * 100
                ax.scatter(np.full(len(d), j) + np.linspace(-0.15, 0.15, len(d)), d, s=10, alpha=0.6)
                ax.errorbar(j + 0.3, d.mean(), yerr=d.std(ddof=1), fmt="o", color="black", capsize=3)
                ax.annotate(
                    f"p={res['vs_naive'][m]['p_ttest']:.2f}", (j, ax.get_ylim()[1]), fontsize=7, ha="center", va="top"
                )
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xticks(range(len(methods)), labels, fontsize=8)
            ax.set_ylabel("test acc - naive (pp)")
            ax.set_title(f"{grp}: {task}\nnaive {naive.mean() * 100:.1f} +- {naive.std(ddof=1) * 100:.1f}%", fontsize=9)
    st = results["settings"]
    fig.suptitle(
        f"Fine-tuning from KNOWN / task-vector weights vs the full-data weights ({len(naive)} seeds, paired;"
        f" p: paired t-test) - trajectory stages of {st.get('stage_epochs', 1)} epoch(s), KNOWN loss "
        f"{st.get('loss', 'mae')}",
        fontsize=10,
    )
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="data/bench-known", help="zoos and the KNOWN run go here (reused)")
    ap.add_argument("--models", type=int, default=128, help="pretraining models (seeds; hyperparameters sampled)")
    ap.add_argument("--fit-models", type=int, default=96, help="KNOWN learns from the models with seed below this")
    ap.add_argument("--units", type=int, default=32, help="held-out models per group = downstream seeds")
    ap.add_argument("--fit-steps", type=int, default=400, help="KNOWN meta-training steps (100 per epoch)")
    ap.add_argument("--stage-epochs", type=int, default=1, help="epochs per trajectory stage (recipe.stage_epochs)")
    ap.add_argument("--loss", default="mae", choices=["mae", "mse"], help="KNOWN's meta-training loss")
    ap.add_argument(
        "--extra-steps",
        type=int,
        nargs="*",
        default=[5, 10, 20, 40],
        help="KNOWN recursed further (a second step count is chosen on validation among all)",
    )
    ap.add_argument("--shots", type=int, default=20, help="downstream training examples per class")
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0, 8.0, 16.0])
    ap.add_argument("--probe-epochs", type=int, default=20)
    ap.add_argument("--probe-lr", type=float, default=0.01)
    ap.add_argument("--ft-epochs", type=int, default=30)
    ap.add_argument("--ft-lr", type=float, default=0.001)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="docs/known.json")
    ap.add_argument("--png", default="docs/known.png")
    ap.add_argument("--replot", default=None, help="only redraw --png from this JSON of an earlier run")
    a = ap.parse_args()
    if a.replot:
        plot(json.loads(Path(a.replot).read_text()), a.png)
        return 0
    torch.set_num_threads(a.threads)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tag = "" if a.stage_epochs == 1 else f"-stage{a.stage_epochs}"
    stage = f"recipe.stage_epochs={a.stage_epochs}"
    z = build(work / f"pretrain-mlp32x2-{a.models}{tag}.zarr", f"recipe.seeds={a.models}", stage)
    z_arch = build(
        work / f"heldout-mlp64x1-{a.units}{tag}.zarr",
        "recipe.widths=[64]",
        "recipe.depths=[1]",
        f"recipe.seeds={a.units}",
        stage,
    )
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    g = generators.fit(
        "known",
        str(z.path),
        out=str(work / f"known-{a.loss}{tag}"),
        overwrite=True,  # a rerun of the bench replaces its own run
        query=f"seed < {a.fit_models}",
        steps_per_epoch=100,
        max_epochs=max(1, a.fit_steps // 100),
        loss=a.loss,
        **{"trainer.enable_progress_bar": False},
    )
    fit_s = time.perf_counter() - t0
    m = z.models
    held = m[(m.seed >= a.fit_models) & (m.status == "done")].model_id.to_numpy()[: a.units]
    arch_ids = z_arch.models[z_arch.models.status == "done"].model_id.to_numpy()[: a.units]
    print(
        f"zoos built in {build_s:.0f}s; KNOWN fitted in {fit_s:.0f}s on {len(g.origin['train_ids'])} models "
        f"({len(g.origin['val_ids'])} validation); held out: {len(held)} pretraining models, {len(arch_ids)} of "
        f"the held-out architecture",
        flush=True,
    )
    results = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python bench/known.py " + " ".join(sys.argv[1:]),
        "settings": {k: v for k, v in vars(a).items() if k not in ("json", "png", "replot")},
        "pretraining": PRETRAIN,
        "tasks": {k: {"source": v[0], "relabel": v[1]} for k, v in TASKS.items()},
        "fit_seconds": round(fit_s, 1),
        "known_summary": json.loads((work / f"known-{a.loss}{tag}" / "summary.json").read_text())["best_score"],
        "machine_load_average_1min_at_start": os.getloadavg()[0],
        "groups": {},
        "windows": {},
        "pretraining_test_acc": {},
    }
    for grp, zz, ids in (
        ("held-out models (MLP 32x2)", z, held),
        ("held-out architecture (MLP 64x1)", z_arch, arch_ids),
    ):
        results["windows"][grp] = window_mae(g, zz, ids)
        nc = nowcast_zoo(
            g,
            str(zz.path),
            str(work / f"nowcast-{a.loss}{tag}-{len(results['windows'])}.zarr"),
            steps=3,
            query=f"model_id in {ids.tolist()}",
            overwrite=True,
        )
        full = zz.models.set_index("model_id").loc[ids, "test_acc"].to_numpy()
        metrics = nc.metrics
        results["pretraining_test_acc"][grp] = {
            "full_data": float(full.mean()),
            **{f"known{s}": float(metrics[metrics.checkpoint == s - 1].test_acc.mean()) for s in STEPS},
        }
        wm = results["windows"][grp]
        print(
            f"{grp}: window MAE KNOWN {wm['known_mae']:.3e} vs no change {wm['no_change_mae']:.3e}; KNOWN's step "
            f"is {wm['known_step_norm_over_last_step_norm']:.3f} x the last step's norm, cosine "
            f"{wm['cosine_known_step_vs_last_step']:+.3f}; pretraining test acc full {full.mean():.4f} -> "
            + ", ".join(f"K{s} {results['pretraining_test_acc'][grp][f'known{s}']:.4f}" for s in STEPS),
            flush=True,
        )
        results["groups"][grp] = evaluate_group(g, zz, ids, a)
    results["predict_1m"] = predict_seconds(g)
    print(
        f"predict 1M parameters: {results['predict_1m']['seconds_best']} s wall, "
        f"{results['predict_1m']['cpu_seconds_best']} s CPU (best of 3, "
        f"{results['predict_1m']['threads']} thread, load average {results['predict_1m']['load_average_1min']:.1f})"
    )
    Path(a.json).write_text(json.dumps(results, indent=2))
    plot(results, a.png)
    print(f"wrote {a.json} and {a.png}\nrerun: {results['command']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
