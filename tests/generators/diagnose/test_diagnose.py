"""Memorization diagnostics on hand-made zoos with known answers: copies, noise, permuted copies, error sets."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import zoo
from generators.diagnose.baselines import (
    add_noise,
    average_baseline,
    build_baselines,
    choose_noise_scales,
    gaussian_baseline,
    noise_name,
    validation_split,
)
from generators.diagnose.budget import MIN_BASELINE, MIN_CURVE, forward_macs, plan
from generators.diagnose.distances import iou_matrix, knn, max_iou, nearest_l2
from generators.diagnose.report import compare_with_noise
from generators.diagnose.report import diagnose as run_diagnose
from generators.diagnose.sets import load_train
from generators.diagnose.table import TRAIN, method_rows, summary_table
from tests.conftest import build_zoo
from zoo.commands.main import main as cli
from zoo.rebasin import permute_flat, random_perms, spec_for_layout


@pytest.fixture(scope="module")
def train_zoo(tmp_path_factory) -> zoo.Zoo:
    """6 digits MLPs of one layout (width 16, 6 seeds), 3 epochs."""
    return build_zoo(str(tmp_path_factory.mktemp("diag") / "train.zarr"), "recipe.widths=[16]", "recipe.seeds=6")


def write_samples(path, z: zoo.Zoo, weights: torch.Tensor, attrs: dict | None = None) -> str:
    """A samples zoo holding ``weights`` [n, P] in the training zoo's (single) layout and dataset (``attrs``: extra
    zoo attributes, e.g. an INR zoo's image shape)."""
    key = next(iter(z.layouts))
    w = zoo.create(
        str(path),
        pd.DataFrame({"sample": np.arange(len(weights))}),
        {key: z.layouts[key]},
        [0],
        z.metric_names,
        attrs=attrs,
        datasets=[z.dataset()],
    )
    w.write(list(range(len(weights))), weights[:, None], None)
    return str(path)


def raw_weights(z: zoo.Zoo) -> torch.Tensor:
    return z.weights(list(range(len(z))))


def test_iou_of_constructed_error_sets():
    a = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    b = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    expected = torch.tensor(
        [
            [1.0, 1 / 3, 0.0],  # {0,1} vs {0,1}, {1,2}, {}
            [0.0, 0.0, 1.0],  # {} vs ...: two empty sets are identical
            [1 / 3, 1 / 3, 0.0],
        ]
    )  # {0,2} vs ...
    assert torch.allclose(iou_matrix(a, b), expected)
    best, arg = max_iou(a, b)
    assert torch.allclose(best, torch.tensor([1.0, 1.0, 1 / 3])) and arg[:2].tolist() == [0, 2]
    # self excluded: row i never matches itself, even though IoU(i, i) = 1
    best, arg = max_iou(b, b, exclude_self=True)
    assert torch.allclose(best, torch.tensor([1 / 3, 1 / 3, 0.0])) and arg.tolist() == [1, 0, 0]


def test_nearest_l2_matches_brute_force_and_copies_are_zero():
    g = torch.Generator().manual_seed(0)
    b = torch.randn(40, 300, generator=g) * 3 + 10  # far from the origin: matrix-product distances lose digits
    a = torch.cat([b[[3, 7]], b[:5] + 0.1 * torch.randn(5, 300, generator=g)])
    d, arg = nearest_l2(a, b)
    brute = torch.stack([(x.double() - b.double()).norm(dim=1) for x in a])
    assert torch.equal(d[:2], torch.zeros(2, dtype=torch.float64)) and arg[:2].tolist() == [3, 7]
    # matrix-product distances vs a float64 loop are different computations: the chosen neighbour must be a nearest
    # one to float32 rounding (a near-tie may pick the other), not bit for bit the brute-force argmin
    assert torch.allclose(d, brute.min(1).values)
    assert torch.allclose(brute.gather(1, arg[:, None])[:, 0], brute.min(1).values, rtol=1e-5, atol=1e-5)
    d_self, arg_self = nearest_l2(b, b, exclude_self=True)
    brute = torch.cdist(b.double(), b.double()) + torch.diag(torch.full((40,), float("inf"), dtype=torch.float64))
    assert torch.allclose(d_self, brute.min(1).values) and (arg_self != torch.arange(40)).all()


def test_exact_copies_have_zero_distance_and_iou_one(train_zoo, tmp_path):
    W = raw_weights(train_zoo)
    order = [4, 1, 5, 0]
    path = write_samples(tmp_path / "copies.zarr", train_zoo, W[order])
    r = run_diagnose(path, train_zoo, baselines=None)
    s = r["per_sample"]["copies"]
    assert s["nn_l2"] == [0.0] * 4 and s["nn_l2_raw"] == [0.0] * 4
    assert s["max_iou"] == [1.0] * 4 and s["nearest_train_id"] == order
    stored = train_zoo.models.set_index("model_id").loc[order, "test_acc"].to_numpy()
    assert np.allclose(s["test_acc"], stored)
    m = r["methods"]["copies"]
    assert m["nn_l2"]["mean"] == 0.0 and m["max_iou"]["mean"] == 1.0 and m["n"] == 4
    # training models measured against each other: self excluded, so nothing is at distance 0
    t = r["per_sample"][TRAIN]
    assert min(t["train_nn_l2"]) > 0 and all(i != j for i, j in zip(t["model_id"], t["nearest_train_id"]))
    assert r["thresholds"]["good_test_acc"] == pytest.approx(np.percentile(t["test_acc"], 5))
    assert r["thresholds"]["novel_max_iou"] == pytest.approx(np.median(t["max_iou"]))


def test_noise_samples_have_the_distance_they_were_built_with(train_zoo, tmp_path):
    W = raw_weights(train_zoo)
    layout = next(iter(train_zoo.layouts.values()))
    mask = layout.parameter_mask()
    g = torch.Generator().manual_seed(1)
    scales = torch.tensor([1e-3, 3e-3, 1e-2, 2e-3, 5e-3, 1e-3])
    eps = torch.randn(W.shape, generator=g) * scales[:, None]
    noisy = add_noise(layout, W, 1.0, eps)
    built = eps[:, mask].double().norm(dim=1)
    path = write_samples(tmp_path / "noise.zarr", train_zoo, noisy)
    s = run_diagnose(path, train_zoo, baselines=None)["per_sample"]["noise"]
    assert np.allclose(s["nn_l2_raw"], built.numpy(), rtol=1e-4)
    assert np.allclose(s["nn_l2"], built.numpy(), rtol=1e-3)  # alignment keeps each noisy copy with its source
    assert s["nearest_train_id"] == list(range(6))


@pytest.fixture(scope="module")
def deep_zoo(tmp_path_factory) -> zoo.Zoo:
    """8 digits MLPs with two hidden layers: weight matching has several groups there and local optima."""
    return build_zoo(
        str(tmp_path_factory.mktemp("diag") / "deep.zarr"), "recipe.widths=[16]", "recipe.depths=[2]", "recipe.seeds=8"
    )


@pytest.mark.parametrize("which", ["train_zoo", "deep_zoo"])
def test_permuted_copy_is_a_copy_after_canonicalization(which, request, tmp_path):
    z = request.getfixturevalue(which)
    W = raw_weights(z)
    layout = next(iter(z.layouts.values()))
    spec = spec_for_layout(layout)
    perms = random_perms(spec, torch.Generator().manual_seed(3), n=len(W))
    permuted = permute_flat(spec, layout, W, perms)
    assert not torch.allclose(permuted, W)
    path = write_samples(tmp_path / "perm.zarr", z, permuted)
    r = run_diagnose(path, z, baselines=None)
    s = r["per_sample"]["perm"]
    assert max(s["nn_l2"]) < 1e-4 and s["nearest_train_id"] == list(range(len(W)))
    assert min(s["nn_l2_raw"]) > 0.5 * r["methods"][TRAIN]["train_nn_l2_raw"]["median"]
    assert all(c >= d for c, d in zip(s["nn_l2_canonical"], s["nn_l2"]))  # refinement only ever lowers it
    assert s["max_iou"] == [1.0] * len(W)  # the same functions make the same mistakes
    if which == "train_zoo":  # one hidden layer: one assignment problem, so the one-reference frame is exact too
        assert max(s["nn_l2_canonical"]) < 1e-4


def test_stored_canonical_weights_give_the_same_frame(train_zoo, tmp_path):
    path = tmp_path / "aligned.zarr"
    shutil.copytree(train_zoo.path, path)
    z = zoo.open(str(path))
    from zoo.rebasin import align_zoo

    align_zoo(z, reference=2, checkpoint="last", pairs=0)
    t = load_train(str(path), canonical="store")
    assert t.canonical_mode == "store" and t.reference_id == 2
    assert torch.equal(t.canonical, z.weights(list(range(6)), canonical=True))
    with pytest.raises(zoo.ZooError, match="zoo align"):
        load_train(train_zoo, canonical="store")
    mine = load_train(train_zoo)
    assert mine.canonical_mode == "aligned"
    train_acc = train_zoo.models["train_acc"].to_numpy()
    assert train_acc[mine.reference_id] == train_acc.max()  # reference chosen by training accuracy, not test


def test_noise_scales_never_read_the_test_split_and_order_by_drop(train_zoo):
    data = train_zoo.dataset()
    layout = next(iter(train_zoo.layouts.values()))
    W = raw_weights(train_zoo)
    scales = choose_noise_scales(layout, W, data, drops=(0, 1, 5), seed=0)
    blind = dataclasses.replace(
        data, X_test=torch.full_like(data.X_test, float("nan")), y_test=torch.full_like(data.y_test, -1)
    )
    assert choose_noise_scales(layout, W, blind, drops=(0, 1, 5), seed=0).sigmas == scales.sigmas
    s = scales.sigmas
    assert 0 < s[0] <= s[1] <= s[5]
    assert all(scales.val_drop[d] <= d for d in (0, 1, 5))
    assert scales.val_drop[5] > 1  # the 5% scale costs clearly more than the 1% one's target
    assert noise_name(1) == "noise-1%" and noise_name(0.5) == "noise-0.5%"


def test_average_and_gaussian_baselines(train_zoo):
    data = train_zoo.dataset()
    layout = next(iter(train_zoo.layouts.values()))
    W = raw_weights(train_zoo)
    g = torch.Generator().manual_seed(0)
    avg = average_baseline(layout, W, 3, k=16, generator=g, dataset=data)  # k capped at the 6 models
    assert torch.allclose(avg, W.double().mean(0).float().expand(3, -1), atol=1e-6)
    two = average_baseline(layout, W, 50, k=2, generator=g, dataset=data)
    pair_means = {tuple(np.round(((W[i] + W[j]) / 2).numpy()[:4], 5)) for i in range(6) for j in range(6) if i != j}
    assert all(tuple(np.round(x.numpy()[:4], 5)) in pair_means for x in two)
    gauss = gaussian_baseline(layout, W, 4000, g, data)
    mask = layout.parameter_mask()
    assert torch.allclose(gauss[:, mask].mean(0), W[:, mask].mean(0), atol=4 * float(W[:, mask].std(0).max()) / 60)
    assert torch.allclose(gauss[:, mask].std(0), W[:, mask].std(0), rtol=0.1, atol=1e-6)


def test_cli_end_to_end_with_baselines(train_zoo, tmp_path, capsys):
    W = raw_weights(train_zoo)
    samples = write_samples(tmp_path / "s.zarr", train_zoo, W[:3])
    out = tmp_path / "diag"
    rc = cli(
        [
            "diagnose",
            samples,
            "--train",
            train_zoo.path,
            "--out",
            str(out),
            "--n-baseline",
            "8",
            "--k",
            "4",
            "--noise-drops",
            "0,5",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "good&novel" in printed and "noise-5%" in printed
    r = json.loads((out / "diagnose.json").read_text())
    assert list(r["methods"]) == [TRAIN, "s", "noise-0%", "noise-5%", "average", "gaussian"]
    for name, m in r["methods"].items():
        keys = (
            ("test_acc", "train_nn_l2", "max_iou")
            if name == TRAIN
            else ("test_acc", "nn_l2", "nn_l2_raw", "nn_l2_canonical", "max_iou")
        )
        assert all(set(m[k]) >= {"mean", "std"} for k in keys) and "good_and_novel" in m
        if name != TRAIN:
            assert len(r["per_sample"][name]["nn_l2"]) == m["n"] == (3 if name == "s" else 8)
    assert set(r["baselines"]["noise"]["sigmas"]) == {"0%", "5%"}
    assert r["baselines"]["average"]["k"] == 4
    curve = r["baselines"]["noise"]["test_curve"]
    assert curve["sigma"][0] == 0 and curve["max_iou"][0] == 1.0 and len(curve["sigma"]) == 17
    assert curve["test_acc"][-1] < curve["test_acc"][0] and curve["max_iou"][-1] < 1.0
    assert r["methods"]["s"]["more_novel_than_noise"] is False  # copies sit at the frontier's sigma-0 end
    # noise at the 0% scale: distance ~ sigma * sqrt(parameters), i.e. what it was built with
    p = int(next(iter(train_zoo.layouts.values())).parameter_mask().sum())
    sigma = r["baselines"]["noise"]["sigmas"]["0%"]
    assert r["methods"]["noise-0%"]["nn_l2"]["median"] == pytest.approx(sigma * p**0.5, rel=0.15)
    for png in r["plots"].values():
        assert (out / png).stat().st_size > 5000
    assert set(r["scatter_view"]) == {"test_acc", "max_iou", "off_scale"}  # the scatter's zoom, in the JSON
    assert (
        cli(
            [
                "diagnose",
                "--train",
                train_zoo.path,
                "--out",
                str(tmp_path / "b"),
                "--baselines",
                "average",
                "--n-baseline",
                "4",
                "--no-plots",
            ]
        )
        == 0
    )
    assert list(json.loads((tmp_path / "b" / "diagnose.json").read_text())["methods"]) == [TRAIN, "average"]


def test_cli_bad_inputs_are_one_line_errors(train_zoo, tmp_path, capsys):
    other = build_zoo(
        str(tmp_path / "w8.zarr"),
        "recipe.widths=[8]",
        "recipe.seeds=1",
        "recipe.epochs=1",
        "recipe.checkpoint_epochs=[1]",
    )
    wrong_layout = write_samples(tmp_path / "w8s.zarr", other, raw_weights(other))
    good = write_samples(tmp_path / "ok.zarr", train_zoo, raw_weights(train_zoo)[:2])
    cases = [
        ([str(tmp_path / "missing.zarr"), "--train", train_zoo.path], "no zoo at"),
        ([good, "--train", str(tmp_path / "missing.zarr")], "no zoo at"),
        ([wrong_layout, "--train", train_zoo.path], "not a layout of the training zoo"),
        ([good, "--train", train_zoo.path, "--baselines", "noise,mixup"], "unknown baseline 'mixup'"),
        ([good, "--train", train_zoo.path, "--noise-drops", "1,x"], "--noise-drops"),
        ([good, "--train", train_zoo.path, "--n-baseline", "0"], "--n-baseline"),
        (["--train", train_zoo.path, "--baselines", "none"], "nothing to diagnose"),
        ([wrong_layout, "--train", other.path], "diagnostics need at least 2"),
    ]
    for args, message in cases:
        assert cli(["diagnose", *args, "--out", str(tmp_path / "o")]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and err[0].startswith("zoo diagnose: error:"), (args, err)


def test_several_samples_zoos_in_one_report(train_zoo, tmp_path):
    W = raw_weights(train_zoo)
    a = write_samples(tmp_path / "a.zarr", train_zoo, W[:2])
    b = write_samples(tmp_path / "b.zarr", train_zoo, W[2:5])
    r = run_diagnose({"first": a, "second": zoo.open(b)}, train_zoo.path, baselines="average", n_baseline=3)
    assert list(r["methods"]) == [TRAIN, "first", "second", "average"]
    assert [r["methods"][k]["n"] for k in ("first", "second", "average")] == [2, 3, 3]
    assert r["per_sample"]["second"]["nearest_train_id"] == [2, 3, 4]
    rows = method_rows(r)
    assert [x["method"] for x in rows] == [TRAIN, "first", "second", "average"]
    assert rows[1]["nn_l2"] == 0.0 and rows[1]["max_iou"] == 1.0 and rows[0]["nn_l2_over_train_median"] > 0
    assert list(run_diagnose([a, b], train_zoo, baselines=None)["methods"]) == [TRAIN, "a", "b"]


def test_batchnorm_zoo_copies_and_recalibrated_baselines(tmp_path):
    z = build_zoo(
        str(tmp_path / "bn.zarr"),
        "recipe.arch=cnn",
        "recipe.dataset=digits-image",
        "recipe.widths=[4]",
        "recipe.depths=[2]",
        "recipe.seeds=3",
        "recipe.epochs=2",
        "recipe.checkpoint_epochs=[2]",
    )
    layout = next(iter(z.layouts.values()))
    assert any(e.name.endswith("running_mean") for e in layout.entries)
    W = raw_weights(z)
    path = write_samples(tmp_path / "bncopies.zarr", z, W)
    r = run_diagnose(path, z, baselines="average,gaussian", n_baseline=4, k=2)
    s = r["per_sample"]["bncopies"]
    assert s["nn_l2"] == [0.0] * 3 and s["max_iou"] == [1.0] * 3
    assert np.allclose(s["test_acc"], z.models["test_acc"].to_numpy())  # stored statistics, as trained
    assert r["methods"]["average"]["bn_recalibrated"] and not r["methods"]["bncopies"]["bn_recalibrated"]
    # REPAIRed averages: the same averaged convolutions, BatchNorm affine parameters and head rescaled
    plain, _ = build_baselines(["average"], layout, W, z.dataset(), 3, k=2)
    rep, info = build_baselines(["average"], layout, W, z.dataset(), 3, k=2, repair=True)
    conv = layout["features.0.weight"]
    assert torch.allclose(rep["average"][:, conv.offset : conv.stop], plain["average"][:, conv.offset : conv.stop])
    bn = layout["features.1.weight"]
    assert not torch.allclose(rep["average"][:, bn.offset : bn.stop], plain["average"][:, bn.offset : bn.stop])
    assert "REPAIR" in info["average"]["repair"] and torch.isfinite(rep["average"]).all()
    # recalibrating exact copies on the training split changes their statistics, so usually their accuracy
    again = run_diagnose(path, z, baselines=None, recalibrate_samples=True)
    assert again["methods"]["bncopies"]["bn_recalibrated"] and again["per_sample"]["bncopies"]["nn_l2"] == [0.0] * 3


def test_comparison_with_noise_at_equal_accuracy():
    def m(kind, acc, iou):
        return {"kind": kind, "test_acc": {"mean": acc}, "max_iou": {"mean": iou}}

    methods = {
        TRAIN: m("train", 0.95, 0.8),
        "noise-0%": m("baseline", 0.96, 0.9),
        "gen": m("samples", 0.93, 0.6),
        "copy": m("samples", 0.96, 1.0),
        "flat": m("samples", 0.958, 0.85),
        "best": m("samples", 0.99, 0.1),
    }
    # (sigma, test_acc, max_iou): accuracy flat while max_iou falls, then both fall
    curve = [(0.0, 0.96, 1.0), (0.01, 0.961, 0.9), (0.02, 0.957, 0.8), (0.05, 0.94, 0.7), (0.1, 0.90, 0.5)]
    compare_with_noise(methods, curve, tolerance=0.005)
    assert methods["gen"]["noise_max_iou_at_equal_acc"] == 0.7  # the most novel noise at least 0.925 accurate
    assert methods["gen"]["more_novel_than_noise"] is True and methods["copy"]["more_novel_than_noise"] is False
    assert methods["flat"]["noise_max_iou_at_equal_acc"] == 0.8 and methods["flat"]["more_novel_than_noise"] is False
    assert methods["best"]["noise_max_iou_at_equal_acc"] is None and methods["best"]["more_novel_than_noise"] is None
    assert "more_novel_than_noise" not in methods["noise-0%"]


def test_novelty_bar_says_whether_the_training_models_beat_noise():
    """A zoo sets a novelty bar only when its own models are more novel than noise at their accuracy."""
    from generators.diagnose.table import novelty_bar

    def m(kind, acc, iou):
        return {"kind": kind, "test_acc": {"mean": acc}, "max_iou": {"mean": iou}}

    curve = [(0.0, 0.96, 1.0), (0.02, 0.957, 0.8), (0.05, 0.94, 0.7)]
    independent, shared = {TRAIN: m("train", 0.95, 0.6)}, {TRAIN: m("train", 0.95, 0.85)}
    for methods in (independent, shared):
        compare_with_noise(methods, curve, tolerance=0.005)
    yes, no = novelty_bar(independent), novelty_bar(shared)
    assert yes["training_models_more_novel_than_noise"] is True and "means something" in yes["note"]
    assert no["training_models_more_novel_than_noise"] is False and "NO more novel" in no["note"]
    assert novelty_bar({TRAIN: m("train", 0.99, 0.1)}) is None  # no frontier point that accurate: no verdict


def test_yardsticks_keep_their_defaults_for_small_networks_and_shrink_for_big_ones(train_zoo, tmp_path):
    """The budget plan: a digits MLP's yardsticks cost far under the default budget and keep every default (the
    diagnosis is the one it always was); under a tiny budget every count drops to its floor (never above its
    default), a given n_baseline stays, and the report and the printed table say what was used."""
    layout, data = next(iter(train_zoo.layouts.values())), train_zoo.dataset()
    assert forward_macs(layout, data) == 64 * 16 + 16 * 10  # the 64-16-10 MLP's two Linear layers
    kw = dict(curve_n=200, curve_levels=16, sigma_models=32, val_fraction=0.2, grid=28, bisect=8)
    full = plan(layout, data, ["noise", "average", "gaussian"], 100, False, 3, **kw)
    assert not full.reduced and (full.n_baseline, full.curve_n, full.sigma_models) == (100, 200, 32)
    assert full.val_points is None and full.bn_points is None and full.planned_macs == full.default_macs < 1e12
    tiny = plan(layout, data, ["noise", "average", "gaussian"], 100, False, 3, budget=1.0, **kw)
    assert tiny.reduced and (tiny.n_baseline, tiny.curve_n, tiny.sigma_models) == (MIN_BASELINE, MIN_CURVE, 8)
    assert tiny.val_points == 200 and tiny.planned_macs < tiny.default_macs
    assert tiny.bn_points == (512 if len(data.X_train) > 512 else None)
    assert plan(layout, data, ["noise"], 100, True, 3, budget=1.0, **kw).n_baseline == 100  # given: kept
    assert plan(layout, data, ["noise"], 5, False, 3, budget=1.0, **kw).n_baseline == 5  # never above the default
    X, y = validation_split(data)
    Xs, ys = validation_split(data, points=50)  # a cap takes the first of the same seeded order
    assert torch.equal(Xs, X[:50]) and torch.equal(ys, y[:50])

    samples = write_samples(tmp_path / "s.zarr", train_zoo, raw_weights(train_zoo)[:3])
    r = run_diagnose(samples, train_zoo, baselines="noise", budget=1.0, plots=False)
    b = r["budget"]
    assert b["reduced"] and b["curve_n"] == MIN_CURVE and b["sigma_models"] == 8 and b["n_baseline"] == 3
    assert r["baselines"]["noise"]["test_curve"]["samples_per_sigma"] == MIN_CURVE
    assert r["baselines"]["noise"]["models"] == 6 and r["baselines"]["noise"]["val_samples"] == 200  # 6 models: all
    assert "big networks" in summary_table(r) and "noise frontier 10 per sigma (200)" in b["note"]
    d = run_diagnose(samples, train_zoo, baselines="noise", plots=False)
    assert not d["budget"]["reduced"] and d["baselines"]["noise"]["test_curve"]["samples_per_sigma"] == 200
    assert "big networks" not in summary_table(d)
    unlimited = run_diagnose(samples, train_zoo, baselines="noise", plots=False, budget=0)  # no budget at all
    assert unlimited["per_sample"] == d["per_sample"] and unlimited["baselines"] == d["baselines"]


def test_device_cpu_gives_the_default_report(train_zoo, tmp_path, capsys):
    """``device="cpu"`` (and ``--device cpu``) gives the report of no device given, bit for bit: the evaluation and
    the searches that ``--device`` moves are the same computations on the CPU."""
    W = raw_weights(train_zoo)
    path = write_samples(tmp_path / "s.zarr", train_zoo, W[[2, 0]] + 0.01)
    kw = dict(baselines="noise,average", n_baseline=4, k=2, noise_drops=(0, 5), plots=False)
    a = run_diagnose(path, train_zoo, **kw)
    b = run_diagnose(path, train_zoo, device="cpu", **kw)
    assert a["per_sample"] == b["per_sample"] and a["methods"] == b["methods"]
    errors = torch.rand(5, 40, generator=torch.Generator().manual_seed(0)) < 0.3
    assert all(
        torch.equal(x, y)
        for x, y in zip(max_iou(errors, errors[:3]), max_iou(errors, errors[:3], device=torch.device("cpu")))
    )
    assert all(torch.equal(x, y) for x, y in zip(knn(W, W, 2, True), knn(W, W, 2, True, torch.device("cpu"))))
    for name, extra in (("plain", []), ("cpu", ["--device", "cpu"])):
        argv = ["diagnose", path, "--train", train_zoo.path, "--out", str(tmp_path / name), "--n-baseline", "4"]
        assert cli([*argv, "--k", "2", "--no-plots", *extra]) == 0, capsys.readouterr().err
    one, two = (json.loads((tmp_path / n / "diagnose.json").read_text()) for n in ("plain", "cpu"))
    assert one["per_sample"] == two["per_sample"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where torch sees no GPU")
def test_device_cuda_without_a_gpu_is_one_line_and_writes_nothing(train_zoo, tmp_path, capsys):
    out = tmp_path / "diag"
    assert cli(["diagnose", "--train", train_zoo.path, "--out", str(out), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no CUDA GPU" in err and "\n" not in err and "Traceback" not in err, err
    assert not out.exists()
    with pytest.raises(zoo.ZooError, match="no CUDA GPU"):
        run_diagnose(None, train_zoo, out, baselines="noise", device="cuda:0")
    assert not out.exists()
