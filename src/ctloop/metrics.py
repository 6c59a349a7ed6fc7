"""Classification metrics, the decision threshold, and the plots people look at.

Everything here is a pure function of labels and probabilities, so the same code scores a
trial on validation data, a challenger and a champion on the holdout, and live traffic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

LOWER_IS_BETTER = frozenset({"log_loss", "brier"})


def choose_threshold(y: np.ndarray, probability: np.ndarray) -> float:
    """The probability cut that maximises F1 on the given (validation) data."""
    precision, recall, thresholds = precision_recall_curve(y, probability)
    f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
    best = int(np.nanargmax(f1[:-1])) if len(thresholds) else 0
    return float(thresholds[best]) if len(thresholds) else 0.5


def classification_metrics(
    y: np.ndarray, probability: np.ndarray, threshold: float
) -> dict[str, float]:
    predicted = (probability >= threshold).astype(int)
    clipped = np.clip(probability, 1e-7, 1 - 1e-7)
    return {
        "roc_auc": float(roc_auc_score(y, probability)),
        "pr_auc": float(average_precision_score(y, probability)),
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])),
        "brier": float(brier_score_loss(y, probability)),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "threshold": float(threshold),
    }


def sort_key(metric: str):
    """A key that sorts the best score first."""
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    return lambda value: sign * value


def save_plots(
    folder: Path,
    y: np.ndarray,
    probability: np.ndarray,
    threshold: float,
    feature_names: list[str],
    importance: np.ndarray,
) -> list[Path]:
    """ROC, PR, confusion matrix, calibration and feature importance as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []

    def finish(fig, name: str) -> None:
        path = folder / name
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)

    fpr, tpr, _ = roc_curve(y, probability)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y, probability):.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right")
    finish(fig, "roc_curve.png")

    precision, recall, _ = precision_recall_curve(y, probability)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(recall, precision, label=f"AP {average_precision_score(y, probability):.3f}")
    ax.axhline(y.mean(), ls="--", color="grey")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    ax.legend(loc="upper right")
    finish(fig, "pr_curve.png")

    matrix = confusion_matrix(y, (probability >= threshold).astype(int), labels=[0, 1])
    fig, ax = plt.subplots(figsize=(3.5, 3.5))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center")
    ax.set(xticks=[0, 1], yticks=[0, 1], xlabel="predicted", ylabel="actual",
           title=f"Confusion @ {threshold:.2f}")
    finish(fig, "confusion_matrix.png")

    observed, predicted = calibration_curve(y, probability, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(predicted, observed, marker="o")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title="Calibration")
    finish(fig, "calibration.png")

    order = np.argsort(importance)[-20:]
    fig, ax = plt.subplots(figsize=(5, max(2.5, 0.25 * len(order))))
    ax.barh([feature_names[i] for i in order], importance[order])
    ax.set(title="Feature importance")
    finish(fig, "feature_importance.png")
    return paths


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


def _auc_sampler(y: np.ndarray, probability: np.ndarray):
    order = np.argsort(probability, kind="stable")
    sorted_p = probability[order]
    groups = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    y_sorted = y[order].astype(np.float64)
    return lambda counts: _weighted_auc(y_sorted, groups, counts[:, order])


def _mean_loss_sampler(losses: np.ndarray):
    return lambda counts: counts @ losses / counts.sum(axis=1)


def bootstrap_sampler(metric: str, y: np.ndarray, probability: np.ndarray):
    """A function: bootstrap count matrix (B x n) -> the metric under each resample."""
    if metric == "roc_auc":
        return _auc_sampler(y, probability)
    if metric == "log_loss":
        p = np.clip(probability, 1e-7, 1 - 1e-7)
        return _mean_loss_sampler(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    if metric == "brier":
        return _mean_loss_sampler((probability - y) ** 2)
    if metric == "pr_auc":
        return lambda counts: np.array([
            average_precision_score(y, probability, sample_weight=c) for c in counts
        ])
    raise ValueError(f"no bootstrap for metric {metric!r} (use roc_auc, pr_auc, log_loss, brier)")


def paired_bootstrap(
    metric: str,
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 100,
) -> dict[str, float]:
    """Bootstrap the improvement of challenger over champion on the same rows.

    Both models are scored on the same resampled rows each time (paired), so their shared
    noise cancels. `improvement` is signed so that positive is better whatever the metric.
    Returns the point estimate and the two-sided interval at `confidence`; the one-sided
    lower bound used by the gate is `lower_one_sided`.
    """
    y = np.asarray(y, dtype=np.float64)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    sample_a = bootstrap_sampler(metric, y, np.asarray(challenger, dtype=np.float64))
    sample_b = bootstrap_sampler(metric, y, np.asarray(champion, dtype=np.float64))
    rng = np.random.default_rng(seed)
    n = len(y)
    deltas = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        rows = rng.integers(0, n, size=(size, n)) + np.arange(size)[:, None] * n
        counts = np.bincount(rows.ravel(), minlength=size * n).reshape(size, n).astype(float)
        deltas.append(sign * (sample_a(counts) - sample_b(counts)))
    delta = np.concatenate(deltas)
    ones = np.ones((1, n))
    point = float(sign * (sample_a(ones)[0] - sample_b(ones)[0]))
    alpha = 1.0 - confidence
    return {
        "improvement": point,
        "lower": float(np.quantile(delta, alpha / 2)),
        "upper": float(np.quantile(delta, 1 - alpha / 2)),
        "lower_one_sided": float(np.quantile(delta, alpha)),
        "resamples": float(resamples),
        "confidence": confidence,
    }
