"""The PNG plots people look at on a trial run, one function per task.

Matplotlib is imported lazily (Agg backend), so nothing is paid at import time or on the
request path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class _Figures:
    """Collects figures into PNG files in one folder."""

    def __init__(self, folder: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.folder = folder
        self.paths: list[Path] = []
        folder.mkdir(parents=True, exist_ok=True)

    def new(self, width: float = 4, height: float = 4):
        return self.plt.subplots(figsize=(width, height))

    def save(self, fig, name: str, fixed_margins: bool = False) -> None:
        """`fixed_margins`: for axes whose labels are known to fit (probabilities 0 to 1,
        two classes); fitting the margins to the labels costs 40 ms a figure, a quarter of
        what the plots of a logged trial cost."""
        path = self.folder / name
        if fixed_margins:
            fig.subplots_adjust(left=0.16, bottom=0.13, right=0.96, top=0.92)
        else:
            fig.tight_layout()
        fig.savefig(path, dpi=80)
        self.plt.close(fig)
        self.paths.append(path)


def warm_up() -> None:
    """Draw a throwaway figure: a fresh process's first plot pays for importing pyplot and
    loading fonts (about a second), which a worker can pay while it would otherwise wait."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1], label="warm-up")
    ax.set_title("warm-up")
    ax.legend()
    fig.canvas.draw()
    plt.close(fig)


def _importance(figs: _Figures, feature_names: Sequence[str], importance: np.ndarray) -> None:
    order = np.argsort(importance)[-20:]
    fig, ax = figs.new(5, max(2.5, 0.25 * len(order)))
    ax.barh([feature_names[i] for i in order], importance[order])
    ax.set(title="Feature importance")
    figs.save(fig, "feature_importance.png")


def _confusion(figs: _Figures, matrix: np.ndarray, names: Sequence[str], title: str,
               fixed_margins: bool = False) -> None:
    size = max(3.5, 0.6 * len(names) + 2)
    fig, ax = figs.new(size, size)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center")
    ticks = list(range(len(names)))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=names, yticklabels=names,
           xlabel="predicted", ylabel="actual", title=title)
    if max(map(len, names)) > 3:  # long class names would run into each other and off the edge
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    figs.save(fig, "confusion_matrix.png", fixed_margins)


def binary_plots(folder: Path, y: np.ndarray, probability: np.ndarray, threshold: float,
                 feature_names: Sequence[str], importance: np.ndarray) -> list[Path]:
    """ROC, PR, confusion matrix, calibration and feature importance."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import (
        average_precision_score,
        confusion_matrix,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    figs = _Figures(folder)
    fpr, tpr, _ = roc_curve(y, probability)
    fig, ax = figs.new()
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y, probability):.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right")
    figs.save(fig, "roc_curve.png", fixed_margins=True)

    precision, recall, _ = precision_recall_curve(y, probability)
    fig, ax = figs.new()
    ax.plot(recall, precision, label=f"AP {average_precision_score(y, probability):.3f}")
    ax.axhline(y.mean(), ls="--", color="grey")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    ax.legend(loc="upper right")
    figs.save(fig, "pr_curve.png", fixed_margins=True)

    matrix = confusion_matrix(y, (probability >= threshold).astype(int), labels=[0, 1])
    _confusion(figs, matrix, ["0", "1"], f"Confusion @ {threshold:.2f}", fixed_margins=True)

    observed, predicted = calibration_curve(y, probability, n_bins=10, strategy="quantile")
    fig, ax = figs.new()
    ax.plot(predicted, observed, marker="o")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title="Calibration")
    figs.save(fig, "calibration.png", fixed_margins=True)
    _importance(figs, feature_names, importance)
    return figs.paths


def multiclass_plots(folder: Path, y: np.ndarray, probabilities: np.ndarray,
                     classes: Sequence[Any], feature_names: Sequence[str],
                     importance: np.ndarray) -> list[Path]:
    """Confusion matrix, one precision-recall curve per class, and feature importance."""
    from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_curve

    figs = _Figures(folder)
    names = [str(c) for c in classes]
    k = len(names)
    matrix = confusion_matrix(y, probabilities.argmax(axis=1), labels=list(range(k)))
    _confusion(figs, matrix, names, "Confusion matrix")
    fig, ax = figs.new(5, 4)
    for c in range(k):
        hits = (y == c).astype(int)
        if 0 < hits.sum() < len(hits):
            precision, recall, _ = precision_recall_curve(hits, probabilities[:, c])
            ap = average_precision_score(hits, probabilities[:, c])
            ax.plot(recall, precision, label=f"{names[c]} (AP {ap:.2f})")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall per class")
    ax.legend(loc="lower left", fontsize="small")
    figs.save(fig, "pr_curve_per_class.png")
    _importance(figs, feature_names, importance)
    return figs.paths


def regression_plots(folder: Path, y: np.ndarray, prediction: np.ndarray,
                     feature_names: Sequence[str], importance: np.ndarray) -> list[Path]:
    """Predicted vs actual, residuals, mean absolute error by decile of the target."""
    figs = _Figures(folder)
    fig, ax = figs.new()
    ax.scatter(y, prediction, s=4, alpha=0.4)
    low, high = float(np.min([y.min(), prediction.min()])), float(np.max([y.max(),
                                                                         prediction.max()]))
    ax.plot([low, high], [low, high], "--", color="grey")
    ax.set(xlabel="actual", ylabel="predicted", title="Predicted vs actual")
    figs.save(fig, "predicted_vs_actual.png")

    residual = y - prediction
    fig, ax = figs.new()
    ax.scatter(prediction, residual, s=4, alpha=0.4)
    ax.axhline(0, ls="--", color="grey")
    ax.set(xlabel="predicted", ylabel="actual - predicted", title="Residuals")
    figs.save(fig, "residuals.png")

    edges = np.unique(np.quantile(y, np.linspace(0, 1, 11)))
    bins = np.clip(np.searchsorted(edges, y, side="right") - 1, 0, max(len(edges) - 2, 0))
    errors = [float(np.mean(np.abs(residual[bins == b]))) for b in range(max(len(edges) - 1, 1))
              if (bins == b).any()]
    fig, ax = figs.new(5, 3.5)
    ax.bar(range(1, len(errors) + 1), errors)
    ax.set(xlabel="decile of the actual value", ylabel="mean absolute error",
           title="Error by decile")
    figs.save(fig, "error_by_decile.png")
    _importance(figs, feature_names, importance)
    return figs.paths
