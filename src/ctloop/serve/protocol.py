"""MLflow's scoring protocol: request bodies -> encoded feature matrix, predictions -> JSON.

Accepted like `mlflow models serve`: `application/json` with exactly one of `dataframe_split`,
`dataframe_records`, `instances` or `inputs` (plus an ignored `params`), `text/csv` with a
header row, and `application/vnd.apache.parquet`. Small JSON/CSV requests are encoded cell by
cell (no pandas), which is what keeps a single-row request well under a millisecond.

Every problem with a request raises `RequestError` with an HTTP status and a message that names
the offending key, row or column; nothing here may raise anything else for bad input.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from ctloop.features import EncodingError, FeatureEncoder
from ctloop.tasks import Task

JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_SCALARS = (str, int, float, bool, type(None))


class RequestError(ValueError):
    """A request the server refuses; `status` is the 4xx code, `code` MLflow's error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> bytes:
        return orjson.dumps({"error_code": self.code, "message": self.message})


def bad(message: str) -> RequestError:
    return RequestError(400, "BAD_REQUEST", message)


def invalid(message: str) -> RequestError:
    return RequestError(400, "INVALID_PARAMETER_VALUE", message)


@dataclass(frozen=True)
class MediaType:
    kind: str  # JSON, CSV or PARQUET


def media_type(header: str | None) -> MediaType:
    """Parse Content-Type the way MLflow does: only utf-8, no parameters besides charset."""
    if not header:
        raise RequestError(415, "UNSUPPORTED_MEDIA_TYPE",
                           f"missing Content-Type; use one of {JSON}, {CSV}, {PARQUET}")
    parts = [p.strip() for p in header.split(";")]
    mime = parts[0].lower()
    if mime not in (JSON, CSV, PARQUET):
        raise RequestError(415, "UNSUPPORTED_MEDIA_TYPE",
                           f"unsupported Content-Type '{parts[0]}'; use one of {JSON}, {CSV}, "
                           f"{PARQUET}")  # fmt: skip
    for param in parts[1:]:
        key, _, value = param.partition("=")
        key = key.strip().lower()
        if key != "charset":
            raise RequestError(415, "UNSUPPORTED_MEDIA_TYPE",
                               f"unrecognized Content-Type parameter '{key}'")  # fmt: skip
        if value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise RequestError(415, "UNSUPPORTED_MEDIA_TYPE", "only charset=utf-8 is supported")
    return MediaType(mime)


def encode_request(body: bytes, mime: str, encoder: FeatureEncoder) -> np.ndarray:
    """The feature matrix of a request body, or RequestError naming what is wrong."""
    if not body:
        raise bad("empty request body")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # 1e39 -> inf, refused below
            X = _encode(body, mime, encoder)
    except RequestError:
        raise
    except EncodingError as exc:
        raise invalid(str(exc)) from None
    except (OverflowError, ValueError, TypeError) as exc:  # e.g. a 400-digit integer
        raise invalid(f"a value cannot be converted to a number: {exc}") from None
    if X.shape[0] == 0:
        raise bad("the request holds no rows to score")
    _check_finite(X, encoder)
    return X


def _encode(body: bytes, mime: str, encoder: FeatureEncoder) -> np.ndarray:
    if mime == JSON:
        return _encode_json(_load_json(body), encoder)
    if mime == CSV:
        return _encode_csv(body, encoder)
    return _encode_parquet(body, encoder)


def _load_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # MLflow's own clients write NaN for missing values (Python's json); accept that too.
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise bad(f"invalid JSON: {exc}") from None


def _encode_json(payload: Any, encoder: FeatureEncoder) -> np.ndarray:
    if not isinstance(payload, dict):
        raise bad(f"the body must be a JSON object with exactly one of {list(FORMATS)}, "
                  f"got a JSON {type(payload).__name__}")  # fmt: skip
    keys = [k for k in payload if k in FORMATS]
    unknown = [k for k in payload if k not in FORMATS and k != "params"]
    if unknown:
        raise bad(f"unknown key '{unknown[0]}'; the body must hold exactly one of {list(FORMATS)}")
    if len(keys) != 1:
        found = f"got {keys}" if keys else "got none"
        raise bad(f"the body must hold exactly one of {list(FORMATS)}, {found}")
    key = keys[0]
    value = payload[key]
    if key == "dataframe_split":
        return _encode_split(value, encoder)
    if key == "dataframe_records":
        return _encode_records(value, encoder, key)
    if isinstance(value, dict):  # instances / inputs in columnar form: {column: [values]}
        return _encode_columnar(value, encoder, key)
    return _encode_records(value, encoder, key)


def _check_columns(columns: Sequence[Any], encoder: FeatureEncoder, where: str) -> None:
    """Every feature column present once; other columns are ignored, as `mlflow models serve`
    does (a row straight from the user's table still has its ID and excluded columns)."""
    seen: set[str] = set()
    for col in columns:
        if not isinstance(col, str):
            raise bad(f"{where}: column names must be strings, got {col!r}")
        if col in seen:
            raise invalid(f"{where}: duplicate column '{col}'")
        seen.add(col)
    expected = encoder.columns
    missing = [c for c in expected if c not in seen]
    if missing:
        raise invalid(f"{where}: missing feature column '{missing[0]}' "
                      f"(the model takes {list(expected)})")  # fmt: skip


def _check_cells(rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if not isinstance(value, _SCALARS):
                raise invalid(f"row {i}, column '{columns[j]}': expected a number, string or "
                              f"null, got a JSON {_json_kind(value)}")  # fmt: skip


def _encode_split(value: Any, encoder: FeatureEncoder) -> np.ndarray:
    where = "dataframe_split"
    if not isinstance(value, dict):
        raise bad(f"{where} must be an object with 'columns' and 'data'")
    extra = [k for k in value if k not in ("columns", "data", "index")]
    if extra:
        raise bad(f"{where}: unknown key '{extra[0]}' (expected 'columns', 'data', 'index')")
    columns, rows = value.get("columns"), value.get("data")
    if not isinstance(columns, list):
        raise bad(f"{where}.columns must be a list of column names")
    if not isinstance(rows, list):
        raise bad(f"{where}.data must be a list of rows")
    _check_columns(columns, encoder, where)
    width = len(columns)
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise bad(f"{where}.data row {i} must be a list of {width} values")
        if len(row) != width:
            raise bad(f"{where}.data row {i} has {len(row)} values for {width} columns")
    _check_cells(rows, columns)
    return encoder.encode_rows(rows, columns)


def _encode_records(value: Any, encoder: FeatureEncoder, where: str) -> np.ndarray:
    if not isinstance(value, list):
        raise bad(f"{where} must be a list of objects (one per row) or an object of columns")
    expected = encoder.columns
    names = set(expected)
    for i, record in enumerate(value):
        if not isinstance(record, dict):
            raise bad(f"{where}[{i}] must be an object mapping column names to values, "
                      f"got a JSON {_json_kind(record)}")  # fmt: skip
        if len(record) < len(expected) or not names.issubset(record):
            missing = next(c for c in expected if c not in record)
            raise invalid(f"{where}[{i}]: missing feature column '{missing}'")
        for col, cell in record.items():
            if col in names and not isinstance(cell, _SCALARS):
                raise invalid(f"{where}[{i}], column '{col}': expected a number, string or "
                              f"null, got a JSON {_json_kind(cell)}")  # fmt: skip
    return encoder.encode_records(value)


def _encode_columnar(value: Mapping[str, Any], encoder: FeatureEncoder, where: str) -> np.ndarray:
    columns = list(value)
    _check_columns(columns, encoder, where)
    lengths = set()
    for col in columns:
        if not isinstance(value[col], list):
            raise bad(f"{where}.{col} must be a list of values (one per row)")
        lengths.add(len(value[col]))
    if len(lengths) > 1:
        raise bad(f"{where}: columns have different lengths {sorted(lengths)}")
    rows = list(zip(*(value[c] for c in columns), strict=True))
    _check_cells(rows, columns)
    return encoder.encode_rows(rows, columns)


def _encode_csv(body: bytes, encoder: FeatureEncoder) -> np.ndarray:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad(f"the CSV body is not valid UTF-8: {exc}") from None
    try:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        header = next(reader, None)
        if not header:
            raise bad("the CSV body needs a header row naming the columns")
        rows = [[cell if cell != "" else None for cell in row] for row in reader if row]
    except csv.Error as exc:
        raise bad(f"malformed CSV: {exc}") from None
    header = [h.strip() for h in header]
    _check_columns(header, encoder, "CSV header")
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise bad(f"CSV row {i + 1} has {len(row)} values for {len(header)} columns")
    return encoder.encode_rows(rows, header)


def _encode_parquet(body: bytes, encoder: FeatureEncoder) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(body))
    except (pa.ArrowException, OSError) as exc:
        raise bad(f"the body is not a readable Parquet file: {exc}") from None
    _check_columns(table.column_names, encoder, "Parquet columns")
    return encoder.encode_frame(table.to_pandas())


def _check_finite(X: np.ndarray, encoder: FeatureEncoder) -> None:
    """Missing values (null/NaN) are allowed by the schema; infinities are not."""
    if np.isinf(X).any():
        bad_at = np.argwhere(np.isinf(X))[0]
        column = encoder.feature_names[int(bad_at[1])]  # only numeric columns can be infinite
        raise invalid(f"row {int(bad_at[0])}, column '{column}': infinite values are not "
                      "allowed (send null for a missing value)")


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def predictions_body(task: Task, scores: np.ndarray) -> bytes:
    """`{"predictions": [{...one object per row...}]}`, as `mlflow models serve` answers a
    DataFrame: binary `probability` + `label`, multiclass `probability_<class>`... + `label`,
    regression `prediction`."""
    return orjson.dumps({"predictions": task.output_records(scores)})
