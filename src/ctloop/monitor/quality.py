"""The champion's predictions on reference and current rows, and its quality on labelled rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctloop.features import EncodingError
from ctloop.metrics import classification_metrics
from ctloop.model import TabularModel
from ctloop.monitor.result import MonitorError


def predict(model: TabularModel, frame: pd.DataFrame, what: str) -> np.ndarray:
    """Positive-class probabilities; MonitorError when the champion cannot encode the rows."""
    try:
        return model.predict_proba(frame)
    except EncodingError as exc:
        raise MonitorError(f"cannot score the {what} data with the champion: {exc}") from None


def quality(labels: np.ndarray | None, probability: np.ndarray,
            threshold: float) -> tuple[dict[str, float], int]:  # fmt: skip
    """(classification metrics, labelled rows); no metrics unless both classes are labelled."""
    if labels is None:
        return {}, 0
    known = ~np.isnan(labels)
    y = labels[known].astype(int)
    if len(y) == 0 or len(np.unique(y)) < 2:
        return {}, int(known.sum())
    metrics = classification_metrics(y, probability[known], threshold)
    metrics.pop("threshold", None)
    return metrics, int(known.sum())
