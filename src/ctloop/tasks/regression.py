"""Regression: one numeric prediction per row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ctloop import metrics, plots
from ctloop.metrics import Sampler
from ctloop.tasks.base import Task, TaskError, column_scores


@dataclass(frozen=True)
class RegressionTask(Task):
    kind: ClassVar[str] = "regression"
    default_metric: ClassVar[str] = "rmse"
    metric_names: ClassVar[tuple[str, ...]] = ("rmse", "mae", "r2", "mape")
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"rmse", "mae", "mape"})
    # Better than predicting the mean; no default guard: tolerances would be in target units.
    default_floors: ClassVar[dict[str, float]] = {"r2": 0.0}
    default_guards: ClassVar[dict[str, float]] = {}
    evidently_task: ClassVar[str] = "regression"
    mlflow_model_type: ClassVar[str] = "regressor"

    def encode_target(self, values: pd.Series) -> np.ndarray:
        series = pd.Series(values)
        numbers = pd.to_numeric(series, errors="coerce")
        bad = numbers.isna() & series.notna()
        if bad.any():
            raise TaskError(f"target value {series[bad].iloc[0]!r} is not a number")
        return numbers.to_numpy(dtype=np.float64)

    def encode_known(self, values: pd.Series) -> np.ndarray:
        return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)

    def metrics(self, y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        return metrics.regression_metrics(np.asarray(y, dtype=np.float64), scores)

    def sampler(self, metric: str, y: np.ndarray, scores: np.ndarray) -> Sampler:
        y = np.asarray(y, dtype=np.float64)
        p = np.asarray(scores, dtype=np.float64)
        if metric == "rmse":
            return metrics.rmse_sampler(y, p)
        if metric == "mae":
            return metrics.mean_sampler(np.abs(p - y))
        if metric == "r2":
            return metrics.r2_sampler(y, p)
        if metric == "mape":
            return metrics.mean_sampler(np.abs(p - y) / np.maximum(np.abs(y), metrics.EPS))
        raise TaskError(f"no bootstrap for regression metric {metric!r}")

    def output_types(self) -> dict[str, str]:
        return {"prediction": "double"}

    def output_frame(self, scores: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"prediction": scores})

    def output_records(self, scores: np.ndarray) -> list[dict[str, Any]]:
        return [{"prediction": p} for p in scores.tolist()]

    def scores_from_records(self, records: Sequence[Any]) -> np.ndarray:
        return column_scores(records, "prediction", self.kind)

    def drift_signal(self, scores: np.ndarray) -> tuple[np.ndarray, str]:
        return np.asarray(scores, dtype=np.float64), "num"

    def check_scores(self, scores: np.ndarray, rows: int) -> str | None:
        if scores.shape != (rows,) or not np.all(np.isfinite(scores)):
            return f"expected {rows} finite predictions, got {scores[:5]!r}"
        return None

    def plots(self, folder: Path, y: np.ndarray, scores: np.ndarray,
              feature_names: Sequence[str], importance: np.ndarray) -> list[Path]:
        return plots.regression_plots(folder, np.asarray(y, dtype=np.float64), scores,
                                      feature_names, importance)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def describe(self) -> str:
        return "regression"
