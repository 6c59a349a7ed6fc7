"""Raw feature columns -> one float32 matrix, with an encoder that is plain JSON.

Each raw column has a kind: numeric, categorical, boolean or datetime. Categorical values
become their index in a learned vocabulary; booleans become 1/0; a datetime column expands
into calendar parts (year, month, day, dayofweek and, when the training data had times of
day, hour). Missing and unseen values become NaN, which every candidate family handles
(XGBoost natively, sklearn through its imputing/one-hot steps). Keeping the encoder as JSON,
not pickle, means a logged model can be inspected and loaded without running arbitrary
code, and single rows encode in microseconds.

Three entry points (a frame, split-orientation rows, records) must give identical matrices:
small inputs go value by value through the same functions that the vectorised large-frame
path falls back to, so the paths cannot drift apart.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

SMALL_BATCH = 64  # up to this many rows, per-value lookups beat pandas' vectorised calls
KINDS = ("numeric", "categorical", "boolean", "datetime")
DATE_PARTS = ("year", "month", "day", "dayofweek")
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})
_NAN = math.nan

ValueEncoder = Callable[[Any], Any]  # one raw value -> a float, or a tuple for datetime parts


class EncodingError(ValueError):
    """Input rows that do not match the model's columns; the message names the column."""


@dataclass(frozen=True)
class FeatureEncoder:
    columns: tuple[str, ...]
    categorical: tuple[str, ...]
    vocabularies: dict[str, tuple[str, ...]]
    kinds: dict[str, str] = field(default_factory=dict)
    date_parts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    date_formats: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Fill kinds/date parts that older JSON or direct construction leave out."""
        kinds = {
            c: self.kinds.get(c, "categorical" if c in self.vocabularies else "numeric")
            for c in self.columns
        }
        unknown = {k for k in kinds.values() if k not in KINDS}
        if unknown:
            raise ValueError(f"unknown column kind {sorted(unknown)[0]!r}; known: {KINDS}")
        parts = {
            c: tuple(self.date_parts.get(c, DATE_PARTS))
            for c, kind in kinds.items() if kind == "datetime"
        }
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "date_parts", parts)

    @classmethod
    def fit(
        cls, frame: pd.DataFrame, columns: Sequence[str],
        kinds: Mapping[str, str] | Iterable[str], max_categories: int = 200,
    ) -> FeatureEncoder:
        """Learn vocabularies (most frequent values, as strings) and which date parts to emit.

        `kinds` maps column -> kind; an iterable of names (the old call) means those are
        categorical and the rest numeric.
        """
        resolved = _resolve_kinds(columns, kinds)
        vocabularies: dict[str, tuple[str, ...]] = {}
        parts: dict[str, tuple[str, ...]] = {}
        formats: dict[str, str] = {}
        for col in columns:
            series = frame[col]
            if resolved[col] == "categorical":
                vocabularies[col] = _fit_vocabulary(series, max_categories)
            elif resolved[col] == "datetime":
                fmt = _guess_date_format(series)
                if fmt:
                    formats[col] = fmt
                stamps = _datetime_series(col, series, fmt)
                parts[col] = DATE_PARTS + (("hour",) if _has_time_of_day(stamps) else ())
        return cls(
            columns=tuple(columns),
            categorical=tuple(c for c in columns if resolved[c] == "categorical"),
            vocabularies=vocabularies, kinds=resolved, date_parts=parts,
            date_formats=formats,
        )

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c not in self.vocabularies)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Matrix column names: raw names, with each datetime column expanded to its parts."""
        names: list[str] = []
        for col in self.columns:
            if col in self.date_parts:
                names.extend(f"{col}.{part}" for part in self.date_parts[col])
            else:
                names.append(col)
        return tuple(names)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def categorical_indices(self) -> list[int]:
        """Matrix indices (not raw indices) of the categorical columns."""
        return [i for i, name in enumerate(self.feature_names) if name in self.vocabularies]

    def __getstate__(self) -> dict:
        """Without the per-value encoders made on first use (closures): the encoder crosses
        to the trial workers by plain pickle when they are forked (`ctloop.workers`)."""
        return {k: v for k, v in self.__dict__.items()
                if k not in ("_value_cache", "_frame_value_cache")}

    def _lookup(self) -> dict[str, dict[str, int]]:
        cached = self.__dict__.get("_lookup_cache")
        if cached is None:
            cached = {c: {v: i for i, v in enumerate(vs)} for c, vs in self.vocabularies.items()}
            object.__setattr__(self, "_lookup_cache", cached)
        return cached

    def _value_encoders(self, frame: bool = False) -> list[tuple[str, ValueEncoder, bool]]:
        """Per raw column: (name, value -> float or parts tuple, expands-to-several).

        `frame`: values come from a DataFrame, where a bool column may feed a numeric
        feature (as 0/1, like the vectorised path); a request's JSON `true` for a numeric
        feature is more likely a mistake, so request paths refuse it.
        """
        key = "_frame_value_cache" if frame else "_value_cache"
        cached = self.__dict__.get(key)
        if cached is None:
            cached = [(c, self._value_encoder(c, frame), c in self.date_parts)
                      for c in self.columns]
            object.__setattr__(self, key, cached)
        return cached

    def _value_encoder(self, col: str, frame: bool) -> ValueEncoder:
        kind = self.kinds[col]
        if kind == "categorical":
            vocab = self._lookup()[col]
            return lambda value: _category_code(value, vocab)
        if kind == "boolean":
            return lambda value: _boolean_value(col, value)
        if kind == "datetime":
            parts, fmt = self.date_parts[col], self.date_formats.get(col)
            return lambda value: _date_parts(_parse_datetime(col, value, fmt), parts)
        if frame:
            return lambda value: _number(col, value, allow_bool=True)
        return lambda value: _number(col, value)

    def encode_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode a frame column by column; columns are matched by name, extras ignored."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise EncodingError(f"missing feature column '{missing[0]}'")
        if len(frame) <= SMALL_BATCH:
            # One object conversion (~10 us) beats pandas column access (~20 us a column).
            rows = frame.to_numpy(dtype=object).tolist()
            return self._encode_rows(rows, list(frame.columns), self._value_encoders(frame=True))
        out = np.empty((len(frame), self.n_features), dtype=np.float32)
        j = 0
        for col in self.columns:
            block = self._encode_series(col, frame[col])
            width = block.shape[1] if block.ndim == 2 else 1
            out[:, j:j + width] = block.reshape(len(frame), width)
            j += width
        return out

    def _encode_series(self, col: str, series: pd.Series) -> np.ndarray:
        """Vectorised encoding of one column; odd inputs fall back to the per-value path."""
        kind = self.kinds[col]
        if kind == "categorical":
            return _encode_categories(series, self._lookup()[col])
        if kind == "datetime":
            stamps = _datetime_series(col, series, self.date_formats.get(col))
            return _frame_parts(stamps, self.date_parts[col])
        if kind == "boolean":
            return _encode_booleans(col, series)
        return _encode_numbers(col, series)

    def encode_rows(self, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> np.ndarray:
        """Fast path for small requests in split orientation: no pandas, plain lookups."""
        return self._encode_rows(rows, columns, self._value_encoders())

    def _encode_rows(self, rows: Sequence[Sequence[Any]], columns: Sequence[str],
                     encoders: list[tuple[str, ValueEncoder, bool]]) -> np.ndarray:
        index = {c: i for i, c in enumerate(columns)}
        missing = [c for c in self.columns if c not in index]
        if missing:
            raise EncodingError(f"missing feature column '{missing[0]}'")
        plan = [(index[c], encode, wide) for c, encode, wide in encoders]
        width = len(columns)
        out = []
        for i, row in enumerate(rows):
            if len(row) != width:
                raise EncodingError(f"row {i} has {len(row)} values for {width} columns")
            values: list[float] = []
            for at, encode, wide in plan:
                if wide:
                    values.extend(encode(row[at]))
                else:
                    values.append(encode(row[at]))
            out.append(values)
        return self._matrix(out)

    def encode_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Fast path for small requests in records orientation."""
        plan = self._value_encoders()
        out = []
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise EncodingError(f"record {i} is not an object")
            values: list[float] = []
            for col, encode, wide in plan:
                if col not in record:
                    raise EncodingError(f"record {i} is missing feature column '{col}'")
                if wide:
                    values.extend(encode(record[col]))
                else:
                    values.append(encode(record[col]))
            out.append(values)
        return self._matrix(out)

    def _matrix(self, rows: list[list[float]]) -> np.ndarray:
        if not rows:
            return np.empty((0, self.n_features), dtype=np.float32)
        return np.array(rows, dtype=np.float32)

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "categorical": list(self.categorical),
            "vocabularies": {c: list(v) for c, v in self.vocabularies.items()},
            "kinds": dict(self.kinds),
            "date_parts": {c: list(p) for c, p in self.date_parts.items()},
            "date_formats": dict(self.date_formats),
        }

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> FeatureEncoder:
        """Load any encoder JSON; old files (no `kinds`) mean categorical or numeric."""
        return cls(
            columns=tuple(payload["columns"]),
            categorical=tuple(payload["categorical"]),
            vocabularies={c: tuple(v) for c, v in payload["vocabularies"].items()},
            kinds=dict(payload.get("kinds", {})),
            date_parts={c: tuple(p) for c, p in payload.get("date_parts", {}).items()},
            date_formats=dict(payload.get("date_formats", {})),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> FeatureEncoder:
        return cls.from_json(json.loads(path.read_text()))


# --- fitting helpers ----------------------------------------------------------------------

def _resolve_kinds(columns: Sequence[str], kinds: Mapping[str, str] | Iterable[str]
                   ) -> dict[str, str]:
    if isinstance(kinds, Mapping):
        missing = [c for c in columns if c not in kinds]
        if missing:
            raise ValueError(f"no kind given for column '{missing[0]}'")
        return {c: kinds[c] for c in columns}
    categorical = set(kinds)
    return {c: "categorical" if c in categorical else "numeric" for c in columns}


def _is_text(series: pd.Series) -> bool:
    """Text columns get a `string` signature; numbers stored as object do not."""
    return _value_type(series) == "text"


def _fit_vocabulary(series: pd.Series, max_categories: int) -> tuple[str, ...]:
    """The most frequent category keys (ties: first seen), sorted for a stable code order."""
    codes, keys = _category_codes(series)
    counts = np.bincount(codes[codes >= 0], minlength=len(keys))
    totals: dict[str, int] = {}
    for key, count in zip(keys, counts.tolist(), strict=True):
        if key is not None:
            totals[key] = totals.get(key, 0) + count
    ranked = sorted(totals, key=lambda k: -totals[k])  # stable: ties keep first-seen order
    return tuple(sorted(ranked[:max_categories]))


def _guess_date_format(series: pd.Series) -> str | None:
    """A strptime format for non-ISO date text (e.g. '%m/%d/%Y'), remembered for speed."""
    if not _is_text(series):
        return None
    sample = series.dropna().astype(str).str.strip()
    sample = sample[sample != ""].head(500)
    iso = pd.to_datetime(sample, format="ISO8601", errors="coerce", utc=True)
    if sample.empty or iso.notna().all():
        return None
    example = sample[iso.isna()].iloc[0]
    fmt = guess_datetime_format(example)
    if fmt is None or "%z" in fmt or "%Z" in fmt:
        return None
    try:
        datetime.strptime(example, fmt)
    except ValueError:
        return None
    return fmt


def _has_time_of_day(stamps: pd.Series) -> bool:
    valid = stamps.dropna()
    return bool((valid != valid.dt.normalize()).any())


# --- per-value encoders (the small-request path; also the large path's fallback) ----------

def _per_value(values: list[Any], encode_value: ValueEncoder) -> np.ndarray:
    encoded = [encode_value(v) for v in values]
    return np.array(encoded, dtype=np.float64)


def _number(col: str, value: Any, allow_bool: bool = False) -> float:
    kind = type(value)
    if kind is float or kind is int:
        return float(value)
    if isinstance(value, float):  # np.float64 too
        return float(value)
    if value is None or value is pd.NA:
        return _NAN
    is_bool = isinstance(value, bool | np.bool_)
    if is_bool and allow_bool:
        return float(value)
    if not is_bool and isinstance(value, int | np.integer | np.floating):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise EncodingError(f"column '{col}' must be numeric, got {value!r}")


def _category_key(value: Any) -> str | None:
    """A category as a string; integral floats as ints, so 3.0 (int column with NaN) is '3'."""
    if isinstance(value, str):
        return value
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else str(float(value))
    return str(value)


def _category_code(value: Any, vocab: dict[str, int]) -> float:
    if isinstance(value, str):
        code = vocab.get(value)
    else:
        key = _category_key(value)
        if key is None:
            return _NAN
        code = vocab.get(key)
        if code is None and isinstance(value, float | np.floating):
            code = vocab.get(str(float(value)))  # encoders fitted before the int rule: '3.0'
    return _NAN if code is None else float(code)


def _boolean_value(col: str, value: Any) -> float:
    if value is True or value is False:
        return float(value)
    if value is None or value is pd.NA:
        return _NAN
    if isinstance(value, np.bool_):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return 1.0
        if text in _FALSE:
            return 0.0
    elif isinstance(value, int | float | np.integer | np.floating):
        if value != value:
            return _NAN
        if value in (0, 1):
            return float(value)
    raise EncodingError(f"column '{col}' must be boolean (true/false, 1/0), got {value!r}")


def _parse_datetime(col: str, value: Any, fmt: str | None) -> datetime | None:
    """One value -> a naive (UTC) datetime, or None when missing."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            stamp = datetime.fromisoformat(text)
        except ValueError:
            stamp = _parse_date_text(col, text, fmt)
            if stamp is None:
                return None
    elif value is None or value is pd.NA or value is pd.NaT:
        return None
    elif isinstance(value, datetime):
        stamp = value
    elif isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    elif isinstance(value, np.datetime64):
        if np.isnat(value):
            return None
        stamp = pd.Timestamp(value)
    elif isinstance(value, float) and math.isnan(value):
        return None
    else:
        raise EncodingError(f"column '{col}' must be a date or time, got {value!r}")
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(UTC).replace(tzinfo=None)
    return stamp


def _parse_date_text(col: str, text: str, fmt: str | None) -> datetime | None:
    """Non-ISO text: the format seen at fit time, else pandas' own parser."""
    if fmt:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stamp = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        raise EncodingError(f"column '{col}' must be a date or time, got {text!r}") from None
    return None if stamp is pd.NaT else stamp


def _date_parts(stamp: datetime | None, parts: tuple[str, ...]) -> tuple[float, ...]:
    if stamp is None:
        return (_NAN,) * len(parts)
    every = {
        "year": stamp.year, "month": stamp.month, "day": stamp.day,
        "dayofweek": stamp.weekday(), "hour": stamp.hour,
    }
    return tuple(float(every[p]) for p in parts)


# --- vectorised encoders (frames above SMALL_BATCH rows) ----------------------------------

def _encode_numbers(col: str, series: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    values = series.to_numpy(dtype=object)
    try:
        return values.astype(np.float64)  # float() per value, as the per-value path does
    except (TypeError, ValueError):
        return _per_value(values.tolist(), lambda v: _number(col, v, allow_bool=True))


def _value_type(series: pd.Series) -> str:
    """'number', 'text', 'bool' or 'mixed': which columns can be factorized before keying."""
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_numeric_dtype(series):
        return "number"
    if isinstance(series.dtype, pd.CategoricalDtype):
        inferred = pd.api.types.infer_dtype(series.cat.categories, skipna=True)
    else:
        inferred = pd.api.types.infer_dtype(series, skipna=True)
    return "text" if inferred in {"string", "empty"} else "mixed"


def _distinct(series: pd.Series) -> tuple[np.ndarray, list[Any]] | None:
    """Codes and distinct values as Python objects; None for mixed objects, which factorize
    would wrongly merge (True == 1 == 1.0)."""
    kind = _value_type(series)
    if kind == "mixed":
        return None
    values = series.to_numpy() if kind == "number" else series.to_numpy(dtype=object)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return codes, np.asarray(uniques, dtype=object).tolist()


def _category_codes(series: pd.Series) -> tuple[np.ndarray, list[str | None]]:
    """Codes into a list of category keys (None = missing), for counting at fit time."""
    found = _distinct(series)
    if found is None:
        keyed = np.array([_category_key(v) for v in series.tolist()], dtype=object)
        codes, uniques = pd.factorize(keyed, use_na_sentinel=True)
        return codes, list(uniques)
    codes, uniques = found
    return codes, [_category_key(v) for v in uniques]


def _encode_categories(series: pd.Series, vocab: dict[str, int]) -> np.ndarray:
    found = _distinct(series)
    if found is None:
        return np.array([_category_code(v, vocab) for v in series.tolist()], dtype=np.float64)
    codes, uniques = found
    table = np.array([_category_code(v, vocab) for v in uniques] + [_NAN])
    return table[codes]


def _encode_booleans(col: str, series: pd.Series) -> np.ndarray:
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~(np.isnan(values) | (values == 0) | (values == 1))
        if bad.any():
            _boolean_value(col, values[bad][0])
        return values
    codes, uniques = pd.factorize(series.to_numpy(dtype=object), use_na_sentinel=True)
    table = np.array([_boolean_value(col, v) for v in uniques.tolist()] + [_NAN])
    return table[codes]


def _datetime_series(col: str, series: pd.Series, fmt: str | None) -> pd.Series:
    """A whole column -> naive UTC datetime64; raises naming the column on unparseable text."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(series):
        return series
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        bad = series.dropna()
        if bad.empty:
            return pd.Series(pd.NaT, index=series.index, dtype="datetime64[ns]")
        raise EncodingError(f"column '{col}' must be a date or time, got {bad.iloc[0]!r}")
    values = series.astype(object)
    if _is_text(series):
        parsed = pd.to_datetime(values, format=fmt or "ISO8601", errors="coerce", utc=True)
        parsed = parsed.dt.tz_localize(None)
        failed = parsed.isna() & values.notna()
        if not failed.any():
            return parsed
        # Other formats (and blanks): the per-value parser, once per distinct value.
        again = _parse_each(col, values[failed], fmt)
        return parsed.where(~failed, again)
    return _parse_each(col, values, fmt)


def _parse_each(col: str, values: pd.Series, fmt: str | None) -> pd.Series:
    codes, uniques = pd.factorize(values.to_numpy(dtype=object), use_na_sentinel=True)
    stamps = [_parse_datetime(col, v, fmt) for v in uniques.tolist()]
    table = pd.DatetimeIndex([pd.NaT if s is None else pd.Timestamp(s) for s in stamps]
                             + [pd.NaT])
    return pd.Series(table[codes], index=values.index)


def _frame_parts(stamps: pd.Series, parts: tuple[str, ...]) -> np.ndarray:
    accessor = stamps.dt
    columns = [getattr(accessor, p).to_numpy(dtype=np.float64, na_value=np.nan) for p in parts]
    return np.column_stack(columns)
