"""What every task (binary, multiclass, regression) must answer, in one small interface.

Stages never branch on the task kind: they ask the model's `Task` how to turn labels into
numbers, which metrics exist and which way is better, what the model's output looks like
(and how to read it back from captured traffic), which statistic the gate bootstraps, and
which plots to draw. A Task is a frozen value saved as JSON inside every logged model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ctloop.metrics import Sampler


class TaskError(ValueError):
    """Labels or outputs that do not fit the task; the message names the value."""


class Task(ABC):
    kind: ClassVar[str]
    default_metric: ClassVar[str]
    metric_names: ClassVar[tuple[str, ...]]
    lower_is_better: ClassVar[frozenset[str]]
    default_floors: ClassVar[Mapping[str, float]]
    default_guards: ClassVar[Mapping[str, float]]
    evidently_task: ClassVar[str]  # "classification" or "regression"
    # The MLflow model type `mlflow.models.evaluate` expects for this task.
    mlflow_model_type: ClassVar[str]

    # --- labels -------------------------------------------------------------------------
    @abstractmethod
    def encode_target(self, values: pd.Series) -> np.ndarray:
        """Labels as the estimators want them (0/1, class index, float); raises TaskError."""

    @abstractmethod
    def encode_known(self, values: pd.Series) -> np.ndarray:
        """Like `encode_target` but float with NaN where a label is missing or unknown
        (live ground truth may hold anything)."""

    # --- metrics ------------------------------------------------------------------------
    @abstractmethod
    def metrics(self, y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        """Every metric of the task on these labels and scores."""

    def fit_threshold(self, y: np.ndarray, scores: np.ndarray) -> Task:
        """The task with any decision threshold chosen on validation data (binary only)."""
        return self

    def sort_key(self, metric: str) -> Callable[[float], float]:
        """A key that sorts the best score first."""
        sign = 1.0 if metric in self.lower_is_better else -1.0
        return lambda value: sign * value

    def check_metric(self, metric: str, key: str) -> str:
        if metric not in self.metric_names:
            raise TaskError(f"{key}: '{metric}' is not a {self.kind} metric "
                            f"(choose from {', '.join(self.metric_names)})")
        return metric

    def primary_metric(self, configured: str | None) -> str:
        """`training.primary_metric`, or the task's default; TaskError if it is not a metric
        of this task (e.g. roc_auc on a regression table)."""
        return self.check_metric(configured or self.default_metric, "training.primary_metric")

    def bootstrap_metric(self, metric: str) -> str:
        """The metric the gate bootstraps when comparing on `metric` (itself unless that
        depends on each model's own threshold)."""
        return metric

    @abstractmethod
    def sampler(self, metric: str, y: np.ndarray, scores: np.ndarray) -> Sampler:
        """Bootstrap counts (B x n) -> `metric` under each resample."""

    # --- outputs ------------------------------------------------------------------------
    @abstractmethod
    def output_types(self) -> dict[str, str]:
        """Output column -> MLflow type name, in order (the signature's outputs)."""

    @property
    def output_columns(self) -> tuple[str, ...]:
        return tuple(self.output_types())

    @abstractmethod
    def output_frame(self, scores: np.ndarray) -> pd.DataFrame:
        """The pyfunc prediction frame."""

    @abstractmethod
    def output_records(self, scores: np.ndarray) -> list[dict[str, Any]]:
        """One JSON object per row, as `mlflow models serve` answers a DataFrame."""

    @abstractmethod
    def scores_from_records(self, records: Sequence[Any]) -> np.ndarray:
        """Scores back from served output records (captured traffic); raises TaskError."""

    @abstractmethod
    def drift_signal(self, scores: np.ndarray) -> tuple[np.ndarray, str]:
        """One column that summarises the predictions for prediction drift, and its kind
        ("num" or "cat")."""

    @abstractmethod
    def check_scores(self, scores: np.ndarray, rows: int) -> str | None:
        """Why these scores cannot be served (wrong shape, NaN, outside [0, 1]), or None."""

    # --- plots and persistence --------------------------------------------------------------
    @abstractmethod
    def plots(self, folder: Path, y: np.ndarray, scores: np.ndarray,
              feature_names: Sequence[str], importance: np.ndarray) -> list[Path]:
        """The task's diagnostic PNGs (feature importance included)."""

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """Everything needed to rebuild the task at load time (`tasks.from_json`)."""

    @abstractmethod
    def describe(self) -> str:
        """One line for people: the kind and its labels."""


def column_scores(records: Sequence[Any], column: str, kind: str) -> np.ndarray:
    """One output column back from served records (objects, or bare numbers)."""
    try:
        return np.array([float(r[column]) if isinstance(r, dict) else float(r)
                         for r in records], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise TaskError(f"not a {kind} prediction record: {exc}") from None


def jsonable(value: Any) -> Any:
    """A label as plain JSON (numpy scalars and pandas timestamps are not)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def shown(value: Any) -> str:
    """A label as a user reads it in a message: `0`, not `np.int64(0)`."""
    return repr(jsonable(value))


def probabilities_ok(p: np.ndarray) -> bool:
    return bool(p.size) and bool(np.all(np.isfinite(p))) and bool(
        np.all((p >= 0.0) & (p <= 1.0)))
