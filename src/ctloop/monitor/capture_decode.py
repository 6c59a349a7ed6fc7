"""Decode SageMaker Data Capture JSON Lines: one line's payloads, or a uniform file in bulk.

One capture line is one request:
  {"captureData": {"endpointInput":  {"observedContentType", "mode": "INPUT", "data", "encoding"},
                   "endpointOutput": {"observedContentType", "mode": "OUTPUT", "data", "encoding"}},
   "eventMetadata": {"eventId", "inferenceId"?, "inferenceTime": "2026-01-02T03:04:05Z"},
   "eventVersion": "0"}
`encoding` is JSON, CSV or BASE64. The per-line functions raise ValueError (and friends) on a
line they cannot decode; `decode_uniform_file` returns None when a file is not uniform.
Served predictions are read back through the champion's task (`Task.scores_from_records`):
binary `probability`, multiclass `probability_<class>`, regression `prediction`.
"""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pandas as pd

from ctloop.monitor.capture_sources import parse_time
from ctloop.tasks import Task


def decode_payload(block: dict) -> tuple[str, Any]:
    """(kind, decoded) of an endpointInput/Output block: kind 'json', 'csv' or 'frame'."""
    data = block["data"]
    encoding = str(block.get("encoding", "")).upper()
    content_type = str(block.get("observedContentType", "")).lower()
    if encoding == "BASE64":
        raw = base64.b64decode(data, validate=True)
        if "parquet" in content_type:
            return "frame", pd.read_parquet(io.BytesIO(raw))
        data = raw.decode("utf-8")
    if encoding == "CSV" or "csv" in content_type:
        return "csv", data
    if isinstance(data, str):
        return "json", orjson.loads(data)
    return "json", data


def json_rows(payload: Any) -> tuple[tuple[str, ...] | None, list[list[Any]] | list[dict]]:
    """MLflow scoring payloads: dataframe_split, dataframe_records, instances, inputs, records."""
    if isinstance(payload, dict):
        if "dataframe_split" in payload:
            split = payload["dataframe_split"]
            return tuple(split["columns"]), split["data"]
        for key in ("dataframe_records", "instances", "inputs"):
            if key in payload:
                payload = payload[key]
                break
        else:
            if "columns" in payload and "data" in payload:
                return tuple(payload["columns"]), payload["data"]
            return None, [payload]
        if isinstance(payload, dict):  # inputs as {column: [values]}
            columns = tuple(payload)
            return columns, [list(v) for v in zip(*payload.values(), strict=True)]
    if isinstance(payload, list) and all(isinstance(r, dict) for r in payload):
        return None, payload
    raise ValueError("unsupported JSON payload shape")


def csv_rows(text: str) -> list[list[str]]:
    """The non-empty rows of a CSV text."""
    return [row for row in csv.reader(io.StringIO(text)) if row]


def csv_table(text: str, feature_columns: Sequence[str],
              known: frozenset[str]) -> tuple[tuple[str, ...], list[list[str]]]:  # fmt: skip
    """CSV with a header row (MLflow scoring) or without (SageMaker: the model's column order)."""
    rows = csv_rows(text)
    if rows and all(value in known for value in rows[0]):
        return tuple(rows[0]), rows[1:]
    return tuple(feature_columns), rows


def _output_records(payload: Any, task: Task) -> list[Any]:
    """The per-row prediction records of a decoded JSON response body.

    Accepted shapes: {"predictions": [...]} (what `mlflow models serve` and `ctloop serve`
    answer), {"outputs": ...}, a bare list, and column-oriented {"probability": [...], ...};
    a row may be an object with the task's output columns, a bare number (binary, regression)
    or a list of class probabilities (multiclass).
    """
    if isinstance(payload, dict):
        payload = payload.get("predictions", payload.get("outputs", payload))
    if isinstance(payload, dict):  # columnar {"probability": [...], "label": [...]}
        columns = [c for c in task.output_columns if c in payload]
        if not columns or not all(isinstance(payload[c], list) for c in columns):
            raise ValueError("unsupported prediction body")
        return [dict(zip(columns, values, strict=True))
                for values in zip(*(payload[c] for c in columns), strict=True)]
    if not isinstance(payload, list):
        raise ValueError("unsupported prediction body")
    names = _probability_columns(task)
    if names and payload and isinstance(payload[0], list):  # multiclass rows as lists
        return [dict(zip(names, row, strict=True)) for row in payload]
    return payload


def _probability_columns(task: Task) -> list[str] | None:
    columns = [c for c in task.output_columns if c != "label"]
    return columns if task.kind == "multiclass" else None


def _csv_records(text: str, task: Task) -> list[Any]:
    """CSV predictions: with a header naming the task's output columns, or bare values in the
    task's output column order (SageMaker's CSV answers)."""
    rows = csv_rows(text)
    outputs = set(task.output_columns)
    if rows and all(value in outputs for value in rows[0]):
        header = rows[0]
        return [dict(zip(header, row, strict=True)) for row in rows[1:]]
    names = _probability_columns(task)
    if names:
        return [dict(zip(names, row[:len(names)], strict=True)) for row in rows]
    return [row[0] for row in rows]


def served_scores(block: dict | None, n_rows: int, task: Task | None) -> np.ndarray | None:
    """The task's scores per row from a captured output, or None if absent or unusable (the
    monitor then scores the rows with the champion itself)."""
    if task is None or not block or "data" not in block:
        return None
    try:
        kind, payload = decode_payload(block)
        if kind == "frame":
            records = payload.to_dict(orient="records")
        elif kind == "csv":
            records = _csv_records(payload, task)
        else:
            records = _output_records(payload, task)
        if len(records) != n_rows:
            return None
        scores = task.scores_from_records(records)
    except (ValueError, TypeError, KeyError, IndexError, orjson.JSONDecodeError):
        return None  # TaskError is a ValueError
    return scores if task.check_scores(scores, n_rows) is None else None


def time_key(value: str) -> str:
    """A sortable key for an ISO inference time: 'YYYY-MM-DDTHH:MM:SS' in UTC."""
    if len(value) >= 19 and value[10] == "T" and (value.endswith("Z") or len(value) == 19):
        return value[:19]
    stamp = parse_time(value)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S")


def decode_uniform_file(blob: bytes, since_key: str | None, until_key: str | None,
                        task: Task | None = None):
    """Bulk-decode a file whose lines are all well-formed JSON `dataframe_split` requests with
    the same columns and 'Z' inference times (what `ctloop serve` and most clients write).

    Three orjson calls per file instead of three per line. Returns None when any line does
    not fit, and the caller decodes that file line by line (counting malformed lines). The
    served scores (for `task`) are None unless every request's output is usable.
    """
    lines = [line for line in blob.splitlines() if line.strip()]
    if not lines:
        return (), [], [], [], [], 0, 0
    try:
        records = orjson.loads(b"[" + b",".join(lines) + b"]")
        metas = [r["eventMetadata"] for r in records]
        whens = [m["inferenceTime"] for m in metas]
        if not all(isinstance(w, str) and len(w) >= 20 and w[10] == "T" and w[-1] == "Z"
                   for w in whens):  # fmt: skip
            return None
        keep = [i for i, w in enumerate(whens)
                if (since_key is None or w[:19] >= since_key)
                and (until_key is None or w[:19] < until_key)]  # fmt: skip
        outside = len(records) - len(keep)
        if not keep:
            return (), [], [], [], [], outside, 0
        captures = [records[i]["captureData"] for i in keep]
        inputs = [c["endpointInput"] for c in captures]
        if not all(b.get("encoding") == "JSON" for b in inputs):
            return None
        payloads = orjson.loads("[" + ",".join([b["data"] for b in inputs]) + "]")
        splits = [p["dataframe_split"] for p in payloads]
        columns = splits[0]["columns"]
        if not all(sp["columns"] == columns for sp in splits):
            return None
        width = len(columns)
        counts = [len(sp["data"]) for sp in splits]
        rows = [row for sp in splits for row in sp["data"]]
        if not all(len(row) == width for row in rows):
            return None
        ids, times = [], []
        for i, n in zip(keep, counts, strict=True):
            meta = metas[i]
            ids.extend([str(meta.get("inferenceId") or meta.get("eventId") or "")] * n)
            times.extend([whens[i]] * n)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
    return (tuple(columns), rows, ids, times, _bulk_scores(captures, counts, task), outside,
            len(keep))  # fmt: skip


def _bulk_scores(captures: list[dict], counts: list[int],
                 task: Task | None) -> np.ndarray | None:  # fmt: skip
    """Every request's served scores in one decode, when all are JSON {"predictions": [...]};
    otherwise request by request (still None unless every one is usable)."""
    if task is None:
        return None
    try:
        outputs = [c["endpointOutput"] for c in captures]
        if all(o.get("encoding") == "JSON" for o in outputs):
            bodies = orjson.loads("[" + ",".join([o["data"] for o in outputs]) + "]")
            predictions = [b["predictions"] for b in bodies]
            if [len(p) for p in predictions] != counts:
                return None
            rows = sum(counts)
            records = [d for p in predictions for d in p]
            if _probability_columns(task) and records and isinstance(records[0], list):
                raise TypeError("rows as lists: decoded request by request")
            scores = task.scores_from_records(records)
            return scores if task.check_scores(scores, rows) is None else None
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    parts = []
    for capture, n in zip(captures, counts, strict=True):
        scores = served_scores(capture.get("endpointOutput"), n, task)
        if scores is None:
            return None
        parts.append(scores)
    return np.concatenate(parts) if parts else None
