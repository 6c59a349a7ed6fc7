"""Write captured traffic the way a SageMaker endpoint (or `ctloop serve`) does, for tests."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd


def capture_line(rows: pd.DataFrame, when: datetime, probabilities: Sequence[float] | None,
                 csv: bool = False, event_id: str | None = None,
                 records: Sequence[dict] | None = None) -> str:  # fmt: skip
    """One request in Data Capture format: JSON dataframe_split (or CSV with header) in/out.

    The output is binary {"probability", "label"} records from `probabilities`, or the given
    `records` (any task's `output_records`), or absent."""
    if csv:
        data, content, encoding = rows.to_csv(index=False), "text/csv", "CSV"
    else:
        split = json.loads(rows.to_json(orient="split", index=False))
        data = json.dumps({"dataframe_split": {"columns": split["columns"],
                                               "data": split["data"]}})  # fmt: skip
        content, encoding = "application/json", "JSON"
    capture = {"endpointInput": {"observedContentType": content, "mode": "INPUT", "data": data,
                                 "encoding": encoding}}  # fmt: skip
    if probabilities is not None and records is None:
        records = [{"probability": p, "label": int(p >= 0.5)} for p in probabilities]
    if records is not None:
        body = {"predictions": list(records)}
        capture["endpointOutput"] = {"observedContentType": "application/json", "mode": "OUTPUT",
                                     "data": json.dumps(body), "encoding": "JSON"}  # fmt: skip
    stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    return json.dumps({"captureData": capture,
                       "eventMetadata": {"eventId": event_id or str(uuid.uuid4()),
                                         "inferenceTime": stamp},
                       "eventVersion": "0"})  # fmt: skip


def write_capture(root: Path, frame: pd.DataFrame, start: datetime, step: timedelta,
                  probabilities: Sequence[float] | None = None, rows_per_request: int = 1,
                  csv: bool = False, malformed: Sequence[str] = (),
                  endpoint: str = "ep/local",
                  records: Sequence[dict] | None = None) -> list[str]:  # fmt: skip
    """Requests of `rows_per_request` rows, `step` apart, in yyyy/mm/dd/hh files; returns ids.

    Outputs: binary `probabilities`, or one output record per row (`records`), or none."""
    by_hour: dict[str, list[str]] = {}
    ids = []
    for i, first in enumerate(range(0, len(frame), rows_per_request)):
        when = start + i * step
        chunk = frame.iloc[first:first + rows_per_request]
        probs = None if probabilities is None else list(probabilities[first:first + len(chunk)])
        outs = None if records is None else list(records[first:first + len(chunk)])
        event_id = f"ev-{i}"
        ids.append(event_id)
        by_hour.setdefault(when.strftime("%Y/%m/%d/%H"), []).append(
            capture_line(chunk, when, probs, csv=csv, event_id=event_id, records=outs))
    hours = sorted(by_hour)
    by_hour[hours[0]].extend(malformed)
    for hour in hours:
        folder = root / endpoint / hour
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{uuid.uuid4()}.jsonl").write_text("\n".join(by_hour[hour]) + "\n")
    return ids


def write_ground_truth(root: Path, labels: dict[str, str], when: datetime) -> None:
    folder = root / when.strftime("%Y/%m/%d/%H")
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"groundTruthData": {"data": label, "encoding": "CSV"},
                         "eventMetadata": {"eventId": event_id}, "eventVersion": "0"})
             for event_id, label in labels.items()]  # fmt: skip
    (folder / "labels.jsonl").write_text("\n".join(lines) + "\n")


T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
