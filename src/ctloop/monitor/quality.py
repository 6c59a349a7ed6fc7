"""The champion's scores on reference and current rows, and its quality on labelled rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ctloop.features import EncodingError
from ctloop.model import TabularModel
from ctloop.monitor.result import MonitorError
from ctloop.tasks import Task


def predict(model: TabularModel, frame: pd.DataFrame, what: str) -> np.ndarray:
    """The task's scores (binary probability, multiclass n x k, regression prediction);
    MonitorError when the champion cannot encode the rows."""
    try:
        return model.scores(frame)
    except EncodingError as exc:
        raise MonitorError(f"cannot score the {what} data with the champion: {exc}") from None


def quality(labels: np.ndarray | None, scores: np.ndarray,
            task: Task) -> tuple[dict[str, float], int]:  # fmt: skip
    """(the task's metrics on the labelled rows, labelled rows).

    No metrics unless they can mean something: at least two labelled rows, and for
    classification at least two classes among them. Metrics that come out undefined (NaN,
    e.g. a class-wise AUC with one class) are left out; binary metrics use the champion's
    own threshold (`task.threshold`).
    """
    if labels is None:
        return {}, 0
    known = ~np.isnan(labels)
    labelled = int(known.sum())
    y = labels[known]
    if labelled < 2 or (task.kind != "regression" and len(np.unique(y)) < 2):
        return {}, labelled
    if task.kind != "regression":
        y = y.astype(np.int64)
    metrics = task.metrics(y, scores[known])
    metrics.pop("threshold", None)
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}, labelled
