"""REPAIR: interpolated units get their target statistics, a network is its own fixed point, barriers use it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from zoo.arch import arch_spec, build_model
from zoo.datasets import load_dataset
from zoo.evaluate import evaluate, predict
from zoo.layout import layout_of
from zoo.rebasin.repair import repair, repair_mix, repair_points, unit_stats
from zoo.rebasin.report import loss_barriers
from zoo.rebasin.spec import spec_for_layout


@pytest.fixture(scope="module")
def data():
    d = load_dataset("digits-image")
    return dataclasses.replace(d, X_train=d.X_train[:200], y_train=d.y_train[:200], X_test=d.X_test[:50])


def _pair(name, data):
    spec = arch_spec(name, data.input_shape, 10, 6, 2)
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = build_model(spec)
        with torch.no_grad():  # BatchNorm statistics that belong to no data: REPAIR must not rely on them
            for b in m.modules():
                if isinstance(b, torch.nn.BatchNorm2d):
                    b.running_mean.uniform_(-1, 1)
                    b.running_var.uniform_(0.5, 2)
                    b.weight.uniform_(0.5, 1.5)
        nets.append(m)
    layout = layout_of(nets[0], spec)
    return layout, torch.stack([layout.flatten(m.state_dict()) for m in nets])


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_repaired_midpoint_has_the_interpolated_statistics(name, data):
    layout, w = _pair(name, data)
    points = repair_points(spec_for_layout(layout))
    assert points[-1].module == "head" or points[-1].module.startswith("layers.")
    if name == "cnn":  # BatchNorm units are corrected at the BatchNorm, the head at its output
        assert [p.module for p in points] == ["features.1", "features.4", "head"]
    mean, std = unit_stats(layout, w, data)
    t = 0.3
    mid = ((1 - t) * w[0] + t * w[1])[None]
    target_m, target_s = (1 - t) * mean[:1] + t * mean[1:], (1 - t) * std[:1] + t * std[1:]
    before_m, before_s = unit_stats(layout, mid, data)
    assert (before_s < target_s - 1e-3).any()  # the variance collapse REPAIR undoes
    fixed = repair(layout, mid, target_m, target_s, data)
    got_m, got_s = unit_stats(layout, fixed, data, recalibrate=False)
    torch.testing.assert_close(got_m, target_m, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_s, target_s, atol=1e-4, rtol=1e-3)
    if name == "cnn":  # stable under a later BatchNorm reset: the units' statistics barely move
        again_m, again_s = unit_stats(layout, fixed, data)
        torch.testing.assert_close(again_s, target_s, atol=2e-2, rtol=2e-2)


def test_a_network_is_its_own_repair_and_a_one_member_mix(data):
    layout, w = _pair("cnn", data)
    mean, std = unit_stats(layout, w, data)
    same = repair(layout, w, mean, std, data)
    from zoo.evaluate import recalibrate_bn

    ref = predict(layout, recalibrate_bn(layout, w, data), data.X_test)
    torch.testing.assert_close(predict(layout, same, data.X_test), ref, atol=1e-4, rtol=1e-4)
    one = repair_mix(layout, w[:, None], torch.ones(2, 1), data)
    torch.testing.assert_close(predict(layout, one, data.X_test), ref, atol=1e-4, rtol=1e-4)


def test_barrier_with_repair_keeps_endpoints_and_reads_no_test_data(data):
    layout, w = _pair("cnn", data)
    plain = loss_barriers(layout, w[:1], w[1:], data, steps=3)
    rep = loss_barriers(layout, w[:1], w[1:], dataclasses.replace(data, X_test=data.X_test[:0]), steps=3, repair=True)
    torch.testing.assert_close(rep["losses"][:, [0, 2]], plain["losses"][:, [0, 2]], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(rep["barrier"]).all()
    assert float(evaluate(layout, w, data, "train", recalibrate_bn=True)["loss"][0]) == pytest.approx(
        float(plain["losses"][0, 0]), rel=1e-6
    )


def test_one_forward_and_chunked_passes_give_the_same_repair(data, monkeypatch):
    layout, w = _pair("cnn", data)
    mean, std = unit_stats(layout, w, data)
    mid = (0.5 * w[0] + 0.5 * w[1])[None]
    target = (0.5 * mean.sum(0, keepdim=True), 0.5 * std.sum(0, keepdim=True))
    one = repair(layout, mid, *target, data)
    monkeypatch.setattr("zoo.rebasin.repair.ONE_PASS_FLOATS", 0)
    monkeypatch.setattr("zoo.rebasin.repair.CPU_FORWARD_FLOATS", 20_000)  # several chunks of samples
    chunked = repair(layout, mid, *target, data)
    torch.testing.assert_close(chunked, one, atol=1e-5, rtol=1e-5)
