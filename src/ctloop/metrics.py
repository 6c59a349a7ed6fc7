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


def is_better(metric: str, a: float, b: float) -> bool:
    """Whether score a beats score b on this metric."""
    return a < b if metric in LOWER_IS_BETTER else a > b


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
           title=f"Confusion @ {threshold:.2f}")  # fmt: skip
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
