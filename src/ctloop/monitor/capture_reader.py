"""Accumulate decoded capture lines into one `CaptureData`: rows, served scores, counts.

Lines that cannot be decoded are skipped and counted, never fatal: one bad writer must not
blind the monitor. Rows are decoded in chunks into column lists, so a million single-row
requests never exist as a million dicts at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd

from ctloop.monitor.capture_decode import (
    csv_table,
    decode_payload,
    decode_uniform_file,
    json_rows,
    served_scores,
    time_key,
)
from ctloop.tasks import Task

CHUNK_ROWS = 100_000


@dataclass
class CaptureData:
    """Decoded traffic: feature rows, the served predictions if captured, and bookkeeping."""

    frame: pd.DataFrame
    # The served scores per row (the task's: binary probability, multiclass n x k
    # probabilities, regression prediction), if every request's output was captured and usable.
    scores: np.ndarray | None
    event_ids: np.ndarray  # per row (a request's rows share its event id)
    inference_times: pd.Series  # per row, UTC
    requests: int = 0
    malformed_lines: int = 0
    outside_window: int = 0
    files: int = 0
    lines: int = 0  # capture lines in the listed files (blank ones included)
    decoded_lines: int = 0  # lines actually decoded (all of them unless sampled)
    sampled: bool = False  # True when decoded_lines < lines: counts are from the sample
    malformed_examples: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.frame)


class _Chunk:
    """Rows accumulated column-wise until they are turned into a DataFrame."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self.index = {c: i for i, c in enumerate(self.columns)}
        self.values: list[list[Any]] = [[] for _ in self.columns]
        self.n = 0

    def add_rows(self, columns: tuple[str, ...], rows: list[list[Any]]) -> None:
        positions = [self.index.get(c) for c in columns]
        width = len(columns)
        for row in rows:
            if len(row) != width:
                raise ValueError(f"row has {len(row)} values for {width} columns")
        for pos, source in zip(positions, range(width), strict=True):
            if pos is None:
                continue
            self.values[pos].extend(row[source] for row in rows)
        filled = {p for p in positions if p is not None}
        for pos in range(len(self.columns)):
            if pos not in filled:
                self.values[pos].extend([None] * len(rows))
        self.n += len(rows)

    def add_records(self, records: list[dict]) -> None:
        for pos, col in enumerate(self.columns):
            self.values[pos].extend(r.get(col) for r in records)
        self.n += len(records)

    def frame(self, numeric: frozenset[str]) -> pd.DataFrame:
        data = {}
        for col, values in zip(self.columns, self.values, strict=True):
            if col in numeric:
                array = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
                data[col] = array.astype("float64")
            else:
                series = pd.Series(values, dtype=object)
                data[col] = series.where(series.isna(), series.astype(str))
        return pd.DataFrame(data)


class Reader:
    """Decoding state shared by the full read and the sampled read: one blob at a time."""

    def __init__(self, feature_columns: Sequence[str], numeric_columns: Sequence[str],
                 since: datetime | None, until: datetime | None,
                 extra_columns: Sequence[str], task: Task | None = None) -> None:  # fmt: skip
        self.feature_columns = list(feature_columns)
        self.columns = [*feature_columns, *[c for c in extra_columns if c not in feature_columns]]
        self.known = frozenset(self.columns)
        self.numeric = frozenset(numeric_columns)
        self.since_key = since.strftime("%Y-%m-%dT%H:%M:%S") if since else None
        self.until_key = until.strftime("%Y-%m-%dT%H:%M:%S") if until else None
        self.task = task
        self.frames: list[pd.DataFrame] = []
        self.scores: list[np.ndarray] = []
        self.scores_complete = task is not None
        self.event_ids: list[str] = []
        self.times: list[str] = []
        self.chunk = _Chunk(self.columns)
        self.present: set[str] = set()
        self.result = CaptureData(pd.DataFrame(), None, np.array([]),
                                  pd.Series(dtype="datetime64[ns, UTC]"))  # fmt: skip

    @property
    def rows(self) -> int:
        return sum(len(f) for f in self.frames) + self.chunk.n

    def _flush(self) -> None:
        if self.chunk.n >= CHUNK_ROWS:
            self.frames.append(self.chunk.frame(self.numeric))
            self.chunk = _Chunk(self.columns)

    def _served(self, served: np.ndarray | None, rows: int) -> None:
        if not self.scores_complete:
            return
        if served is None:
            self.scores_complete, self.scores = False, []
        elif rows:
            self.scores.append(served)

    def add_blob(self, blob: bytes, path: str, numbers: Sequence[int] | None = None) -> None:
        """Decode the lines of `blob`; `numbers` are their 1-based line numbers in `path`."""
        fast = decode_uniform_file(blob, self.since_key, self.until_key, self.task)
        if fast is not None:  # every line well formed, same JSON shape: decoded in bulk
            self._add_uniform(fast)
            return
        for position, line in enumerate(blob.splitlines()):
            number = numbers[position] if numbers is not None else position + 1
            if not line.strip():
                continue
            self._add_line(line, path, number)

    def _add_uniform(self, fast: tuple) -> None:
        cols, rows, ids, whens, served, outside, requests = fast
        self.result.outside_window += outside
        self.result.requests += requests
        if rows:
            self.chunk.add_rows(cols, rows)
            self.present.update(cols)
        self.event_ids.extend(ids)
        self.times.extend(whens)
        self._served(served, len(rows))
        self._flush()

    def _add_line(self, line: bytes, path: str, number: int) -> None:
        """One request: decoded, counted outside the window, or counted malformed."""
        result = self.result
        try:
            record = orjson.loads(line)
            meta = record["eventMetadata"]
            when = str(meta["inferenceTime"])
            key = time_key(when)
            if ((self.since_key and key < self.since_key)
                    or (self.until_key and key >= self.until_key)):  # fmt: skip
                result.outside_window += 1
                return
            capture = record["captureData"]
            kind, payload = decode_payload(capture["endpointInput"])
            if kind == "csv":
                cols, rows = csv_table(payload, self.feature_columns, self.known)
            elif kind == "frame":
                cols, rows = tuple(map(str, payload.columns)), payload.to_numpy().tolist()
            else:
                cols, rows = json_rows(payload)
            if cols is None:
                self.chunk.add_records(rows)
                for r in rows:
                    self.present.update(r)
            else:
                self.chunk.add_rows(cols, rows)
                self.present.update(cols)
            n = len(rows)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            result.malformed_lines += 1
            if len(result.malformed_examples) < 5:
                result.malformed_examples.append(f"{path}:{number}: {type(exc).__name__}: "
                                                 f"{str(exc)[:120]}")  # fmt: skip
            return
        result.requests += 1
        event_id = str(meta.get("inferenceId") or meta.get("eventId") or "")
        self.event_ids.extend([event_id] * n)
        self.times.extend([when] * n)
        if self.scores_complete:
            self._served(served_scores(capture.get("endpointOutput"), n, self.task), n)
        self._flush()

    def finish(self) -> CaptureData:
        result = self.result
        if self.chunk.n or not self.frames:
            self.frames.append(self.chunk.frame(self.numeric))
        frames = self.frames
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        # A column no request carried is absent, not "all missing": the caller reports the
        # mismatch.
        result.frame = frame.drop(columns=[c for c in self.columns if c not in self.present])
        result.scores = (np.concatenate(self.scores)
                         if self.scores_complete and self.scores else None)  # fmt: skip
        result.event_ids = np.asarray(self.event_ids, dtype=object)
        result.inference_times = pd.Series(pd.to_datetime(self.times, utc=True,
                                                          format="ISO8601"))  # fmt: skip
        return result
