"""Read Model Monitor ground-truth labels and join them to captured rows by event id."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import orjson

from ctloop.monitor.capture_decode import csv_rows, decode_payload
from ctloop.monitor.capture_sources import list_files, read_bytes

log = logging.getLogger(__name__)


def read_ground_truth(location: str, positive_label: Any, negative_label: Any
                      ) -> tuple[dict[str, list[int]], int]:  # fmt: skip
    """event id -> 0/1 labels from Model Monitor ground-truth lines; returns (labels, malformed).

    Line format: {"groundTruthData": {"data": "1", "encoding": "CSV"},
                  "eventMetadata": {"eventId": "..."}, "eventVersion": "0"}.
    A label equal to the positive (negative) label, or 1/0/true/false, maps to 1 (0).
    """
    labels: dict[str, list[int]] = {}
    malformed = 0
    for fs, path in list_files(location):
        for line in read_bytes(fs, path).splitlines():
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
                meta = record["eventMetadata"]
                event_id = str(meta.get("inferenceId") or meta["eventId"])
                kind, payload = decode_payload(record["groundTruthData"])
                values = ([v for row in csv_rows(payload) for v in row] if kind == "csv" else
                          payload if isinstance(payload, list) else [payload])  # fmt: skip
                labels[event_id] = [_binary(v, positive_label, negative_label) for v in values]
            except (ValueError, TypeError, KeyError, AttributeError):
                malformed += 1
    if malformed:
        log.warning("skipped %d malformed ground-truth line(s) under %s", malformed, location)
    return labels, malformed


def _binary(value: Any, positive: Any, negative: Any) -> int:
    text = str(value).strip()
    if text == str(positive):
        return 1
    if text == str(negative):
        return 0
    lowered = text.lower()
    if lowered in ("1", "1.0", "true"):
        return 1
    if lowered in ("0", "0.0", "false"):
        return 0
    raise ValueError(f"label {value!r} is neither {positive!r} nor {negative!r}")


def join_ground_truth(event_ids: np.ndarray, labels: dict[str, list[int]]) -> np.ndarray:
    """Per-row 0/1 labels (NaN where no ground truth), matching a request's rows in order."""
    out = np.full(len(event_ids), np.nan)
    position: dict[str, int] = {}
    for i, event_id in enumerate(event_ids):
        values = labels.get(event_id)
        if not values:
            continue
        k = position.get(event_id, 0)
        position[event_id] = k + 1
        if k < len(values):
            out[i] = values[k]
        elif len(values) == 1:
            out[i] = values[0]
    return out
