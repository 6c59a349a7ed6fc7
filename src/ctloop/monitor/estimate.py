"""The champion's metrics on unlabelled rows, estimated from its own calibrated probabilities.

Confidence-based performance estimation (CBPE), the method of NannyML
(https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html):
if a calibrated model says P(y=1 | x) = c, a row counts as c of a positive and 1 - c of a
negative, so the expected confusion matrix at any threshold, and with it the expected ROC
curve, follow from the predictions alone. Here every row is entered twice, as the positive
class with weight c and as the negative with weight 1 - c, and the task's sklearn metric is
computed with those sample weights: expected TP = sum(c * [s >= t]) and so on. Multiclass is
the same with one copy per class. It holds under covariate shift (P(x) moves, P(y | x) does
not), which is what a model without labels can know about; a change of P(y | x) (concept
shift) needs labels. Regression's analogue, a model of the champion's loss, is
`estimate_loss.py`.

The champion's raw probabilities need not be calibrated (boosted trees seldom are), so an
isotonic map is fitted on its holdout (rows it never trained on), per class for multiclass.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from ctloop.metrics import EPS
from ctloop.tasks import Task

MIN_CALIBRATION_ROWS = 50


class Calibrator:
    """Isotonic maps from the champion's scores to calibrated class probabilities."""

    def __init__(self, maps: list[IsotonicRegression], binary: bool) -> None:
        self.maps, self.binary = maps, binary

    @classmethod
    def fit(cls, task: Task, y: np.ndarray, scores: np.ndarray) -> Calibrator | None:
        """Fitted on labelled holdout rows; None when the task has no probabilities or the
        holdout is too small or has a single class."""
        if task.kind == "regression" or len(y) < MIN_CALIBRATION_ROWS:
            return None
        y = np.asarray(y).astype(np.int64)
        if len(np.unique(y)) < 2:
            return None
        if task.kind == "binary":
            return cls([_isotonic(scores, y == 1)], binary=True)
        return cls([_isotonic(scores[:, k], y == k) for k in range(scores.shape[1])], False)

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """P(y=1) per row (binary), or a row-normalised n x k matrix (multiclass)."""
        if self.binary:
            return np.clip(self.maps[0].predict(scores), 0.0, 1.0)
        cal = np.column_stack([m.predict(scores[:, k]) for k, m in enumerate(self.maps)])
        cal = np.clip(cal, EPS, 1.0)
        return cal / cal.sum(axis=1, keepdims=True)


def _isotonic(x: np.ndarray, hit: np.ndarray) -> IsotonicRegression:
    return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
        np.asarray(x, dtype=np.float64), hit.astype(np.float64))


def estimate(task: Task, scores: np.ndarray, calibrated: np.ndarray) -> dict[str, float]:
    """The task's metrics expected on these rows, labels unknown (see the module docstring)."""
    if task.kind == "binary":
        return _binary(scores, calibrated, getattr(task, "threshold", 0.5))
    if task.kind == "multiclass":
        return _multiclass(scores, calibrated)
    return {}


def _finite(values: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if math.isfinite(v)}


def _binary(p: np.ndarray, c: np.ndarray, threshold: float) -> dict[str, float]:
    n = len(p)
    y = np.r_[np.ones(n), np.zeros(n)]
    w = np.r_[c, 1.0 - c]
    score = np.r_[p, p]
    hit = (score >= threshold).astype(int)
    if w[:n].sum() <= 0 or w[n:].sum() <= 0:
        return {}
    clipped = np.clip(score, EPS, 1 - EPS)
    return _finite({
        "roc_auc": roc_auc_score(y, score, sample_weight=w),
        "pr_auc": average_precision_score(y, score, sample_weight=w),
        "log_loss": log_loss(y, clipped, sample_weight=w, labels=[0, 1]),
        "brier": brier_score_loss(y, score, sample_weight=w, pos_label=1),
        "f1": f1_score(y, hit, sample_weight=w, zero_division=0),
        "precision": precision_score(y, hit, sample_weight=w, zero_division=0),
        "recall": recall_score(y, hit, sample_weight=w, zero_division=0),
    })


def _multiclass(p: np.ndarray, c: np.ndarray) -> dict[str, float]:
    n, k = p.shape
    y = np.repeat(np.arange(k)[None, :], n, axis=0).ravel()  # row i as class 0..k-1
    w = c.ravel()
    score = np.repeat(p, k, axis=0)
    predicted = score.argmax(axis=1)
    clipped = np.clip(score.astype(np.float64), EPS, 1.0)  # float32 rows: see metrics.py
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    out = {
        "log_loss": log_loss(y, clipped, sample_weight=w, labels=list(range(k))),
        "accuracy": accuracy_score(y, predicted, sample_weight=w),
        "f1_macro": f1_score(y, predicted, average="macro", sample_weight=w,
                             labels=list(range(k)), zero_division=0),
    }
    with contextlib.suppress(ValueError):  # a class with no expected weight
        out["roc_auc"] = roc_auc_score(y, clipped, sample_weight=w, multi_class="ovr",
                                       average="macro", labels=list(range(k)))
    return _finite(out)
