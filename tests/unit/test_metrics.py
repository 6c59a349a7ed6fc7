"""Metrics and the paired bootstrap, checked on data where the answer is known."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ctloop.metrics import (
    _auc_sampler,
    choose_threshold,
    classification_metrics,
)
from ctloop.metrics import paired_bootstrap as bootstrap
from ctloop.tasks import BinaryTask

TASK = BinaryTask(1, 0)


def paired_bootstrap(metric, y, new, old, resamples):
    return bootstrap(TASK.sampler(metric, y, new), TASK.sampler(metric, y, old), len(y),
                     metric in TASK.lower_is_better, resamples)


def scores(n=4000, signal=1.0, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(0, 1.5, n))))


def test_weighted_auc_matches_sklearn_including_ties():
    y, p = scores()
    p = np.round(p, 2)  # many ties
    counts = np.random.default_rng(1).integers(0, 3, size=(3, len(y))).astype(float)
    fast = _auc_sampler(y.astype(float), p)(counts)
    slow = [roc_auc_score(y, p, sample_weight=c) for c in counts]
    np.testing.assert_allclose(fast, slow, rtol=1e-10)


def test_identical_models_have_a_zero_interval():
    y, p = scores()
    result = paired_bootstrap("roc_auc", y, p, p, resamples=200)
    assert result["improvement"] == result["lower"] == result["upper"] == 0.0


def test_a_clearly_better_model_has_an_interval_above_zero():
    y, weak = scores(signal=0.3, seed=3)
    _, strong = scores(signal=1.5, seed=3)
    result = paired_bootstrap("roc_auc", y, strong, weak, resamples=300)
    assert result["lower_one_sided"] > 0.05
    reverse = paired_bootstrap("roc_auc", y, weak, strong, resamples=300)
    assert reverse["upper"] < 0


def test_noise_alone_does_not_look_like_an_improvement():
    rng = np.random.default_rng(5)
    y, p = scores(seed=5)
    jitter = np.clip(p + rng.normal(0, 0.01, len(p)), 0, 1)
    result = paired_bootstrap("roc_auc", y, jitter, p, resamples=300)
    assert result["lower"] < 0 < result["upper"]


@pytest.mark.parametrize("metric", ["log_loss", "brier"])
def test_lower_is_better_metrics_are_signed_so_positive_means_better(metric):
    y, good = scores(signal=1.5, seed=2)
    bad = np.clip(good * 0.5 + 0.25, 0, 1)
    result = paired_bootstrap(metric, y, good, bad, resamples=200)
    assert result["improvement"] > 0 and result["lower_one_sided"] > 0


def test_threshold_maximises_f1():
    y, p = scores()
    best = choose_threshold(y, p)
    f1 = classification_metrics(y, p, best)["f1"]
    for other in (0.2, 0.5, 0.8):
        assert f1 >= classification_metrics(y, p, other)["f1"] - 1e-9


def _sklearn_binary(y, p, threshold):
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        log_loss,
        precision_recall_curve,
        precision_recall_fscore_support,
    )

    both = len(np.unique(y)) == 2
    precision, recall, f1, _ = precision_recall_fscore_support(
        y, (p >= threshold).astype(int), average="binary", pos_label=1, zero_division=0)
    curve_p, curve_r, cuts = precision_recall_curve(y, p)
    curve_f1 = 2 * curve_p * curve_r / np.clip(curve_p + curve_r, 1e-12, None)
    return {
        "roc_auc": roc_auc_score(y, p) if both else np.nan,
        "pr_auc": average_precision_score(y, p) if both else np.nan,
        "log_loss": log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]),
        "brier": brier_score_loss(y, p, pos_label=1),
        "f1": f1, "precision": precision, "recall": recall, "threshold": threshold,
    }, float(cuts[int(np.nanargmax(curve_f1[:-1]))])


@pytest.mark.parametrize("case", ["smooth", "ties", "rounded to 0.1", "rare positives",
                                  "one class", "constant scores", "perfect"])
def test_binary_metrics_and_threshold_are_scikit_learns(case):
    """One sort of the scores gives every metric scikit-learn's functions give, ties,
    imbalance and one-class windows included, and the threshold its curve would pick."""
    import warnings

    rng = np.random.default_rng(len(case))
    y, p = scores(3000, seed=len(case))
    if case == "ties":
        p = np.round(p, 2)
    elif case == "rounded to 0.1":
        p = np.round(p, 1)
    elif case == "rare positives":
        y = (rng.random(3000) < 0.02).astype(int)
    elif case == "one class":
        y = np.zeros(3000, dtype=int)
    elif case == "constant scores":
        p = np.full(3000, 0.3)
    elif case == "perfect":
        p = y * 0.9 + 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on one class
        expected, expected_threshold = _sklearn_binary(y, p, 0.4)
    got = classification_metrics(y, p, 0.4)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-12, atol=1e-15, err_msg=name)
    assert choose_threshold(y, p) == expected_threshold
