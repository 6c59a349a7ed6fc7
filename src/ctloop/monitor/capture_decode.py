"""Decode SageMaker Data Capture JSON Lines: one line's payloads, or a uniform file in bulk.

One capture line is one request:
  {"captureData": {"endpointInput":  {"observedContentType", "mode": "INPUT", "data", "encoding"},
                   "endpointOutput": {"observedContentType", "mode": "OUTPUT", "data", "encoding"}},
   "eventMetadata": {"eventId", "inferenceId"?, "inferenceTime": "2026-01-02T03:04:05Z"},
   "eventVersion": "0"}
`encoding` is JSON, CSV or BASE64. The per-line functions raise ValueError (and friends) on a
line they cannot decode; `decode_uniform_file` returns None when a file is not uniform.
"""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Sequence
from typing import Any

import orjson
import pandas as pd

from ctloop.monitor.capture_sources import parse_time


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


def served_probabilities(block: dict | None, n_rows: int) -> list[float] | None:
    """The positive-class probability per row from a captured output, or None if unusable."""
    if not block or "data" not in block:
        return None
    try:
        kind, payload = decode_payload(block)
        if kind == "csv":
            values = [float(row[0]) for row in csv_rows(payload)]
        else:
            if isinstance(payload, dict):
                payload = payload.get("predictions", payload.get("outputs"))
            if isinstance(payload, dict):  # columnar {"probability": [...], ...}
                payload = payload.get("probability")
            values = [float(p["probability"]) if isinstance(p, dict) else float(p)
                      for p in payload]  # fmt: skip
    except (ValueError, TypeError, KeyError, IndexError, orjson.JSONDecodeError):
        return None
    return values if len(values) == n_rows else None


def time_key(value: str) -> str:
    """A sortable key for an ISO inference time: 'YYYY-MM-DDTHH:MM:SS' in UTC."""
    if len(value) >= 19 and value[10] == "T" and (value.endswith("Z") or len(value) == 19):
        return value[:19]
    stamp = parse_time(value)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S")


def decode_uniform_file(blob: bytes, since_key: str | None, until_key: str | None):
    """Bulk-decode a file whose lines are all well-formed JSON `dataframe_split` requests with
    the same columns and 'Z' inference times (what `ctloop serve` and most clients write).

    Three orjson calls per file instead of three per line. Returns None when any line does
    not fit, and the caller decodes that file line by line (counting malformed lines).
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
    return (tuple(columns), rows, ids, times, _bulk_probabilities(captures, counts), outside,
            len(keep))  # fmt: skip


def _bulk_probabilities(captures: list[dict], counts: list[int]) -> list[float] | None:
    try:
        outputs = [c["endpointOutput"] for c in captures]
        if not all(o.get("encoding") == "JSON" for o in outputs):
            return None
        bodies = orjson.loads("[" + ",".join([o["data"] for o in outputs]) + "]")
        predictions = [b["predictions"] for b in bodies]
        if [len(p) for p in predictions] != counts:
            return None
        return [float(d["probability"]) for p in predictions for d in p]
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
