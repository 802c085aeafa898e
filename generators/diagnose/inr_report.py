"""Diagnostics of generated INRs (``zoo diagnose`` on an INR zoo): PSNR instead of test accuracy.

A sampled INR (a SIREN over pixel coordinates, zoo.inr) has no test set to classify: what it draws is its
quality and its novelty. For every sample (of each samples zoo, of each baseline built from the training zoo)
and every training INR, rendered on the zoo's coordinate grid:
- ``psnr_data``: PSNR (dB, peak 1) of its render to the nearest image the training zoo's INRs were fitted on
  (the data: each done training INR's own image, whatever its split, since the generator saw them all; no
  other image is read, and nothing is chosen on a test split). Quality: does it draw one of the digits?
- ``psnr_render``: PSNR of its render to the nearest training INR's render (self excluded for training
  INRs: their nearest OTHER one, the yardstick). Image-space novelty: higher means closer to a copy.
  While the training INRs fit their images well (tens of dB), ``psnr_render`` is ``psnr_data`` within their
  fit error: image-space quality and image-space novelty are then one axis;
- ``nn_l2``: the weight-space nearest-neighbour distance up to hidden-unit permutations and sign flips (the
  SIREN symmetry, zoo.rebasin), measured exactly as for classifiers (generators.diagnose.distances); two
  INRs of one image fitted from different initializations are far apart here, so a new INR of a training
  image is weight-novel but an image copy.
Baselines: ``noise`` at the sigmas whose renders keep ``noise_psnr`` dB to their source's own image (the
training data, measured on SIGMA_MODELS training INRs), ``average`` and ``gaussian`` as for classifiers.
PSNRs are capped at PSNR_CAP dB (an exact copy has mean squared error 0).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import zoo
from generators.diagnose.baselines import (
    BISECT,
    GRID,
    SIGMA_MODELS,
    add_noise,
    average_baseline,
    gaussian_baseline,
    noise_baseline,
    parse_baselines,
)
from generators.diagnose.distances import neighbours
from generators.diagnose.sets import BASELINE_CAP, Method, json_default, load_train, sample_method, unique_names
from generators.diagnose.table import TRAIN
from zoo.app.progress import Progress
from zoo.errors import ZooError
from zoo.inr import image_shape, inr_images, render_weights
from zoo.layout import Layout

PSNR_CAP = 100.0  # dB: mean squared error clamped to [1e-10, 1e10] (an exact copy; a render gone to inf or nan)
NOISE_PSNR = (40.0, 30.0, 20.0)  # dB of a noisy INR's render to its source's image: visually a copy, close, noisy
ROW_CHUNK = 1024  # renders compared with every reference image at once
SCATTER_PNG = "psnr_vs_novelty.png"


def psnr_db(mse: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, peak 1) of mean squared errors, within +-PSNR_CAP (non-finite errors give -PSNR_CAP)."""
    mse = torch.nan_to_num(mse, nan=float("inf"))
    return -10.0 * torch.log10(mse.clamp(10 ** (-PSNR_CAP / 10), 10 ** (PSNR_CAP / 10)))


def noise_name_db(target: float) -> str:
    """Method name of the INR noise baseline at one PSNR target, e.g. ``noise-40dB``."""
    return f"noise-{target:g}dB"


def nearest_psnr(
    renders: torch.Tensor, refs: torch.Tensor, exclude_self: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(PSNR [n] float64 dB, index [n]) of each image of ``renders`` [n, H, W] to its nearest (pixel L2) image of
    ``refs`` [m, H, W]; ``exclude_self``: the two are the same images and the pair (i, i) is skipped."""
    a, b = renders.reshape(len(renders), -1).double(), refs.reshape(len(refs), -1).double()
    if exclude_self and len(b) < 2:
        raise ZooError("nearest images with self excluded need at least 2 training INRs")
    b_sq = b.square().sum(1)
    out = torch.empty(len(a), dtype=torch.float64)
    arg = torch.empty(len(a), dtype=torch.int64)
    for lo in range(0, len(a), ROW_CHUNK):
        x = a[lo : lo + ROW_CHUNK]
        d = torch.addmm(b_sq[None, :], x, b.T, alpha=-2.0)  # |x - b|^2 - |x|^2: the same order along a row
        if exclude_self:
            rows = torch.arange(len(x))
            d[rows, rows + lo] = float("inf")
        i = d.argmin(1)
        mse = (x - b[i]).square().mean(1)  # recomputed directly: an exact copy gives 0
        out[lo : lo + len(x)] = psnr_db(mse)
        arg[lo : lo + len(x)] = i
    return out, arg


def training_images(z: zoo.Zoo, ids: np.ndarray, data_root: str | None = None) -> torch.Tensor:
    """[m, H, W] the images the INRs ``ids`` of zoo ``z`` were fitted on (their ``image`` column, zoo.inr)."""
    shape = image_shape(z.attrs)
    models = z.models.set_index("model_id")
    if "image" not in models:
        raise ZooError(f"{z.path!r} records no image per INR (no 'image' column): rebuild it with a kind: inr recipe")
    source = z.dataset(str(models.loc[int(ids[0]), "dataset"]), data_root=data_root)
    images = inr_images(source, float(z.attrs["inr"].get("validation_fraction", 0.1)), 0)  # every image, numbered
    index = models.loc[ids, "image"].to_numpy(dtype=np.int64, copy=True)
    return images.pixels[torch.from_numpy(index)].reshape(len(ids), *shape)


def choose_noise_psnr(
    layout: Layout,
    weights: torch.Tensor,
    images: torch.Tensor,
    targets: Sequence[float] = NOISE_PSNR,
    seed: int = 0,
    models: int = SIGMA_MODELS,
) -> dict:
    """The largest sigma whose noisy INRs' renders keep a mean PSNR >= each target (dB) to their own images.

    ``weights`` [m, P] are training INRs (aligned), ``images`` [m, H, W] their images; ``models`` of them
    (seeded) each get one fixed noise direction, measured along a log grid of sigmas refined by bisection.
    """
    targets = sorted({float(t) for t in targets}, reverse=True)
    if not targets:
        raise ZooError("the INR noise baseline needs at least one PSNR target (dB)")
    gen = torch.Generator().manual_seed(int(seed) + 1)
    pick = torch.randperm(weights.shape[0], generator=gen)[: max(1, int(models))]
    W, own = weights[pick].to(torch.float32), images[pick].double()
    eps = torch.randn(W.shape, generator=gen)
    mask = layout.parameter_mask()
    rms = float(W[:, mask].square().mean().sqrt()) or 1.0
    shape = images.shape[1:]

    def psnr_at(sigmas: Sequence[float]) -> list[float]:
        """Mean PSNR (dB) of the noisy renders to their own images at each sigma, one batched render."""
        batch = torch.cat([add_noise(layout, W, s, eps) for s in sigmas])
        r = render_weights(layout, batch, shape).double().view(len(sigmas), len(W), -1)
        return psnr_db((r - own.reshape(1, len(W), -1)).square().mean(2)).mean(1).tolist()

    grid = (rms * np.logspace(-6, 0.5, GRID)).tolist()
    curve = psnr_at(grid)
    lo_hi = {}
    for t in targets:
        ok = [i for i, v in enumerate(curve) if v >= t]
        if not ok:  # even the smallest sigma falls below the target: keep the smallest
            lo_hi[t] = (grid[0], grid[0], curve[0])
            continue
        i = max(ok)
        lo_hi[t] = (grid[i], grid[i + 1] if i + 1 < len(grid) else grid[i], curve[i])
    for _ in range(BISECT):
        open_ = [t for t in targets if lo_hi[t][1] > lo_hi[t][0] * (1 + 1e-6)]
        if not open_:
            break
        mids = [float(np.sqrt(lo_hi[t][0] * lo_hi[t][1])) for t in open_]
        for t, s, v in zip(open_, mids, psnr_at(mids)):
            lo, hi, best = lo_hi[t]
            lo_hi[t] = (s, hi, v) if v >= t else (lo, s, best)
    return {
        "sigmas": {f"{t:g}dB": lo_hi[t][0] for t in targets},
        "psnr_to_own_image": {f"{t:g}dB": lo_hi[t][2] for t in targets},
        "models": int(len(W)),
        "selected_on": "the training INRs' own images (their training data), never a test split",
        "added_to": "aligned training weights (trainable parameters)",
        "curve": [[s, v] for s, v in zip(grid, curve)],
    }


def _stats(x: np.ndarray) -> dict[str, float | None]:
    x = np.asarray(x, dtype=np.float64)
    if not len(x):
        return {"mean": None, "std": None, "median": None}
    return {"mean": float(x.mean()), "std": float(x.std()), "median": float(np.median(x))}


def diagnose_inr(
    given: Sequence[tuple[str | None, zoo.Zoo]],
    train_zoo: str | Path | zoo.Zoo,
    out: str | Path | None = None,
    baselines: str | Sequence[str] | None = ("noise", "average", "gaussian"),
    *,
    n_baseline: int | None = None,
    noise_psnr: Sequence[float] = NOISE_PSNR,
    k: int = 16,
    seed: int = 0,
    canonical: str = "auto",
    refine: int = 3,
    plots: bool = True,
    progress: bool = False,
    data_root: str | None = None,
    device: torch.device | None = None,
) -> dict:
    """Diagnose samples zoos of INRs against their INR training zoo (module docstring); returns the report and
    writes ``diagnose.json`` and the scatter PNG to ``out`` when given. Called by ``diagnose``. ``device``: where
    the weight-space nearest-neighbour searches run (the renders and PSNRs run on the CPU)."""
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    names = parse_baselines(baselines)
    if not given and not names:
        raise ZooError("nothing to diagnose: give a samples zoo or at least one baseline")
    if any(float(p) <= 0 or float(p) >= PSNR_CAP for p in noise_psnr):
        raise ZooError(f"--noise-psnr must be dB in (0, {PSNR_CAP:g}), got {list(noise_psnr)}")
    out_dir = Path(out) if out is not None else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ZooError(f"--out {str(out_dir)!r} exists and is not a folder")
    bar = Progress(5 if out is not None and plots else 4, "steps", prefix="zoo diagnose", enabled=progress, eta=False)

    t = time.perf_counter()
    methods: list[Method] = []
    layout = None
    for label, z in given:
        if not isinstance(z.attrs.get("inr"), Mapping):
            raise ZooError(f"{z.path!r} holds no INRs, but the training zoo is an INR zoo")
        m, layout = sample_method(z, layout, label)
        methods.append(m)
    train = load_train(train_zoo, layout, canonical, seed, data_root)
    tz = train_zoo if isinstance(train_zoo, zoo.Zoo) else zoo.open(str(train_zoo))
    shape = image_shape(tz.attrs)
    for _, z in given:
        if image_shape(z.attrs) != shape:
            raise ZooError(f"{z.path!r} draws {image_shape(z.attrs)} images, the training zoo {shape}")
    data = training_images(tz, train.ids, data_root)
    timings["load_and_align_train"] = time.perf_counter() - t
    bar.update(1, finished="load and align the training zoo")

    t = time.perf_counter()
    n_base = (
        int(n_baseline) if n_baseline is not None else min(max((m.total for m in methods), default=100), BASELINE_CAP)
    )
    if n_base < 1:
        raise ZooError(f"baselines need n >= 1 samples, got {n_base}")
    info: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(int(seed))
    for name in names:
        if name == "noise":
            info["noise"] = choose_noise_psnr(train.layout, train.canonical, data, noise_psnr, seed=seed)
            for key, s in info["noise"]["sigmas"].items():
                w, _ = noise_baseline(train.layout, train.canonical, n_base, s, gen)
                methods.append(Method(f"noise-{key}", "baseline", w, np.arange(n_base), n_base, f"noise-{key}"))
        elif name == "average":
            w = average_baseline(train.layout, train.canonical, n_base, k, gen, train.dataset)
            info["average"] = {"k": min(int(k), len(train.ids))}
            methods.append(Method("average", "baseline", w, np.arange(n_base), n_base, "average"))
        else:
            w = gaussian_baseline(train.layout, train.canonical, n_base, gen, train.dataset)
            info["gaussian"] = {"fitted_to": "aligned training weights"}
            methods.append(Method("gaussian", "baseline", w, np.arange(n_base), n_base, "gaussian"))
    for m in methods:  # a baseline's non-finite rows count as samples that drew nothing
        finite = torch.isfinite(m.weights).all(1)
        m.weights, m.ids = m.weights[finite], m.ids[finite.numpy()]
    unique_names(methods)
    timings["baselines"] = time.perf_counter() - t
    bar.update(1, finished="baselines")

    t = time.perf_counter()
    sizes = [len(m.weights) for m in methods]
    sample_raw = torch.cat([m.weights for m in methods]) if methods else train.raw[:0]
    train_img = render_weights(train.layout, train.raw, shape)
    sample_img = render_weights(train.layout, sample_raw, shape)
    t_data, _ = nearest_psnr(train_img, data)
    t_render, t_render_arg = nearest_psnr(train_img, train_img, exclude_self=True)
    s_data, s_data_arg = nearest_psnr(sample_img, data)
    s_render, s_render_arg = nearest_psnr(sample_img, train_img)
    timings["render_and_psnr"] = time.perf_counter() - t
    bar.update(1, finished="render and PSNR")

    t = time.perf_counter()
    canon_samples = train.align(sample_raw)
    tn = neighbours(
        train.layout,
        train.canonical,
        train.raw,
        train.canonical,
        train.raw,
        refine,
        exclude_self=True,
        seed=seed,
        device=device,
    )
    sn = neighbours(
        train.layout, canon_samples, sample_raw, train.canonical, train.raw, refine, seed=seed, device=device
    )
    timings["weight_distances"] = time.perf_counter() - t
    bar.update(1, finished="weight-space distances")

    med_nn = float(np.median(tn.l2.numpy()))
    med_render = float(np.median(t_render.numpy()))
    report: dict[str, Any] = {
        "kind": "inr",
        "train_zoo": train.path,
        "samples_zoos": [z.path for _, z in given],
        "layout": train.layout_key,
        "dataset": train.dataset.name,
        "image_shape": list(shape),
        "checkpoint": "last",
        "canonical": {"mode": train.canonical_mode, "reference_id": train.reference_id},
        "distance_over": "trainable parameters, up to hidden-unit permutations and sign flips",
        "psnr": {
            "peak": 1.0,
            "cap_db": PSNR_CAP,
            "data": "nearest image the training zoo's done INRs were fitted on (their own images; no test choice)",
            "render": "nearest training INR's render (training INRs: the nearest other one)",
        },
        "thresholds": {
            "train_psnr_render_median": med_render,
            "copy_rule": "psnr_render > the training INRs' median PSNR to their nearest other training render",
        },
        "train_nn_l2_median": med_nn,
        "baselines": info,
        "methods": {},
        "per_sample": {},
    }
    report["methods"][TRAIN] = {
        "kind": "train",
        "n": len(train.ids),
        "finite": len(train.ids),
        "psnr_data": _stats(t_data.numpy()),
        "psnr_render": _stats(t_render.numpy()),
        "train_nn_l2": _stats(tn.l2.numpy()),
        "nearer_than_train": float((t_render.numpy() > med_render).mean()),
    }
    report["per_sample"][TRAIN] = {
        "model_id": train.ids.tolist(),
        "psnr_data": t_data.tolist(),
        "psnr_render": t_render.tolist(),
        "nearest_render_train_id": train.ids[t_render_arg.numpy()].tolist(),
        "train_nn_l2": tn.l2.tolist(),
        "nearest_train_id": train.ids[tn.index.numpy()].tolist(),
    }
    lo = 0
    for m, size in zip(methods, sizes):
        sl = slice(lo, lo + size)
        lo += size
        nn = sn.l2[sl].numpy()
        nn_stats = _stats(nn)
        pr = s_render[sl].numpy()
        report["methods"][m.name] = {
            "kind": m.kind,
            "source": m.provenance,
            "n": m.total,
            "finite": size,
            "psnr_data": _stats(s_data[sl].numpy()),
            "psnr_render": _stats(pr),
            "nn_l2": nn_stats,
            "nn_l2_canonical": _stats(sn.canonical[sl].numpy()),
            "nn_l2_raw": _stats(sn.raw[sl].numpy()),
            "nn_l2_over_train_median": (
                nn_stats["mean"] / med_nn if nn_stats["mean"] is not None and med_nn > 0 else None
            ),
            "nearer_than_train": float((pr > med_render).sum() / m.total) if m.total else None,
        }
        report["per_sample"][m.name] = {
            "model_id": m.ids.tolist(),
            "psnr_data": s_data[sl].tolist(),
            "psnr_render": pr.tolist(),
            "nearest_image_train_id": train.ids[s_data_arg[sl].numpy()].tolist(),
            "nearest_render_train_id": train.ids[s_render_arg[sl].numpy()].tolist(),
            "nn_l2": nn.tolist(),
            "nearest_train_id": train.ids[sn.index[sl].numpy()].tolist(),
        }
    timings["total"] = time.perf_counter() - t_start
    report["seconds"] = timings
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if plots:
            t = time.perf_counter()
            report["plots"] = write_inr_plots(report, out_dir)
            timings["plots"] = time.perf_counter() - t
            bar.update(1, finished="plots")
        (out_dir / "diagnose.json").write_text(json.dumps(report, indent=1, allow_nan=False, default=json_default))
    bar.close()
    return report


def write_inr_plots(report: Mapping, out_dir: str | Path) -> dict[str, str]:
    """Quality (PSNR to the data) against novelty, in weight space (nn_l2 over the training median) and in
    image space (PSNR to the nearest training render), one point per sample; returns the PNG's name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = report["per_sample"]
    med_nn = report["train_nn_l2_median"] or 1.0
    palette = [plt.get_cmap("tab10")(i) for i in (1, 2, 3, 4, 5, 6, 8, 9, 0)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 5.0), layout="constrained")
    for i, (name, d) in enumerate(per.items()):
        train = name == TRAIN
        colour = (0.2, 0.2, 0.2, 1.0) if train else palette[i % len(palette)]
        nn = np.asarray(d["train_nn_l2" if train else "nn_l2"], dtype=float) / med_nn
        kw: dict[str, Any] = {"s": 12, "alpha": 0.6, "color": colour, "marker": "x" if train else "o"}
        left.scatter(nn, d["psnr_data"], label="training INRs" if train else name, **kw)
        right.scatter(d["psnr_render"], d["psnr_data"], **kw)
    med = report["thresholds"]["train_psnr_render_median"]
    right.axvline(med, color="tab:blue", ls=":", lw=1.1)
    right.text(
        med,
        0.02,
        " training INRs' median (their nearest other render) ",
        rotation=90,
        color="tab:blue",
        fontsize=7.5,
        transform=right.get_xaxis_transform(),
        ha="right",
        va="bottom",
    )
    left.axvline(1.0, color="tab:blue", ls=":", lw=1.1)
    left.set_xlabel("weight-space novelty: nn_l2 / training INRs' median nn_l2 (0: a copy)")
    right.set_xlabel("PSNR to the nearest training INR's render, dB (high: an image copy)")
    for ax in (left, right):
        ax.set_ylabel("quality: PSNR to the nearest training image, dB")
    left.set_title("quality vs weight-space novelty", fontsize=10)
    right.set_title("quality vs image-space novelty", fontsize=10)
    fig.legend(loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    fig.savefig(Path(out_dir) / SCATTER_PNG, dpi=110)
    plt.close(fig)
    return {"scatter": SCATTER_PNG}
