"""Read Model Monitor ground-truth labels and join them to captured rows by event id."""

from __future__ import annotations

import logging

import numpy as np
import orjson

from ctloop.monitor.capture_decode import csv_rows, decode_payload
from ctloop.monitor.capture_sources import list_files, read_bytes
from ctloop.monitor.frames import encode_labels
from ctloop.tasks import Task

log = logging.getLogger(__name__)


def read_ground_truth(location: str, task: Task) -> tuple[dict[str, list[float]], int]:
    """event id -> the task's label codes from Model Monitor ground-truth lines; returns
    (labels, malformed).

    Line format: {"groundTruthData": {"data": "1", "encoding": "CSV"},
                  "eventMetadata": {"eventId": "..."}, "eventVersion": "0"}.
    `data` holds one label per row of the request (CSV, or JSON value/list): a class label
    (binary: the positive or negative label, or 1/0/true/false; multiclass: one of the
    champion's classes) or a number (regression). A line with a label the champion does not
    know counts as malformed.
    """
    raw: dict[str, list] = {}
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
                if not values or any(isinstance(v, dict | list) for v in values):
                    raise ValueError("not a label")
                raw[event_id] = values
            except (ValueError, TypeError, KeyError, AttributeError):
                malformed += 1
    # One encode for all labels (each distinct value once), then split back per event.
    flat = [v for values in raw.values() for v in values]
    codes = encode_labels(flat, task, binary_words=True).tolist()
    labels: dict[str, list[float]] = {}
    position = 0
    for event_id, values in raw.items():
        mine = codes[position:position + len(values)]
        position += len(values)
        if any(np.isnan(c) for c in mine):
            malformed += 1
            continue
        labels[event_id] = mine
    if malformed:
        log.warning("skipped %d malformed ground-truth line(s) under %s", malformed, location)
    return labels, malformed


def join_ground_truth(event_ids: np.ndarray, labels: dict[str, list[float]]) -> np.ndarray:
    """Per-row label codes (NaN where no ground truth), matching a request's rows in order."""
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
