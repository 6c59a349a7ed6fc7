"""Metrics per task and the paired bootstrap, as pure functions of labels and scores.

The same code scores a trial on validation data, a challenger and a champion on the holdout,
and live traffic. "Scores" are what a model outputs before formatting: the positive-class
probability (binary), a probability per class (multiclass, n x k), or the prediction
(regression). Which metrics a task has, and their direction, is `ctloop.tasks`' business.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_absolute_percentage_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)

EPS = 1e-7
Sampler = Callable[[np.ndarray], np.ndarray]  # bootstrap counts (B x n) -> metric per resample


def _binary_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, ...]:
    """True and false positives counted down to each distinct score, highest score first,
    and those scores: scikit-learn's `_binary_clf_curve`, from which its ROC and
    precision-recall curves are made."""
    order = np.argsort(score, kind="stable")[::-1]
    ranked, hits = score[order], (y[order] == 1).astype(np.float64)
    ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    tps = np.cumsum(hits)[ends]
    return tps, 1 + ends - tps, ranked[ends]


def _precision_recall(tps: np.ndarray, fps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    precision = tps / (tps + fps)
    recall = tps / tps[-1] if tps[-1] else np.ones_like(tps)  # no positives: as sklearn
    return precision, recall


def choose_threshold(y: np.ndarray, probability: np.ndarray) -> float:
    """The probability cut that maximises F1 on the given (validation) data: the lowest of
    equally good cuts, as scikit-learn's precision-recall curve ranks them."""
    if not len(y):
        return 0.5
    tps, fps, cuts = _binary_curve(np.asarray(y), np.asarray(probability, dtype=np.float64))
    precision, recall = _precision_recall(tps, fps)
    f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
    return float(cuts[len(f1) - 1 - int(np.nanargmax(f1[::-1]))])


def classification_metrics(
    y: np.ndarray, probability: np.ndarray, threshold: float
) -> dict[str, float]:
    """Binary metrics: ranking, calibration, and the labels at the chosen threshold.

    Computed from one sort of the scores, with scikit-learn's definitions (the same values,
    tested against it): its metric functions check their inputs on every call, which cost
    more than the metrics themselves (14 ms of every trial of a search on 12k rows)."""
    y = np.asarray(y)
    p = np.asarray(probability, dtype=np.float64)
    positive = y == 1
    predicted = p >= threshold
    tp = int(np.count_nonzero(predicted & positive))
    fp = int(np.count_nonzero(predicted)) - tp
    fn = int(np.count_nonzero(positive)) - tp
    clipped = np.clip(p, EPS, 1 - EPS)
    metrics = {
        "roc_auc": float("nan"), "pr_auc": float("nan"),  # one class only: no ranking
        "log_loss": float(-np.mean(np.where(positive, np.log(clipped), np.log(1 - clipped)))),
        "brier": float(np.mean((p - positive) ** 2)),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "precision": tp / (tp + fp) if tp else 0.0,
        "recall": tp / (tp + fn) if tp else 0.0,
        "threshold": float(threshold),
    }
    if 0 < np.count_nonzero(positive) < len(y):
        tps, fps, _ = _binary_curve(y, p)
        fpr, tpr = np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]
        metrics["roc_auc"] = float(np.trapezoid(tpr, fpr))
        precision, recall = _precision_recall(tps, fps)
        metrics["pr_auc"] = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return metrics


def multiclass_metrics(y: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Multiclass metrics; `roc_auc` is one-vs-rest, macro-averaged over the classes present."""
    k = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    # float64 first: float32 rows sum to 1 only within 1e-7, and sklearn warns past 1.5e-8.
    clipped = np.clip(np.asarray(probabilities, dtype=np.float64), EPS, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return {
        "log_loss": float(log_loss(y, clipped, labels=list(range(k)))),
        "accuracy": float(accuracy_score(y, predicted)),
        "f1_macro": float(f1_score(y, predicted, average="macro", labels=np.unique(y),
                                   zero_division=0)),
        "roc_auc": _ovr_auc(y, probabilities),
    }


def _ovr_auc(y: np.ndarray, probabilities: np.ndarray) -> float:
    aucs = [roc_auc_score(y == c, probabilities[:, c]) for c in np.unique(y)
            if 0 < (y == c).sum() < len(y)]
    return float(np.mean(aucs)) if aucs else float("nan")


def regression_metrics(y: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """rmse, mae and r2; mape too when every target is strictly positive (else it means nothing)."""
    out = {
        "rmse": float(root_mean_squared_error(y, prediction)),
        "mae": float(mean_absolute_error(y, prediction)),
        "r2": float(r2_score(y, prediction)) if len(y) > 1 else float("nan"),
    }
    if len(y) and float(np.min(y)) > 0:
        out["mape"] = float(mean_absolute_percentage_error(y, prediction))
    return out


# --- bootstrap samplers: each turns a (B x n) matrix of resample counts into B metric values ---

def _weighted_auc(y_sorted: np.ndarray, groups: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """ROC AUC for each row of bootstrap `counts` (already in score order), ties counted half."""
    positive = counts * y_sorted
    negative = counts - positive
    pos_g = np.add.reduceat(positive, groups, axis=1)
    neg_g = np.add.reduceat(negative, groups, axis=1)
    below = np.cumsum(neg_g, axis=1) - neg_g
    numerator = (pos_g * (below + 0.5 * neg_g)).sum(axis=1)
    denominator = pos_g.sum(axis=1) * neg_g.sum(axis=1)
    return numerator / np.maximum(denominator, 1)


def auc_sampler(y: np.ndarray, score: np.ndarray) -> Sampler:
    """ROC AUC of `score` for the 0/1 labels `y`, under each resample."""
    order = np.argsort(score, kind="stable")
    sorted_s = score[order]
    groups = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    y_sorted = y[order].astype(np.float64)
    return lambda counts: _weighted_auc(y_sorted, groups, counts[:, order])


_auc_sampler = auc_sampler  # the name the unit tests know


def mean_sampler(values: np.ndarray) -> Sampler:
    """The mean of a per-row quantity (a loss, a hit) under each resample."""
    return lambda counts: counts @ values / counts.sum(axis=1)


def ratio_sampler(numerator: np.ndarray, denominator: np.ndarray) -> Sampler:
    """sum(numerator) / sum(denominator) under each resample (recall, precision); 0 when the
    denominator is empty, as sklearn's zero_division=0."""
    def sample(counts: np.ndarray) -> np.ndarray:
        den = counts @ denominator
        return np.where(den > 0, counts @ numerator / np.maximum(den, 1e-12), 0.0)

    return sample


def rmse_sampler(y: np.ndarray, prediction: np.ndarray) -> Sampler:
    mse = mean_sampler((prediction - y) ** 2)
    return lambda counts: np.sqrt(mse(counts))


def r2_sampler(y: np.ndarray, prediction: np.ndarray) -> Sampler:
    """1 - SSE/SST with both sums weighted by the resample counts."""
    squared_error = (prediction - y) ** 2

    def sample(counts: np.ndarray) -> np.ndarray:
        total = counts.sum(axis=1)
        sse = counts @ squared_error
        mean = counts @ y / total
        sst = counts @ (y**2) - total * mean**2
        return 1.0 - sse / np.maximum(sst, 1e-12)

    return sample


def ovr_auc_sampler(y: np.ndarray, probabilities: np.ndarray) -> Sampler:
    """Macro one-vs-rest AUC: the mean of each class's own AUC sampler."""
    present = [c for c in np.unique(y).astype(int) if 0 < (y == c).sum() < len(y)]
    samplers = [auc_sampler((y == c).astype(np.float64), probabilities[:, c]) for c in present]
    return lambda counts: np.mean([s(counts) for s in samplers], axis=0)


def weighted_sampler(metric_fn: Callable[..., float], *arrays: np.ndarray) -> Sampler:
    """Any sample-weighted sklearn metric, one call per resample (slow; last resort)."""
    return lambda counts: np.array([metric_fn(*arrays, sample_weight=c) for c in counts])


def paired_bootstrap(
    sample_challenger: Sampler,
    sample_champion: Sampler,
    n: int,
    lower_is_better: bool,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 100,
) -> dict[str, float]:
    """Bootstrap the improvement of challenger over champion on the same rows.

    Both models are scored on the same resampled rows each time (paired), so their shared
    noise cancels. `improvement` is signed so that positive is better whatever the metric's
    direction. Returns the point estimate and the two-sided interval at `confidence`; the
    one-sided lower bound used by the gate is `lower_one_sided`.
    """
    sign = -1.0 if lower_is_better else 1.0
    rng = np.random.default_rng(seed)
    deltas = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        rows = rng.integers(0, n, size=(size, n)) + np.arange(size)[:, None] * n
        counts = np.bincount(rows.ravel(), minlength=size * n).reshape(size, n).astype(float)
        deltas.append(sign * (sample_challenger(counts) - sample_champion(counts)))
    delta = np.concatenate(deltas)
    ones = np.ones((1, n))
    point = float(sign * (sample_challenger(ones)[0] - sample_champion(ones)[0]))
    alpha = 1.0 - confidence
    return {
        "improvement": point,
        "lower": float(np.quantile(delta, alpha / 2)),
        "upper": float(np.quantile(delta, 1 - alpha / 2)),
        "lower_one_sided": float(np.quantile(delta, alpha)),
        "resamples": float(resamples),
        "confidence": confidence,
    }
