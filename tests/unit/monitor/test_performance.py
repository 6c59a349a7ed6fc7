"""The harm measures on constructed data: CBPE estimates against the realised metrics, the
labelled check's interval, tolerances per task, and the prediction's effect size."""

from __future__ import annotations

import numpy as np
import pytest

from ctloop.monitor import performance as perf
from ctloop.monitor.drift import effect_size
from ctloop.monitor.estimate import Calibrator, estimate
from ctloop.tasks import BinaryTask, MulticlassTask, RegressionTask, TaskError

BINARY = BinaryTask(1, 0, threshold=0.4)
MULTI = MulticlassTask(("a", "b", "c"))


def _binary(rng: np.random.Generator, n: int, mu: float = 0.0, sd: float = 1.0):
    """y ~ Bernoulli(sigmoid(2x - 1)); the model's score is monotone but miscalibrated."""
    x = rng.normal(mu, sd, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(2 * x - 1)))).astype(np.int64)
    return y, 1 / (1 + np.exp(-(3.5 * x - 1.5)))


@pytest.mark.parametrize(("mu", "sd"), [(0.0, 1.0), (0.0, 0.4), (1.0, 0.5), (-1.0, 1.2)])
def test_cbpe_tracks_the_realised_binary_metrics_under_covariate_shift(mu: float,
                                                                       sd: float) -> None:
    rng = np.random.default_rng(1)
    y_ref, s_ref = _binary(rng, 3000)
    calibrate = Calibrator.fit(BINARY, y_ref, s_ref)
    y, s = _binary(rng, 5000, mu, sd)
    estimated, realised = estimate(BINARY, s, calibrate(s)), BINARY.metrics(y, s)
    for metric, close in {"roc_auc": 0.03, "recall": 0.04, "precision": 0.04, "f1": 0.04,
                          "log_loss": 0.05, "brier": 0.02}.items():  # fmt: skip
        assert abs(estimated[metric] - realised[metric]) < close, (metric, estimated, realised)


def test_cbpe_sees_a_harmful_shift_the_raw_scores_would_misjudge() -> None:
    rng = np.random.default_rng(2)
    y_ref, s_ref = _binary(rng, 3000)
    calibrate = Calibrator.fit(BINARY, y_ref, s_ref)
    expected = estimate(BINARY, s_ref, calibrate(s_ref))
    y, s = _binary(rng, 3000, 0.3, 0.3)  # crowded where the model is least sure
    drop = expected["roc_auc"] - estimate(BINARY, s, calibrate(s))["roc_auc"]
    realised_drop = BINARY.metrics(y_ref, s_ref)["roc_auc"] - BINARY.metrics(y, s)["roc_auc"]
    assert drop > 0.1 and abs(drop - realised_drop) < 0.04


def test_cbpe_multiclass_tracks_accuracy_and_log_loss() -> None:
    rng = np.random.default_rng(3)

    def draw(n: int, centre: float):
        x = rng.normal(centre, 1.0, (n, 1))
        logits = np.hstack([-x, 0 * x, x]) * 2
        truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        y = np.array([rng.choice(3, p=p) for p in truth])
        sharp = np.exp(1.6 * logits)
        return y, sharp / sharp.sum(axis=1, keepdims=True)  # overconfident

    y_ref, s_ref = draw(3000, 0.0)
    calibrate = Calibrator.fit(MULTI, y_ref, s_ref)
    y, s = draw(4000, 0.8)
    estimated, realised = estimate(MULTI, s, calibrate(s)), MULTI.metrics(y, s)
    assert abs(estimated["accuracy"] - realised["accuracy"]) < 0.03
    assert abs(estimated["log_loss"] - realised["log_loss"]) < 0.1 * realised["log_loss"]
    assert abs(estimated["roc_auc"] - realised["roc_auc"]) < 0.03


def test_no_estimate_for_regression_or_a_tiny_holdout() -> None:
    assert Calibrator.fit(RegressionTask(), np.ones(500), np.ones(500)) is None
    assert Calibrator.fit(BINARY, np.array([0, 1] * 10), np.linspace(0, 1, 20)) is None


def test_labelled_check_calm_noise_is_not_harm_a_real_drop_is() -> None:
    rng = np.random.default_rng(4)
    y_ref, s_ref = _binary(rng, 1500)
    tols = perf.tolerances(BINARY, "roc_auc", None)
    assert tols == {"roc_auc": 0.03, "recall": 0.15}
    calm = perf.labelled_checks(BINARY, tols, y_ref, s_ref, *_binary(rng, 1000), 0.9)
    assert [c.metric for c in calm] == ["roc_auc", "recall"]
    assert not any(c.harmful for c in calm)
    roc = calm[0]
    assert roc.lower < roc.drop and roc.source == "labels"
    y, s = _binary(rng, 1000)
    flipped = np.where(rng.random(len(y)) < 0.3, 1 - y, y)
    harmed = perf.labelled_checks(BINARY, tols, y_ref, s_ref, flipped, s, 0.9)
    assert harmed[0].harmful and harmed[0].lower > 0.03
    assert "(realised): drop +0.2" in harmed[0].describe()
    assert not calm[0].too_noisy and "larger window" not in calm[0].describe()
    # 60 rows cannot resolve three points of AUC: the reason says so instead of a bare "<="
    tiny = perf.labelled_checks(BINARY, {"roc_auc": 0.03}, y_ref, s_ref, *_binary(rng, 60), 0.9)
    assert tiny[0].too_noisy and "a larger window would tell" in tiny[0].describe()


def test_error_metrics_drop_relative_to_their_expected_level() -> None:
    task = RegressionTask()
    rng = np.random.default_rng(5)
    y_ref = rng.normal(100, 20, 800)
    p_ref = y_ref + rng.normal(0, 10, 800)
    y = rng.normal(100, 20, 800)
    worse = y + rng.normal(0, 13, 800)  # rmse ~30% above its holdout level
    [check] = perf.labelled_checks(task, {"rmse": 0.1}, y_ref, p_ref, y, worse, 0.9)
    assert check.harmful and 0.15 < check.drop < 0.5
    assert "%" in check.describe() and "tolerance 10%" in check.describe()
    with pytest.raises(TaskError, match="'roc_auc' is not a regression metric"):
        perf.tolerances(task, "rmse", {"roc_auc": 0.03})


def test_prediction_effect_size_is_calm_on_noise_and_sees_a_move() -> None:
    rng = np.random.default_rng(6)
    ref = rng.beta(2, 5, 800)
    calm = [effect_size(ref, rng.beta(2, 5, 1000), "num", 0.2, seed=i) for i in range(20)]
    assert not any(c.drifted for c in calm) and max(c.score for c in calm) < 0.15
    moved = effect_size(ref, rng.beta(2, 3.5, 1000), "num", 0.2)
    assert moved.drifted and moved.method == "wasserstein_normed"
    # a tiny reference moves a lot on its own: the noise floor rises above the threshold
    small = effect_size(ref[:40], rng.beta(2, 5, 1000), "num", 0.2)
    assert small.threshold > 0.2 and not small.drifted
    labels = effect_size(np.array(["a"] * 500 + ["b"] * 500), np.array(["a"] * 900 + ["b"] * 100),
                         "cat", 0.1)
    assert labels.drifted and labels.method == "jensenshannon"
