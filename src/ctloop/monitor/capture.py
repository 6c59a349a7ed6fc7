"""Read captured traffic (SageMaker Data Capture JSON Lines) and Model Monitor ground truth.

One capture line is one request:
  {"captureData": {"endpointInput":  {"observedContentType", "mode": "INPUT", "data", "encoding"},
                   "endpointOutput": {"observedContentType", "mode": "OUTPUT", "data", "encoding"}},
   "eventMetadata": {"eventId", "inferenceId"?, "inferenceTime": "2026-01-02T03:04:05Z"},
   "eventVersion": "0"}
Files sit under `yyyy/mm/dd/hh/` folders, locally or under an S3 prefix; both are read through
pyarrow's filesystem layer (S3 honours AWS_ENDPOINT_URL). `encoding` is JSON, CSV or BASE64.
Lines that cannot be decoded are skipped and counted, never fatal: one bad writer must not
blind the monitor. Rows are decoded in chunks into column lists, so a million single-row
requests never exist as a million dicts at once.
"""

from __future__ import annotations

import base64
import csv
import io
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd

log = logging.getLogger(__name__)

CHUNK_ROWS = 100_000
PILOT_LINES = 200  # lines of the first file decoded to estimate rows per line
SAMPLE_GROWTH_CAP = 8  # a later sampling batch is at most this many times the lines so far
_HOUR_PATH = re.compile(r"(?:^|/)(\d{4})/(\d{2})/(\d{2})/(\d{2})(?:/|$)")


class CaptureError(ValueError):
    """A capture location that cannot be read at all (missing folder, bad URI)."""


@dataclass
class CaptureData:
    """Decoded traffic: feature rows, the served predictions if captured, and bookkeeping."""

    frame: pd.DataFrame
    probability: np.ndarray | None  # captured positive-class probability per row, if complete
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


def parse_time(value: str | None) -> datetime | None:
    """An ISO-8601 instant; a naive value is taken as UTC (capture times are UTC)."""
    if value is None or value == "":
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise CaptureError(f"invalid time {value!r}: use ISO 8601, e.g. 2026-01-31T12:00") from None
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def _filesystem(location: str):
    import pyarrow.fs as pafs

    try:
        if "://" in location:
            fs, path = pafs.FileSystem.from_uri(location)
        else:
            fs, path = pafs.LocalFileSystem(), str(location)
            import os

            path = os.path.abspath(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for bad URIs
        raise CaptureError(f"{location}: cannot open capture location: {exc}") from None
    return fs, path.rstrip("/")


def _hour_of(path: str) -> datetime | None:
    match = _HOUR_PATH.search(path)
    if not match:
        return None
    try:
        return datetime(*map(int, match.groups()), tzinfo=UTC)
    except ValueError:
        return None


def list_files(location: str, since: datetime | None = None,
               until: datetime | None = None) -> list[tuple[Any, str]]:  # fmt: skip
    """Capture files under a folder or prefix, skipping hour folders wholly outside the window."""
    import pyarrow.fs as pafs

    fs, root = _filesystem(location)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise CaptureError(f"{location}: capture location not found")
    if info.type == pafs.FileType.File:
        return [(fs, root)]
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    files = []
    for entry in fs.get_file_info(selector):
        if entry.type != pafs.FileType.File or entry.base_name.startswith("."):
            continue
        if not entry.base_name.endswith((".jsonl", ".json", ".jsonl.gz", ".txt")) and "." in (
            entry.base_name
        ):
            continue
        hour = _hour_of(entry.path[len(root):])
        if hour is not None:
            if since is not None and hour.timestamp() + 3600 <= since.timestamp():
                continue
            if until is not None and hour.timestamp() >= until.timestamp():
                continue
        files.append((fs, entry.path))
    files.sort(key=lambda item: item[1])
    return files


def _read_bytes(fs, path: str) -> bytes:
    compression = "gzip" if path.endswith(".gz") else None
    with fs.open_input_stream(path, compression=compression) as stream:
        return stream.read()


def _payload(block: dict) -> tuple[str, Any]:
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


def _json_rows(payload: Any) -> tuple[tuple[str, ...] | None, list[list[Any]] | list[dict]]:
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


def _csv_rows(text: str) -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO(text)) if row]


def _csv_table(text: str, feature_columns: Sequence[str],
               known: frozenset[str]) -> tuple[tuple[str, ...], list[list[str]]]:  # fmt: skip
    """CSV with a header row (MLflow scoring) or without (SageMaker: the model's column order)."""
    rows = _csv_rows(text)
    if rows and all(value in known for value in rows[0]):
        return tuple(rows[0]), rows[1:]
    return tuple(feature_columns), rows


def _probabilities(block: dict | None, n_rows: int) -> list[float] | None:
    """The positive-class probability per row from a captured output, or None if unusable."""
    if not block or "data" not in block:
        return None
    try:
        kind, payload = _payload(block)
        if kind == "csv":
            values = [float(row[0]) for row in _csv_rows(payload)]
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


class _Reader:
    """Decoding state shared by the full read and the sampled read: one blob at a time."""

    def __init__(self, feature_columns: Sequence[str], numeric_columns: Sequence[str],
                 since: datetime | None, until: datetime | None,
                 extra_columns: Sequence[str]) -> None:  # fmt: skip
        self.feature_columns = list(feature_columns)
        self.columns = [*feature_columns, *[c for c in extra_columns if c not in feature_columns]]
        self.known = frozenset(self.columns)
        self.numeric = frozenset(numeric_columns)
        self.since_key = since.strftime("%Y-%m-%dT%H:%M:%S") if since else None
        self.until_key = until.strftime("%Y-%m-%dT%H:%M:%S") if until else None
        self.frames: list[pd.DataFrame] = []
        self.probs: list[float] = []
        self.probs_complete = True
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

    def _served(self, served: list[float] | None) -> None:
        if self.probs_complete and served is None:
            self.probs_complete, self.probs = False, []
        elif self.probs_complete:
            self.probs.extend(served)

    def add_blob(self, blob: bytes, path: str, numbers: Sequence[int] | None = None) -> None:
        """Decode the lines of `blob`; `numbers` are their 1-based line numbers in `path`."""
        result = self.result
        fast = _decode_uniform_file(blob, self.since_key, self.until_key)
        if fast is not None:  # every line well formed, same JSON shape: decoded in bulk
            cols, rows, ids, whens, served, outside, requests = fast
            result.outside_window += outside
            result.requests += requests
            if rows:
                self.chunk.add_rows(cols, rows)
                self.present.update(cols)
            self.event_ids.extend(ids)
            self.times.extend(whens)
            self._served(served)
            self._flush()
            return
        for position, line in enumerate(blob.splitlines()):
            number = numbers[position] if numbers is not None else position + 1
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
                meta = record["eventMetadata"]
                when = str(meta["inferenceTime"])
                key = _time_key(when)
                if ((self.since_key and key < self.since_key)
                        or (self.until_key and key >= self.until_key)):  # fmt: skip
                    result.outside_window += 1
                    continue
                capture = record["captureData"]
                kind, payload = _payload(capture["endpointInput"])
                if kind == "csv":
                    cols, rows = _csv_table(payload, self.feature_columns, self.known)
                elif kind == "frame":
                    cols, rows = tuple(map(str, payload.columns)), payload.to_numpy().tolist()
                else:
                    cols, rows = _json_rows(payload)
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
                continue
            result.requests += 1
            event_id = str(meta.get("inferenceId") or meta.get("eventId") or "")
            self.event_ids.extend([event_id] * n)
            self.times.extend([when] * n)
            if self.probs_complete:
                self._served(_probabilities(capture.get("endpointOutput"), n))
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
        result.probability = (np.asarray(self.probs, dtype=np.float64)
                              if self.probs_complete and self.probs else None)  # fmt: skip
        result.event_ids = np.asarray(self.event_ids, dtype=object)
        result.inference_times = pd.Series(pd.to_datetime(self.times, utc=True,
                                                          format="ISO8601"))  # fmt: skip
        return result


def _line_count(blob: bytes) -> int:
    """Physical lines (a last line without a newline counts); blank ones are skipped later."""
    return blob.count(b"\n") + (1 if blob and not blob.endswith(b"\n") else 0)


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
) -> CaptureData:
    """Decode the requests in [since, until) under `location` into one frame.

    `feature_columns` (the model's) define the CSV column order; `extra_columns` (e.g. the
    target or time column, when the caller sent them) are kept if present in JSON payloads.

    With `sample_rows`, only a seeded uniform random sample of capture *lines* (requests) is
    decoded, enough for about `sample_rows` rows in the window (see `_read_sample`); all
    counts in the result (requests, malformed, outside the window) are then among the
    sampled lines, and `lines` / `decoded_lines` say how many lines there were and were read.
    """
    reader = _Reader(feature_columns, numeric_columns, since, until, extra_columns)
    files = list_files(location, since, until)
    reader.result.files = len(files)
    if sample_rows is None:
        for fs, path in files:
            blob = _read_bytes(fs, path)
            reader.result.lines += _line_count(blob)
            reader.add_blob(blob, path)
        reader.result.decoded_lines = reader.result.lines
    else:
        _read_sample(reader, files, sample_rows, seed)
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


def capture_bytes(location: str, since: datetime | None = None,
                  until: datetime | None = None) -> int:  # fmt: skip
    """Total size of the capture files `read_capture` would read (compressed size for .gz)."""
    files = list_files(location, since, until)
    if not files:
        return 0
    fs = files[0][0]
    return sum(max(info.size or 0, 0) for info in fs.get_file_info([p for _, p in files]))


def _read_sample(reader: _Reader, files: list[tuple[Any, str]], target: int, seed: int) -> None:
    """Decode lines in a seeded random order until `target` rows in the window are decoded.

    Pass 1 reads every file once and only counts its lines (bytes.count, no parsing). The
    lines are then taken in the order of one seeded permutation, in batches: the first batch
    is sized from the rows per line of a pilot (the first lines of the first file; requests
    may carry many rows), later ones from the rows per decoded line so far. Any prefix of a
    random permutation is a uniform sample without replacement, so the decoded lines are a
    simple random sample of the requests, whatever the batches were. When the capture holds
    no more lines than the first batch, every line is decoded (no sampling at all).
    """
    result = reader.result
    counts = []
    pilot_rows_per_line = None
    for fs, path in files:
        blob = _read_bytes(fs, path)
        counts.append(_line_count(blob))
        if pilot_rows_per_line is None and counts[-1]:
            pilot = _Reader(reader.feature_columns, reader.numeric, None, None,
                            reader.columns[len(reader.feature_columns):])  # fmt: skip
            head = b"\n".join(blob.split(b"\n", PILOT_LINES)[:PILOT_LINES])
            pilot.add_blob(head, path)
            if pilot.result.requests:
                pilot_rows_per_line = max(pilot.chunk.n / pilot.result.requests, 1.0)
    total = int(sum(counts))
    result.lines = total
    if total == 0:
        return
    ends = np.cumsum(counts)
    order = np.random.default_rng(seed).permutation(total)
    rows_per_line = pilot_rows_per_line or 1.0
    taken = 0
    while taken < total:
        need = target - reader.rows
        if need <= 0:
            break
        if taken:  # rows per decoded line so far (malformed and out-of-window lines give 0)
            rows_per_line = max(reader.rows / taken, 1.0 / SAMPLE_GROWTH_CAP)
        batch = int(min(total - taken, max(np.ceil(need / rows_per_line * 1.02), 1)))
        if taken:
            batch = min(batch, taken * SAMPLE_GROWTH_CAP)
        chosen = np.sort(order[taken:taken + batch])
        taken += batch
        file_of = np.searchsorted(ends, chosen, side="right")
        bounds = np.flatnonzero(np.diff(file_of)) + 1
        for group, k in zip(np.split(chosen, bounds), file_of[np.r_[0, bounds]], strict=True):
            k = int(k)
            fs, path = files[k]
            start = int(ends[k] - counts[k])
            lines = _read_bytes(fs, path).split(b"\n")
            local = (group - start).tolist()
            reader.add_blob(b"\n".join([lines[i] for i in local]), path,
                            [i + 1 for i in local])  # fmt: skip
    result.decoded_lines = taken
    result.sampled = taken < total


def _decode_uniform_file(blob: bytes, since_key: str | None, until_key: str | None):
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


def _time_key(value: str) -> str:
    """A sortable key for an ISO inference time: 'YYYY-MM-DDTHH:MM:SS' in UTC."""
    if len(value) >= 19 and value[10] == "T" and (value.endswith("Z") or len(value) == 19):
        return value[:19]
    stamp = parse_time(value)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S")


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
        for line in _read_bytes(fs, path).splitlines():
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
                meta = record["eventMetadata"]
                event_id = str(meta.get("inferenceId") or meta["eventId"])
                kind, payload = _payload(record["groundTruthData"])
                values = ([v for row in _csv_rows(payload) for v in row] if kind == "csv" else
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


def iter_lines(path: str) -> Iterator[bytes]:
    """Lines of one capture file (for tools and tests)."""
    fs, root = _filesystem(path)
    yield from _read_bytes(fs, root).splitlines()
