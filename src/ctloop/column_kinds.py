"""Decide each feature column's kind at training time, or leave it out and say why.

Users point ctloop at whatever table they have; IDs, constants, free text and dates stored as
text are normal there. Each decision is recorded (`excluded` / `notes`) so the training run
can show what was done with every column instead of silently training on an ID.
Checks look at distinct counts on the whole column and parse only a sample, so a
300k-row table is planned in well under a second.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ctloop.config import FeatureSpec

DATE_SAMPLE = 500
DATE_SHARE = 0.95  # share of sampled values that must parse for text to count as dates
ID_MIN_ROWS = 50
ID_UNIQUE_SHARE = 0.99
HIGH_CARDINALITY_SHARE = 0.5
_BOOL_TEXT = frozenset({"true", "false"})
# id, uuid, key, customer_id, order-key (any case); customerId, userID (camel case only, so
# that 'paid' or 'valid' are not ids).
_ID_NAME = re.compile(r"^(.*[_\-. ])?(id|uuid|guid|key)$", re.IGNORECASE)
_CAMEL_ID = re.compile(r"[a-z0-9](Id|ID|Uuid|UUID|Key)$")
# Two separators (2013-01-05, 1/5/13) or year-month (2013-01); excludes '3-1' and '1.2.3'.
_DATE_SHAPE = re.compile(r"\d{1,4}[-/]\d{1,2}[-/]\d{1,4}|\d{4}-\d{1,2}")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class ColumnError(ValueError):
    """A feature column that cannot be used as configured; the message names the column."""


@dataclass(frozen=True)
class ColumnPlan:
    kinds: dict[str, str]
    excluded: dict[str, str]
    notes: dict[str, str]


def plan_columns(frame: pd.DataFrame, columns: Sequence[str], spec: FeatureSpec,
                 source: str, explicit: bool) -> ColumnPlan:
    """Kind per kept column, in input order; a reason per excluded column."""
    for declared in (*spec.categorical, *spec.numeric):
        if declared not in frame.columns:
            raise ColumnError(f"{source}: declared feature column '{declared}' is not in the data")
    kinds: dict[str, str] = {}
    excluded: dict[str, str] = {}
    notes: dict[str, str] = {}
    for col in columns:
        kind, note = _decide(frame[col], col, spec, source, explicit)
        if kind is None:
            excluded[col] = note
            continue
        kinds[col] = kind
        if note:
            notes[col] = note
    return ColumnPlan(kinds, excluded, notes)


def _decide(series: pd.Series, col: str, spec: FeatureSpec, source: str,
            explicit: bool) -> tuple[str | None, str]:
    """(kind, note) for a kept column, (None, reason) for an excluded one."""
    declared = col in spec.categorical or col in spec.numeric
    values = series.dropna()
    if values.empty:
        if explicit or declared:
            raise ColumnError(f"{source}: feature column '{col}' is entirely empty")
        return None, "entirely empty"
    if col in spec.categorical:
        return "categorical", ""
    if col in spec.numeric:
        _check_numeric(series, col, source)
        return "numeric", ""
    distinct = int(values.nunique())
    if distinct == 1:
        return None, f"constant: only {_show(values.iloc[0])}"
    if _is_boolean(series, values, distinct):
        return "boolean", ""
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime", _date_note(_as_naive(series))
    if _holds_dates(series, values):
        return "datetime", _date_note(_as_naive(pd.to_datetime(values.head(DATE_SAMPLE),
                                                               utc=True)))
    text = _is_text(series, values)
    if text:
        parsed = _parsed_dates(values)
        if parsed is not None:
            stamps, junk = parsed
            note = _date_note(stamps)
            if junk is not None:
                note += (f"; some values are not dates (e.g. {junk!r}): make them empty, "
                         "or training fails on them")
            return "datetime", note
    numeric = not text and _is_numeric(series, values)
    if _is_id_like(col, values, distinct, text, numeric):
        return None, "ID-like: unique per row"
    if not numeric:
        return _text_kind(len(values), distinct, spec.max_categories)
    return "numeric", ""


def _check_numeric(series: pd.Series, col: str, source: str) -> None:
    converted = pd.to_numeric(series, errors="coerce")
    bad = converted.isna() & series.notna()
    if bad.any():
        example = series[bad].iloc[0]
        raise ColumnError(
            f"{source}: column '{col}' is declared numeric but has non-numeric values "
            f"(e.g. {example!r} in {int(bad.sum())} rows)"
        )


def _show(value: object) -> str:
    """A value for a message: text quoted, numbers and dates plain."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _holds_dates(series: pd.Series, values: pd.Series) -> bool:
    """Objects that are already dates or datetimes (Timestamp, datetime, date)."""
    if series.dtype != object:
        return False
    return pd.api.types.infer_dtype(values.head(DATE_SAMPLE * 2)) in {"date", "datetime"}


def _is_text(series: pd.Series, values: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return False
    if isinstance(series.dtype, pd.CategoricalDtype):
        return pd.api.types.infer_dtype(series.cat.categories) == "string"
    return pd.api.types.infer_dtype(values.head(DATE_SAMPLE * 2)) == "string"


def _is_numeric(series: pd.Series, values: pd.Series) -> bool:
    """Numeric dtype, or objects that are all numbers (e.g. from Parquet or JSON)."""
    if pd.api.types.is_numeric_dtype(series):
        return True
    if series.dtype != object:
        return False
    kind = pd.api.types.infer_dtype(values)
    return kind in {"integer", "floating", "mixed-integer-float", "decimal"}


def _is_boolean(series: pd.Series, values: pd.Series, distinct: int) -> bool:
    """bool dtypes, or objects that are all bools or all 'true'/'false' text; not 0/1."""
    if pd.api.types.is_bool_dtype(series):
        return True
    if series.dtype != object or distinct > 4:
        return False
    uniques = pd.unique(values.to_numpy(dtype=object))
    if all(isinstance(v, bool | np.bool_) for v in uniques):
        return True
    return all(isinstance(v, str) and v.strip().lower() in _BOOL_TEXT for v in uniques)


def _as_naive(series: pd.Series) -> pd.Series:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").dt.tz_localize(None)
    return series


def _parsed_dates(values: pd.Series) -> tuple[pd.Series, str | None] | None:
    """The sampled values as datetimes (and a non-date example) if text looks like dates."""
    if len(values) > DATE_SAMPLE:
        values = values.sample(DATE_SAMPLE, random_state=0)
    sample = values.astype(str).str.strip()
    shaped = sample.str.contains(_DATE_SHAPE) & ~sample.str.fullmatch(_NUMBER)
    if shaped.mean() < DATE_SHARE:
        return None
    stamps = pd.to_datetime(sample, format="ISO8601", errors="coerce", utc=True)
    failed = stamps.isna()
    if failed.any():
        stamps = stamps.where(~failed, _parse_one_by_one(sample[failed]))
    ok = stamps.notna() & shaped
    if ok.mean() < DATE_SHARE:
        return None
    junk = None if ok.all() else str(sample[~ok].iloc[0])
    return stamps[ok].dt.tz_localize(None), junk


def _parse_one_by_one(texts: pd.Series) -> pd.Series:
    """Non-ISO text: pandas' per-value parser, as the encoder's fallback uses."""
    return pd.to_datetime(texts, format="mixed", errors="coerce", utc=True)


def _date_note(stamps: pd.Series) -> str:
    valid = stamps.dropna()
    timed = bool((valid != valid.dt.normalize()).any())
    parts = "year, month, day, dayofweek" + (", hour" if timed else "")
    return f"date: derived {parts}"


def _is_id_like(col: str, values: pd.Series, distinct: int, text: bool, numeric: bool) -> bool:
    """A distinct value per row: text, or integers named like an id or counting up."""
    n = len(values)
    if n < ID_MIN_ROWS:
        return False
    if text:
        return distinct >= ID_UNIQUE_SHARE * n
    if not numeric or distinct != n:
        return False
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    if not np.all(np.mod(numbers, 1) == 0):
        return False  # floats with fractional parts are measurements, not ids
    if _ID_NAME.match(col) or _CAMEL_ID.search(col):
        return True
    consecutive = numbers.max() - numbers.min() + 1 == n
    return bool(consecutive or values.is_monotonic_increasing or values.is_monotonic_decreasing)


def _text_kind(rows: int, distinct: int, max_categories: int) -> tuple[str | None, str]:
    if distinct > max_categories and distinct > HIGH_CARDINALITY_SHARE * rows:
        return None, f"high-cardinality text: {distinct} distinct in {rows} rows"
    if distinct > max_categories:
        return "categorical", (f"top {max_categories} of {distinct} categories; "
                               "the rest encode as unseen")
    return "categorical", ""
