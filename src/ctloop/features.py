"""Raw feature columns -> one float32 matrix, with an encoder that is plain JSON.

Categorical values become their index in a learned vocabulary; missing and unseen values
become NaN, which every candidate family handles (XGBoost natively, sklearn through its
imputing/one-hot steps). Keeping the encoder as JSON, not pickle, means a logged model can be
inspected and loaded without running arbitrary code, and single rows encode in microseconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SMALL_BATCH = 64  # up to this many rows, per-value lookups beat pandas' vectorised calls


class EncodingError(ValueError):
    """Input rows that do not match the model's columns; the message names the column."""


@dataclass(frozen=True)
class FeatureEncoder:
    columns: tuple[str, ...]
    categorical: tuple[str, ...]
    vocabularies: dict[str, tuple[str, ...]]

    @classmethod
    def fit(
        cls, frame: pd.DataFrame, columns: Sequence[str], categorical: Iterable[str],
        max_categories: int = 200,
    ) -> FeatureEncoder:
        """Learn each categorical column's vocabulary: its most frequent values, as strings."""
        categorical = tuple(c for c in columns if c in set(categorical))
        vocabularies = {}
        for col in categorical:
            counts = frame[col].dropna().astype(str).value_counts(sort=True)
            vocabularies[col] = tuple(sorted(counts.index[:max_categories]))
        return cls(tuple(columns), categorical, vocabularies)

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c not in self.vocabularies)

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, c in enumerate(self.columns) if c in self.vocabularies]

    def _lookup(self) -> dict[str, dict[str, int]]:
        cached = self.__dict__.get("_lookup_cache")
        if cached is None:
            cached = {c: {v: i for i, v in enumerate(vs)} for c, vs in self.vocabularies.items()}
            object.__setattr__(self, "_lookup_cache", cached)
        return cached

    def encode_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode a frame column by column; columns are matched by name, extras ignored."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise EncodingError(f"missing feature column '{missing[0]}'")
        small = len(frame) <= SMALL_BATCH
        lookup = self._lookup()
        out = np.empty((len(frame), len(self.columns)), dtype=np.float32)
        for j, col in enumerate(self.columns):
            values = frame[col].to_numpy()
            vocab = lookup.get(col)
            if vocab is not None:
                if small:
                    out[:, j] = [self._encode_value(col, v, lookup) for v in values]
                else:
                    as_text = pd.Series(values, dtype=object)
                    as_text = as_text.where(as_text.isna(), as_text.astype(str))
                    codes = pd.Categorical(as_text, categories=self.vocabularies[col]).codes
                    column = codes.astype(np.float32)
                    column[codes < 0] = np.nan
                    out[:, j] = column
            elif values.dtype.kind in "fiub":
                out[:, j] = values
            elif small:
                out[:, j] = [self._encode_value(col, v, lookup) for v in values]
            else:
                try:
                    out[:, j] = pd.to_numeric(pd.Series(values), errors="raise")
                except (ValueError, TypeError):
                    raise EncodingError(
                        f"column '{col}' must be numeric, got {values.dtype} values"
                    ) from None
        return out

    def encode_rows(self, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> np.ndarray:
        """Fast path for small requests in split orientation: no pandas, plain lookups."""
        index = {c: i for i, c in enumerate(columns)}
        missing = [c for c in self.columns if c not in index]
        if missing:
            raise EncodingError(f"missing feature column '{missing[0]}'")
        lookup = self._lookup()
        out = np.empty((len(rows), len(self.columns)), dtype=np.float32)
        width = len(columns)
        for i, row in enumerate(rows):
            if len(row) != width:
                raise EncodingError(f"row {i} has {len(row)} values for {width} columns")
            for j, col in enumerate(self.columns):
                out[i, j] = self._encode_value(col, row[index[col]], lookup)
        return out

    def encode_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Fast path for small requests in records orientation."""
        lookup = self._lookup()
        out = np.empty((len(records), len(self.columns)), dtype=np.float32)
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise EncodingError(f"record {i} is not an object")
            for j, col in enumerate(self.columns):
                if col not in record:
                    raise EncodingError(f"record {i} is missing feature column '{col}'")
                out[i, j] = self._encode_value(col, record[col], lookup)
        return out

    def _encode_value(self, col: str, value: Any, lookup: dict[str, dict[str, int]]) -> float:
        vocab = lookup.get(col)
        if value is None or value is pd.NA:
            return math.nan
        if vocab is not None:
            if isinstance(value, float) and math.isnan(value):
                return math.nan
            key = value if isinstance(value, str) else _as_category(value)
            code = vocab.get(key)
            return math.nan if code is None else float(code)
        if isinstance(value, bool) or not isinstance(value, int | float):
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise EncodingError(f"column '{col}' must be numeric, got {value!r}")
        return float(value)

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "categorical": list(self.categorical),
            "vocabularies": {c: list(v) for c, v in self.vocabularies.items()},
        }

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> FeatureEncoder:
        return cls(
            columns=tuple(payload["columns"]),
            categorical=tuple(payload["categorical"]),
            vocabularies={c: tuple(v) for c, v in payload["vocabularies"].items()},
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> FeatureEncoder:
        return cls.from_json(json.loads(path.read_text()))


def _as_category(value: Any) -> str:
    """Match how pandas stringifies a category at fit time (1.0 -> '1.0', 1 -> '1')."""
    return str(value)
