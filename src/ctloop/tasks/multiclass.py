"""Multiclass classification: a probability per class, and the most probable class."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from ctloop import metrics, plots
from ctloop.metrics import Sampler
from ctloop.tasks.base import Task, TaskError, jsonable, probabilities_ok, shown
from ctloop.tasks.binary import label_dtype, label_type


@dataclass(frozen=True)
class MulticlassTask(Task):
    classes: tuple[Any, ...]  # index = the estimators' class code

    kind: ClassVar[str] = "multiclass"
    default_metric: ClassVar[str] = "log_loss"
    metric_names: ClassVar[tuple[str, ...]] = ("log_loss", "accuracy", "f1_macro", "roc_auc")
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"log_loss"})
    default_floors: ClassVar[dict[str, float]] = {"roc_auc": 0.6}
    default_guards: ClassVar[dict[str, float]] = {"accuracy": 0.02}
    evidently_task: ClassVar[str] = "classification"
    mlflow_model_type: ClassVar[str] = "classifier"

    def _codes(self) -> dict[str, int]:
        cached = self.__dict__.get("_code_cache")
        if cached is None:
            cached = {str(c): i for i, c in enumerate(self.classes)}
            object.__setattr__(self, "_code_cache", cached)
        return cached

    def encode_target(self, values: pd.Series) -> np.ndarray:
        codes = self._codes()
        text = pd.Series(values).astype(str)
        out = text.map(codes)
        if out.isna().any():
            raise TaskError(f"label {pd.Series(values)[out.isna()].iloc[0]!r} is not one of "
                            f"the classes {list(self.classes)}")
        return out.to_numpy(dtype=np.int64)

    def encode_known(self, values: pd.Series) -> np.ndarray:
        series = pd.Series(values)
        out = series.astype(str).map(self._codes()).astype("float64")
        return out.where(series.notna()).to_numpy()

    def metrics(self, y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        return metrics.multiclass_metrics(np.asarray(y, dtype=np.int64), scores)

    def sampler(self, metric: str, y: np.ndarray, scores: np.ndarray) -> Sampler:
        y = np.asarray(y, dtype=np.int64)
        if metric == "log_loss":
            picked = np.clip(scores[np.arange(len(y)), y], metrics.EPS, 1.0)
            return metrics.mean_sampler(-np.log(picked))
        if metric == "accuracy":
            return metrics.mean_sampler((scores.argmax(axis=1) == y).astype(np.float64))
        if metric == "roc_auc":
            return metrics.ovr_auc_sampler(y, scores)
        if metric == "f1_macro":
            def macro_f1(truth, predicted, sample_weight):
                return f1_score(truth, predicted, average="macro", labels=np.unique(truth),
                                sample_weight=sample_weight, zero_division=0)
            return metrics.weighted_sampler(macro_f1, y, scores.argmax(axis=1))
        raise TaskError(f"no bootstrap for multiclass metric {metric!r}")

    def probability_columns(self) -> list[str]:
        return [f"probability_{c}" for c in self.classes]

    def output_types(self) -> dict[str, str]:
        return {**{name: "double" for name in self.probability_columns()},
                "label": label_type(self.classes[0])}

    def labels(self, scores: np.ndarray) -> list[Any]:
        classes = self.classes
        return [classes[i] for i in scores.argmax(axis=1).tolist()]

    def output_frame(self, scores: np.ndarray) -> pd.DataFrame:
        # One dict of columns, built at once: inserting `label` afterwards costs more than
        # the whole single-row prediction.
        columns: dict[str, np.ndarray] = {
            name: scores[:, i] for i, name in enumerate(self.probability_columns())}
        columns["label"] = np.asarray(self.labels(scores), dtype=label_dtype(self.classes[0]))
        return pd.DataFrame(columns, copy=False)

    def output_records(self, scores: np.ndarray) -> list[dict[str, Any]]:
        names = self.probability_columns()
        return [{**dict(zip(names, row, strict=True)), "label": label}
                for row, label in zip(scores.tolist(), self.labels(scores), strict=True)]

    def scores_from_records(self, records: Sequence[Any]) -> np.ndarray:
        names = self.probability_columns()
        try:
            return np.array([[float(r[n]) for n in names] for r in records], dtype=np.float64
                            ).reshape(len(records), len(names))
        except (KeyError, TypeError, ValueError) as exc:
            raise TaskError(f"not a multiclass prediction record: missing {exc}") from None

    def drift_signal(self, scores: np.ndarray) -> tuple[np.ndarray, str]:
        return np.asarray([str(label) for label in self.labels(scores)], dtype=object), "cat"

    def check_scores(self, scores: np.ndarray, rows: int) -> str | None:
        k = len(self.classes)
        if scores.shape != (rows, k) or not probabilities_ok(scores):
            return f"expected {rows} x {k} class probabilities in [0, 1], got {scores[:2]!r}"
        if not np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):
            return "class probabilities do not sum to 1"
        return None

    def plots(self, folder: Path, y: np.ndarray, scores: np.ndarray,
              feature_names: Sequence[str], importance: np.ndarray) -> list[Path]:
        return plots.multiclass_plots(folder, np.asarray(y, dtype=np.int64), scores,
                                      self.classes, feature_names, importance)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "classes": [jsonable(c) for c in self.classes]}

    def describe(self) -> str:
        more = ", ..." if len(self.classes) > 8 else ""
        listed = ", ".join(map(shown, self.classes[:8])) + more
        return f"multiclass ({len(self.classes)} classes: {listed})"
