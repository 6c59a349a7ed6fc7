"""Seeded uniform sampling of capture lines across files, decoded until enough rows are read."""

from __future__ import annotations

from typing import Any

import numpy as np

from ctloop.monitor.capture_reader import Reader
from ctloop.monitor.capture_sources import line_count, read_bytes

PILOT_LINES = 200  # lines of the first file decoded to estimate rows per line
SAMPLE_GROWTH_CAP = 8  # a later sampling batch is at most this many times the lines so far


def read_sample(reader: Reader, files: list[tuple[Any, str]], target: int, seed: int) -> None:
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
    counts, pilot_rows_per_line = _count_lines(reader, files)
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
        _decode_chosen(reader, files, counts, ends, chosen)
    result.decoded_lines = taken
    result.sampled = taken < total


def _count_lines(reader: Reader, files: list[tuple[Any, str]]) -> tuple[list[int], float | None]:
    """Lines per file, and the rows per line of a pilot decode of the first non-empty file."""
    counts = []
    pilot_rows_per_line = None
    for fs, path in files:
        blob = read_bytes(fs, path)
        counts.append(line_count(blob))
        if pilot_rows_per_line is None and counts[-1]:
            pilot = Reader(reader.feature_columns, reader.numeric, None, None,
                           reader.columns[len(reader.feature_columns):])  # fmt: skip
            head = b"\n".join(blob.split(b"\n", PILOT_LINES)[:PILOT_LINES])
            pilot.add_blob(head, path)
            if pilot.result.requests:
                pilot_rows_per_line = max(pilot.chunk.n / pilot.result.requests, 1.0)
    return counts, pilot_rows_per_line


def _decode_chosen(reader: Reader, files: list[tuple[Any, str]], counts: list[int],
                   ends: np.ndarray, chosen: np.ndarray) -> None:  # fmt: skip
    """Decode the lines at the sorted global positions `chosen`, file by file."""
    file_of = np.searchsorted(ends, chosen, side="right")
    bounds = np.flatnonzero(np.diff(file_of)) + 1
    for group, k in zip(np.split(chosen, bounds), file_of[np.r_[0, bounds]], strict=True):
        k = int(k)
        fs, path = files[k]
        start = int(ends[k] - counts[k])
        lines = read_bytes(fs, path).split(b"\n")
        local = (group - start).tolist()
        reader.add_blob(b"\n".join([lines[i] for i in local]), path,
                        [i + 1 for i in local])  # fmt: skip
