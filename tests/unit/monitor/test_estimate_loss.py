"""Direct loss estimation for regression champions, against the realised metrics on
constructed data: traffic that moves to where the champion errs more, calm traffic, a
category where it errs more, and holdouts too small to learn a loss from."""

from __future__ import annotations

import numpy as np
import pytest

from ctloop.monitor import performance as perf
from ctloop.monitor.estimate_loss import MIN_ROWS, LossEstimator
from ctloop.tasks import RegressionTask

TASK = RegressionTask()
METRICS = ("rmse", "mae", "mape")


def _rows(rng: np.random.Generator, n: int, centre: float = 0.0):
    """Features (x, a noise-free column, a 3-level category), a champion that predicts the
    mean exactly, and labels whose noise grows with |x| and in category 2 (heteroscedastic,
    so where the traffic lies decides the error)."""
    x = rng.normal(centre, 1.0, n)
    category = rng.integers(0, 3, n).astype(np.float64)
    other = rng.normal(0.0, 1.0, n)
    mean = 50.0 + 5.0 * x
    noise = (1.0 + 2.0 * np.abs(x) + 2.0 * (category == 2)) * rng.standard_normal(n)
    return np.column_stack([x, other, category]), mean, mean + noise


def _realised(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {m: v for m, v in TASK.metrics(y, p).items() if m in METRICS}


@pytest.fixture(scope="module")
def fitted() -> tuple[LossEstimator, np.random.Generator]:
    rng = np.random.default_rng(7)
    X, p, y = _rows(rng, 4000)
    estimator = LossEstimator.fit(X, p, y, categorical=[2], metrics=METRICS)
    assert estimator is not None
    return estimator, rng


def test_the_holdout_estimate_matches_its_realised_metrics(fitted) -> None:
    estimator, rng = fitted
    _, p, y = _rows(rng, 20_000)  # the same distribution, many rows: the truth
    for metric, value in _realised(y, p).items():
        assert estimator.expected[metric] == pytest.approx(value, rel=0.06), metric


@pytest.mark.parametrize("centre", [1.0, -1.2])
def test_a_shift_to_where_the_champion_errs_more_is_estimated(fitted, centre: float) -> None:
    estimator, rng = fitted
    X, p, y = _rows(rng, 5000, centre)
    estimated, realised = estimator.estimate(X, p), _realised(y, p)
    for metric in METRICS:  # a little low: trees hold the loss flat past the holdout's edge
        assert estimated[metric] == pytest.approx(realised[metric], rel=0.12), metric
    [check] = perf.estimated_checks({"rmse": 0.1}, estimator.expected, estimated,
                                    TASK.lower_is_better)  # fmt: skip
    realised_drop = realised["rmse"] / estimator.expected["rmse"] - 1.0
    assert check.harmful and check.source == "estimate"
    assert check.drop == pytest.approx(realised_drop, abs=0.1)


def test_calm_windows_are_not_estimated_worse(fitted) -> None:
    estimator, rng = fitted
    for _ in range(10):
        X, p, _ = _rows(rng, 1000)
        estimated = estimator.estimate(X, p)
        checks = perf.estimated_checks({"rmse": 0.1, "mae": 0.1}, estimator.expected,
                                       estimated, TASK.lower_is_better)  # fmt: skip
        assert not any(c.harmful for c in checks)
        assert all(abs(c.drop) < 0.05 for c in checks)


def test_the_noisier_category_is_seen(fitted) -> None:
    estimator, rng = fitted
    X, p, y = _rows(rng, 5000)
    X[:, 2] = 2.0  # every row in the category where the labels are noisiest
    y = p + (1.0 + 2.0 * np.abs(X[:, 0]) + 2.0) * rng.standard_normal(len(p))
    estimated, realised = estimator.estimate(X, p), _realised(y, p)
    assert estimated["mae"] == pytest.approx(realised["mae"], rel=0.08)
    assert estimated["mae"] > 1.3 * estimator.expected["mae"]


def test_no_estimate_from_a_small_holdout_or_for_r2_alone() -> None:
    rng = np.random.default_rng(8)
    X, p, y = _rows(rng, MIN_ROWS - 1)
    assert LossEstimator.fit(X, p, y, categorical=[2], metrics=METRICS) is None
    X, p, y = _rows(rng, 2000)
    assert LossEstimator.fit(X, p, y, categorical=[2], metrics=["r2"]) is None
