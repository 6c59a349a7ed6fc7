"""Request capture in the SageMaker Data Capture JSON Lines format, written off the request path.

One line per request, exactly what a SageMaker endpoint with data capture writes to S3, so the
monitor reads a local folder and an S3 prefix the same way:

    {"captureData": {
        "endpointInput":  {"observedContentType": "application/json", "mode": "INPUT",
                           "data": "<request body>", "encoding": "JSON"},
        "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                           "data": "<response body>", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "<uuid>", "inferenceTime": "2026-11-02T10:15:00.123Z",
                       "inferenceId": "<X-Amzn-SageMaker-Inference-Id, when sent>",
                       "customAttributes": ["model_name=<name>", "model_version=<n>"],
                       "modelName": "<name>", "modelVersion": "<n>"},
     "eventVersion": "0"}

Bodies are stored as sent (`encoding` CSV/JSON as text, BASE64 for Parquet). Files follow
SageMaker's layout `<directory>/<endpoint>/<variant>/yyyy/mm/dd/hh/<mm-ss-mmm>-<uuid>.jsonl`
and rotate every hour. The request path only appends a tuple to a list; a background thread
serialises and writes every `flush_seconds`, and `close()` writes whatever is left.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import orjson

log = logging.getLogger(__name__)

EVENT_VERSION = "0"
MAX_PENDING = 1_000_000  # beyond this the disk cannot keep up; drop and count, never block
YIELD_EVERY = 50  # lines serialised between two hand-backs of the GIL (see `flush`)


@dataclass(frozen=True)
class Event:
    event_id: str
    epoch: float
    input_type: str
    input_body: bytes
    output_body: bytes
    model_version: int
    inference_id: str | None


def _encoding(content_type: str) -> str:
    mime = content_type.split(";")[0].strip().lower()
    return {"application/json": "JSON", "text/csv": "CSV"}.get(mime, "BASE64")


def _data(body: bytes, encoding: str) -> str:
    if encoding == "BASE64":
        return base64.b64encode(body).decode("ascii")
    return body.decode("utf-8", errors="replace")


def _timestamp(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class CaptureWriter:
    """Buffers captured requests and writes them in batches from a daemon thread."""

    def __init__(self, directory: str | Path, endpoint: str, model_name: str,
                 variant: str = "local", flush_seconds: float = 1.0) -> None:  # fmt: skip
        self.root = Path(directory) / endpoint / variant
        self.model_name = model_name
        self.flush_seconds = flush_seconds
        self.written = 0
        self.dropped = 0
        self._pending: deque[Event] = deque()  # append/popleft are atomic across threads
        self._lock = threading.Lock()  # serialises writers (thread and close), not appenders
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hour: str | None = None
        self._file: IO[bytes] | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="ctloop-capture", daemon=True)
        self._thread.start()

    def record(self, event: Event) -> None:
        """Called on the request path: O(1), no I/O, no serialisation."""
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            return
        self._pending.append(event)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # a full disk must not kill capture for the rest of the run
                log.exception("capture: writing to %s failed; will retry", self.root)

    def flush(self) -> int:
        """Write what is pending. Serialising a second of traffic holds the GIL for tens of
        milliseconds (~4 us a line); it is done `YIELD_EVERY` lines at a time, handing the
        GIL back in between, so a request that arrives meanwhile waits ~0.2 ms for it rather
        than the interpreter's 5 ms switch interval (that wait was bench_serve's p99)."""
        with self._lock:
            batch = [self._pending.popleft() for _ in range(len(self._pending))]
            if not batch:
                return 0
            lines: dict[str, list[bytes]] = {}
            for i, event in enumerate(batch, 1):
                hour = time.strftime("%Y/%m/%d/%H", time.gmtime(event.epoch))
                lines.setdefault(hour, []).append(self._line(event))
                if i % YIELD_EVERY == 0:
                    time.sleep(0)  # releases the GIL: a waiting request thread takes it
            for hour, chunk in lines.items():
                handle = self._handle(hour)
                handle.write(b"".join(chunk))
                handle.flush()
            self.written += len(batch)
            return len(batch)

    def _line(self, event: Event) -> bytes:
        in_enc = _encoding(event.input_type)
        version = str(event.model_version)
        metadata = {"eventId": event.event_id, "inferenceTime": _timestamp(event.epoch)}
        if event.inference_id:
            metadata["inferenceId"] = event.inference_id
        metadata.update({
            "customAttributes": [f"model_name={self.model_name}", f"model_version={version}"],
            "modelName": self.model_name, "modelVersion": version,
        })  # fmt: skip
        record = {
            "captureData": {
                "endpointInput": {"observedContentType": event.input_type, "mode": "INPUT",
                                  "data": _data(event.input_body, in_enc), "encoding": in_enc},
                "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                                   "data": _data(event.output_body, "JSON"), "encoding": "JSON"},
            },
            "eventMetadata": metadata,
            "eventVersion": EVENT_VERSION,
        }  # fmt: skip
        return orjson.dumps(record) + b"\n"

    def _handle(self, hour: str) -> IO[bytes]:
        if hour != self._hour or self._file is None:
            if self._file is not None:
                self._file.close()
            folder = self.root / hour
            folder.mkdir(parents=True, exist_ok=True)
            now = datetime.now(UTC)
            name = f"{now:%M-%S}-{now.microsecond // 1000:03d}-{uuid.uuid4()}.jsonl"
            self._file = open(folder / name, "ab")  # noqa: SIM115 - kept open across batches
            self._hour = hour
            log.debug("capture: writing %s (pid %d)", folder / name, os.getpid())
        return self._file

    def close(self) -> None:
        """Stop the thread and write everything still buffered (server shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        if self.dropped:
            log.warning("capture: dropped %d events (writer could not keep up)", self.dropped)
