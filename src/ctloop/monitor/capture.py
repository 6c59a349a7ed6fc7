"""Read captured traffic (SageMaker Data Capture JSON Lines) into one frame: the entry point.

`read_capture` lists the files of a local folder or S3 prefix in the window
(`capture_sources`), decodes every line or a seeded sample of lines (`capture_sample`) into
rows (`capture_decode` per line or per uniform file, `capture_reader` accumulating them).
Model Monitor ground-truth labels are read by `ground_truth`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from ctloop.monitor.capture_reader import CaptureData, Reader
from ctloop.monitor.capture_sample import read_sample
from ctloop.monitor.capture_sources import (
    CaptureError,
    capture_bytes,
    line_count,
    list_files,
    parse_time,
    read_bytes,
)
from ctloop.tasks import Task

__all__ = ["CaptureData", "CaptureError", "capture_bytes", "parse_time", "read_capture", "ready",
           "warn_malformed"]  # fmt: skip

log = logging.getLogger(__name__)


def read_capture(
    location: str,
    feature_columns: Sequence[str],
    numeric_columns: Sequence[str],
    since: datetime | None = None,
    until: datetime | None = None,
    extra_columns: Sequence[str] = (),
    sample_rows: int | None = None,
    seed: int = 0,
    warn: bool = True,
    task: Task | None = None,
) -> CaptureData:
    """Decode the requests in [since, until) under `location` into one frame.

    `feature_columns` (the model's) define the CSV column order; `extra_columns` (e.g. the
    target or time column, when the caller sent them) are kept if present in JSON payloads.
    With the champion's `task`, the served predictions are read back as its scores
    (`CaptureData.scores`, None unless every request's output is usable).

    With `sample_rows`, only a seeded uniform random sample of capture *lines* (requests) is
    decoded, enough for about `sample_rows` rows in the window (see `capture_sample`); all
    counts in the result (requests, malformed, outside the window) are then among the
    sampled lines, and `lines` / `decoded_lines` say how many lines there were and were read.
    """
    reader = Reader(feature_columns, numeric_columns, since, until, extra_columns, task)
    files = list_files(location, since, until)
    reader.result.files = len(files)
    if sample_rows is None:
        for fs, path in files:
            blob = read_bytes(fs, path)
            reader.result.lines += line_count(blob)
            reader.add_blob(blob, path)
        reader.result.decoded_lines = reader.result.lines
    else:
        read_sample(reader, files, sample_rows, seed)
    result = reader.finish()
    if warn:
        warn_malformed(result, location)
    return result


def warn_malformed(result: CaptureData, location: str) -> None:
    """Log the skipped lines (the caller does it when the decoding ran in a worker process)."""
    if result.malformed_lines:
        sampled = (f" (among {result.decoded_lines:,} sampled of {result.lines:,} lines)"
                   if result.sampled else "")  # fmt: skip
        log.warning("skipped %d malformed capture line(s)%s under %s; first: %s",
                    result.malformed_lines, sampled, location,
                    result.malformed_examples[0])  # fmt: skip


def ready() -> bool:
    """Nothing: submitted to a fresh worker process so that it imports this module early."""
    return True
