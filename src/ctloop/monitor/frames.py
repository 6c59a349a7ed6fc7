"""Frames in the champion's terms: its target and time columns, feature dtypes, encoded labels."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctloop.config import BUILTIN_FLIGHTS, Config
from ctloop.data import FLIGHTS_TARGET, FLIGHTS_TIME, naive_utc
from ctloop.model import TabularModel
from ctloop.monitor.result import MonitorError
from ctloop.tasks import Task

# Binary ground truth may say 1/0 or true/false whatever the labels are called.
_BINARY_WORDS = {"1": 1.0, "1.0": 1.0, "true": 1.0, "0": 0.0, "0.0": 0.0, "false": 0.0}
_TRUE = frozenset({"true", "1", "1.0"})
_FALSE = frozenset({"false", "0", "0.0"})


def target_and_time(cfg: Config) -> tuple[str, str | None]:
    if cfg.data.source == BUILTIN_FLIGHTS:
        return FLIGHTS_TARGET, FLIGHTS_TIME
    return cfg.data.target, cfg.data.time_column


def encode_labels(values: pd.Series | list, task: Task, binary_words: bool = False
                  ) -> np.ndarray:  # fmt: skip
    """The task's float codes for raw labels (binary 0/1, multiclass class index, regression
    the number), NaN where a label is missing or not one the champion knows.

    Text is stripped first and an integral float matches an integer class (2.0 is class 2).
    With `binary_words` (ground truth), a binary label that is neither class also counts when
    it reads 1/0/true/false. Each distinct value is encoded once.
    """
    series = pd.Series(values, dtype=object).reset_index(drop=True)
    series = series.map(lambda v: v.strip() if isinstance(v, str) else v)
    if task.kind == "regression":
        return task.encode_known(series)
    codes, uniques = pd.factorize(series.to_numpy(dtype=object), use_na_sentinel=True)
    distinct = list(uniques)
    table = task.encode_known(pd.Series(distinct, dtype=object)) if distinct else np.array([])
    for i, value in enumerate(distinct):
        if not np.isnan(table[i]):
            continue
        if isinstance(value, float | np.floating) and float(value).is_integer():
            # integer classes read back as floats (a column with missing values): 2.0 is 2
            table[i] = task.encode_known(pd.Series([int(value)], dtype=object))[0]
        if np.isnan(table[i]) and binary_words and task.kind == "binary":
            table[i] = _BINARY_WORDS.get(str(value).lower(), np.nan)
    return np.append(table, np.nan)[codes]


def label_names(codes: np.ndarray, task: Task) -> pd.Series:
    """Encoded classification labels back as the class names (str), NaN kept; for target
    drift and the report. Regression codes are the values themselves."""
    codes = np.asarray(codes, dtype=np.float64)
    if task.kind == "regression":
        return pd.Series(codes)
    if task.kind == "binary":
        names = [task.negative_label, task.positive_label]  # type: ignore[attr-defined]
    else:
        names = list(task.classes)  # type: ignore[attr-defined]
    out = [None if np.isnan(c) else str(names[int(c)]) for c in codes.tolist()]
    return pd.Series(out, dtype=object)


def _booleans(series: pd.Series) -> pd.Series:
    """true/false, 1/0 (text or not) as 1.0/0.0; anything else NaN."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        values = pd.to_numeric(series, errors="coerce").astype("float64")
        return values.where(values.isin([0.0, 1.0]))
    text = series.map(lambda v: None if pd.isna(v) else str(v).strip().lower())
    return pd.Series(np.where(text.isin(_TRUE), 1.0, np.where(text.isin(_FALSE), 0.0, np.nan)),
                     index=series.index)  # fmt: skip


def drift_view(frame: pd.DataFrame) -> pd.DataFrame:
    """The normalised frame as the drift tests and reports compare it: dates as seconds
    since the epoch."""
    dates = [c for c in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[c])]
    if not dates:
        return frame
    epoch = pd.Timestamp("1970-01-01")
    return frame.assign(**{c: ((frame[c] - epoch) / pd.Timedelta(seconds=1)).astype("float64")
                           for c in dates})


def normalise(frame: pd.DataFrame, model: TabularModel) -> pd.DataFrame:
    """Feature columns as the drift tests compare them: categorical ones as strings, numeric
    ones as float (unparsable -> NaN), booleans as 1.0/0.0 and dates as datetimes (both may
    arrive as text in captured traffic). The champion can score the result."""
    encoder = model.encoder
    out = {}
    for col in model.feature_columns:
        series = frame[col]
        kind = encoder.kinds.get(col, "categorical" if col in encoder.vocabularies else "numeric")
        if col in encoder.vocabularies:
            series = series.astype(object)
            out[col] = series.where(series.isna(), series.astype(str))
        elif kind == "boolean":
            out[col] = _booleans(series)
        elif kind == "datetime":
            out[col] = naive_utc(series, encoder.date_formats.get(col))
        elif not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            out[col] = pd.to_numeric(series, errors="coerce").astype("float64")
        else:
            out[col] = series.astype("float64")
    return pd.DataFrame(out, index=frame.index)


def numeric_columns(model: TabularModel) -> list[str]:
    """Feature columns the capture reader parses as numbers (booleans and dates stay text and
    are converted by `normalise`)."""
    encoder = model.encoder
    return [c for c in model.feature_columns if c not in encoder.vocabularies
            and encoder.kinds.get(c, "numeric") == "numeric"]  # fmt: skip


def schema_check(frame: pd.DataFrame, model: TabularModel, version: int, source: str) -> None:
    """MonitorError when a non-empty frame lacks a feature column the champion was trained on."""
    missing = [c for c in model.feature_columns if c not in frame.columns]
    if missing and len(frame):
        raise MonitorError(f"{source}: current data lacks feature column '{missing[0]}' that "
                           f"champion v{version} was trained on"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
