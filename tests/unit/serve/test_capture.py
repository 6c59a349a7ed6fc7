"""Capture files: SageMaker Data Capture lines, one per request, rotated hourly, flushed."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

from ctloop.serve.capture import CaptureWriter, Event

BODY = b'{"dataframe_records": [{"a": 1}]}'
OUT = b'{"predictions":[{"probability":0.25,"label":"No"}]}'


def _event(epoch: float, body: bytes = BODY, kind: str = "application/json") -> Event:
    return Event(str(uuid.uuid4()), epoch, kind, body, OUT, 7, None)


def _lines(root: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(root.rglob("*.jsonl"))
            for line in path.read_text().splitlines()]  # fmt: skip


def test_lines_follow_the_data_capture_layout(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, endpoint="churn", model_name="churn", flush_seconds=60)
    writer.start()
    epoch = datetime(2026, 3, 1, 9, 59, 59, 500_000, tzinfo=UTC).timestamp()
    writer.record(_event(epoch))
    writer.record(Event("e-2", epoch + 1, "text/csv", b"a\n1\n", OUT, 7, "my-inference-id"))
    writer.record(_event(epoch + 2, b"PAR1\x00\x01", "application/vnd.apache.parquet"))
    writer.close()

    # 09:59:59 and 10:00:00 land in different hourly folders, SageMaker style.
    folders = sorted(p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jsonl"))
    assert folders == ["churn/local/2026/03/01/09", "churn/local/2026/03/01/10"]
    first, csv_line, parquet_line = _lines(tmp_path)
    assert first["eventVersion"] == "0"
    assert first["captureData"]["endpointInput"] == {
        "observedContentType": "application/json", "mode": "INPUT",
        "data": BODY.decode(), "encoding": "JSON"}  # fmt: skip
    assert first["captureData"]["endpointOutput"]["data"] == OUT.decode()
    assert first["captureData"]["endpointOutput"]["mode"] == "OUTPUT"
    assert first["eventMetadata"]["inferenceTime"] == "2026-03-01T09:59:59.500Z"
    assert first["eventMetadata"]["modelVersion"] == "7"
    assert "model_version=7" in first["eventMetadata"]["customAttributes"]
    assert csv_line["captureData"]["endpointInput"]["encoding"] == "CSV"
    assert csv_line["eventMetadata"]["inferenceId"] == "my-inference-id"
    encoded = parquet_line["captureData"]["endpointInput"]
    assert encoded["encoding"] == "BASE64"
    assert base64.b64decode(encoded["data"]) == b"PAR1\x00\x01"


def test_every_event_recorded_concurrently_is_written(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, endpoint="m", model_name="m", flush_seconds=0.01)
    writer.start()
    now = datetime.now(UTC).timestamp()

    def produce() -> None:
        for _ in range(5000):
            writer.record(_event(now))

    threads = [threading.Thread(target=produce) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    lines = _lines(tmp_path)
    assert len(lines) == 20_000 == writer.written
    assert len({line["eventMetadata"]["eventId"] for line in lines}) == 20_000
