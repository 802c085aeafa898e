"""Target metrics come from torchmetrics and say 'undefined' (NaN) rather than a made-up 0."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from wsl.targets import classification_metrics, regression_metrics
from zoo.errors import ZooError


def test_regression_metrics_match_definitions():
    rng = np.random.default_rng(0)
    y = rng.normal(size=50).round(1)  # ties on both sides: tau-b
    p = (y + rng.normal(scale=0.5, size=50)).round(1)
    m = regression_metrics(torch.tensor(p), torch.tensor(y))
    assert m["kendall_tau"] == pytest.approx(kendalltau(p, y).statistic, abs=1e-6)  # torchmetrics sorts in float32
    assert m["r2"] == pytest.approx(1 - np.mean((p - y) ** 2) / np.var(y), abs=1e-9)
    assert m["mse"] == pytest.approx(np.mean((p - y) ** 2), abs=1e-9)
    perfect = regression_metrics(torch.tensor(y), torch.tensor(y))
    assert perfect["kendall_tau"] == pytest.approx(1.0) and perfect["r2"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "pred,target",
    [
        ([0.5, 0.5, 0.5, 0.5], [0.1, 0.2, 0.3, 0.4]),  # constant predictions
        ([0.1, 0.2, 0.3, 0.4], [0.7, 0.7, 0.7, 0.7]),  # constant targets
        ([0.3], [0.9]),
    ],
)  # one sample
def test_undefined_tau_is_nan_not_zero(pred, target):
    m = regression_metrics(torch.tensor(pred), torch.tensor(target))
    assert math.isnan(m["kendall_tau"])
    assert math.isfinite(m["mse"])
    if len(set(target)) == 1:
        assert math.isnan(m["r2"])  # torchmetrics' r2_score returns 0 for constant targets
    else:
        assert m["r2"] < 0  # constant prediction of a varying target: worse than the mean, defined


def test_shape_mismatch_is_an_error():
    with pytest.raises(ZooError):
        regression_metrics(torch.zeros(3), torch.zeros(4))


def test_classification_accuracy():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    assert classification_metrics(logits, torch.tensor([0, 1, 2, 1]))["acc"] == pytest.approx(0.75)
    assert math.isnan(classification_metrics(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))["acc"])
