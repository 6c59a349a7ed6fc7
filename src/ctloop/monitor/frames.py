"""Frames in the champion's terms: its target and time columns, feature dtypes, 0/1 labels."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctloop.config import BUILTIN_FLIGHTS, Config
from ctloop.data import FLIGHTS_TARGET, FLIGHTS_TIME
from ctloop.model import TabularModel
from ctloop.monitor.result import MonitorError


def target_and_time(cfg: Config) -> tuple[str, str | None]:
    if cfg.data.source == BUILTIN_FLIGHTS:
        return FLIGHTS_TARGET, FLIGHTS_TIME
    return cfg.data.target, cfg.data.time_column


def to_binary(values: pd.Series, model: TabularModel) -> np.ndarray:
    """1.0 for the positive label, 0.0 for the negative one, NaN for anything else."""
    out = np.full(len(values), np.nan)
    text = values.astype(str).str.strip()
    out[(text == str(model.positive_label)).to_numpy()] = 1.0
    out[(text == str(model.negative_label)).to_numpy()] = 0.0
    return out


def normalise(frame: pd.DataFrame, model: TabularModel) -> pd.DataFrame:
    """Numeric features as float (unparsable -> NaN), categorical ones as strings."""
    out = {}
    for col in model.feature_columns:
        series = frame[col]
        if col in model.encoder.vocabularies:
            series = series.astype(object)
            out[col] = series.where(series.isna(), series.astype(str))
        elif not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            out[col] = pd.to_numeric(series, errors="coerce").astype("float64")
        else:
            out[col] = series.astype("float64")
    return pd.DataFrame(out, index=frame.index)


def schema_check(frame: pd.DataFrame, model: TabularModel, version: int, source: str) -> None:
    """MonitorError when a non-empty frame lacks a feature column the champion was trained on."""
    missing = [c for c in model.feature_columns if c not in frame.columns]
    if missing and len(frame):
        raise MonitorError(f"{source}: current data lacks feature column '{missing[0]}' that "
                           f"champion v{version} was trained on"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
