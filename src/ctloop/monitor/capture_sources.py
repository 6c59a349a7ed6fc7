"""Where captured traffic lives: the capture files of a local folder or S3 prefix in a window.

Files sit under `yyyy/mm/dd/hh/` folders, locally or under an S3 prefix; both are read through
pyarrow's filesystem layer (S3 honours AWS_ENDPOINT_URL). Hour folders wholly outside the
window are skipped without being read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd

_HOUR_PATH = re.compile(r"(?:^|/)(\d{4})/(\d{2})/(\d{2})/(\d{2})(?:/|$)")


class CaptureError(ValueError):
    """A capture location that cannot be read at all (missing folder, bad URI)."""


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


def read_bytes(fs, path: str) -> bytes:
    """The whole content of one capture file (gunzipped for .gz)."""
    compression = "gzip" if path.endswith(".gz") else None
    with fs.open_input_stream(path, compression=compression) as stream:
        return stream.read()


def line_count(blob: bytes) -> int:
    """Physical lines (a last line without a newline counts); blank ones are skipped later."""
    return blob.count(b"\n") + (1 if blob and not blob.endswith(b"\n") else 0)


def capture_bytes(location: str, since: datetime | None = None,
                  until: datetime | None = None) -> int:  # fmt: skip
    """Total size of the capture files `read_capture` would read (compressed size for .gz)."""
    files = list_files(location, since, until)
    if not files:
        return 0
    fs = files[0][0]
    return sum(max(info.size or 0, 0) for info in fs.get_file_info([p for _, p in files]))


def iter_lines(path: str) -> Iterator[bytes]:
    """Lines of one capture file (for tools and tests)."""
    fs, root = _filesystem(path)
    yield from read_bytes(fs, root).splitlines()
