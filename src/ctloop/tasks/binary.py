"""Binary classification: a positive-class probability, and a label at a tuned threshold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from ctloop import metrics, plots
from ctloop.metrics import Sampler
from ctloop.tasks.base import (
    Task,
    TaskError,
    column_scores,
    jsonable,
    probabilities_ok,
    shown,
)


def label_type(value: Any) -> str:
    """The MLflow type of a label value (for the signature's `label` output)."""
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, int | np.integer):
        return "long"
    if isinstance(value, float | np.floating):
        return "double"
    return "string"


def label_dtype(value: Any) -> type | None:
    """Text labels as objects (numpy's fixed-width strings would be copied by pandas)."""
    return object if isinstance(value, str) else None


@dataclass(frozen=True)
class BinaryTask(Task):
    positive_label: Any
    negative_label: Any
    threshold: float = 0.5

    kind: ClassVar[str] = "binary"
    default_metric: ClassVar[str] = "roc_auc"
    metric_names: ClassVar[tuple[str, ...]] = (
        "roc_auc", "pr_auc", "log_loss", "brier", "f1", "precision", "recall")
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"log_loss", "brier"})
    default_floors: ClassVar[dict[str, float]] = {"roc_auc": 0.6}
    default_guards: ClassVar[dict[str, float]] = {"log_loss": 0.02}
    evidently_task: ClassVar[str] = "classification"
    mlflow_model_type: ClassVar[str] = "classifier"

    def encode_target(self, values: pd.Series) -> np.ndarray:
        series = pd.Series(values)
        text = series.astype(str)
        positive = (series == self.positive_label) | (text == str(self.positive_label))
        negative = (series == self.negative_label) | (text == str(self.negative_label))
        unknown = ~(positive | negative)
        if unknown.any():
            raise TaskError(f"label {series[unknown].iloc[0]!r} is neither the positive "
                            f"{self.positive_label!r} nor the negative {self.negative_label!r}")
        return positive.to_numpy(dtype=np.int8)

    def encode_known(self, values: pd.Series) -> np.ndarray:
        series = pd.Series(values)
        text = series.astype(str)
        out = np.full(len(series), np.nan)
        out[((series == self.negative_label) | (text == str(self.negative_label))).to_numpy()] = 0
        out[((series == self.positive_label) | (text == str(self.positive_label))).to_numpy()] = 1
        out[series.isna().to_numpy()] = np.nan
        return out

    def metrics(self, y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        return metrics.classification_metrics(y, scores, self.threshold)

    def fit_threshold(self, y: np.ndarray, scores: np.ndarray) -> BinaryTask:
        return replace(self, threshold=metrics.choose_threshold(y, scores))

    def bootstrap_metric(self, metric: str) -> str:
        # F1, precision and recall depend on each model's own threshold: compare ranking.
        return "roc_auc" if metric in ("f1", "precision", "recall") else metric

    def sampler(self, metric: str, y: np.ndarray, scores: np.ndarray) -> Sampler:
        y = np.asarray(y, dtype=np.float64)
        p = np.asarray(scores, dtype=np.float64)
        if metric == "roc_auc":
            return metrics.auc_sampler(y, p)
        if metric == "log_loss":
            c = np.clip(p, metrics.EPS, 1 - metrics.EPS)
            return metrics.mean_sampler(-(y * np.log(c) + (1 - y) * np.log(1 - c)))
        if metric == "brier":
            return metrics.mean_sampler((p - y) ** 2)
        if metric == "pr_auc":
            return metrics.weighted_sampler(average_precision_score, y, p)
        if metric in ("recall", "precision"):  # at the champion's own threshold
            hit = (p >= self.threshold).astype(np.float64)
            return metrics.ratio_sampler(hit * y, y if metric == "recall" else hit)
        raise TaskError(f"no bootstrap for binary metric {metric!r}")

    def output_types(self) -> dict[str, str]:
        return {"probability": "double", "label": label_type(self.positive_label)}

    def labels(self, probability: np.ndarray) -> list[Any]:
        positive, negative = self.positive_label, self.negative_label
        return [positive if p >= self.threshold else negative for p in probability.tolist()]

    def output_frame(self, scores: np.ndarray) -> pd.DataFrame:
        labels = np.asarray(self.labels(scores), dtype=label_dtype(self.positive_label))
        return pd.DataFrame({"probability": scores, "label": labels}, copy=False)

    def output_records(self, scores: np.ndarray) -> list[dict[str, Any]]:
        return [{"probability": p, "label": label}
                for p, label in zip(scores.tolist(), self.labels(scores), strict=True)]

    def scores_from_records(self, records: Sequence[Any]) -> np.ndarray:
        return column_scores(records, "probability", self.kind)

    def drift_signal(self, scores: np.ndarray) -> tuple[np.ndarray, str]:
        return np.asarray(scores, dtype=np.float64), "num"

    def check_scores(self, scores: np.ndarray, rows: int) -> str | None:
        if scores.shape != (rows,) or not probabilities_ok(scores):
            return f"expected {rows} probabilities in [0, 1], got {scores[:5]!r}"
        return None

    def plots(self, folder: Path, y: np.ndarray, scores: np.ndarray,
              feature_names: Sequence[str], importance: np.ndarray) -> list[Path]:
        return plots.binary_plots(folder, y, scores, self.threshold, feature_names, importance)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "positive_label": jsonable(self.positive_label),
                "negative_label": jsonable(self.negative_label), "threshold": self.threshold}

    def describe(self) -> str:
        return (f"binary ({shown(self.positive_label)} positive vs {shown(self.negative_label)}, "
                f"threshold {self.threshold:.3f})")
