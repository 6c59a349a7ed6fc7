"""The current window: captured traffic (or a CSV/Parquet file) in [since, until), in the
champion's terms, with labels where known.

From a capture, every line is counted but only a seeded random sample of lines giving about
`monitor.decode_rows` rows is decoded (`capture.read_capture`); a large capture is decoded in
a worker process while this one imports Evidently. Labels come from the rows' own target
column and, for captured traffic, from Model Monitor ground truth joined by event id.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from ctloop import registry
from ctloop.config import Config, table_format
from ctloop.data import read_table
from ctloop.model import TabularModel
from ctloop.monitor import capture as cap
from ctloop.monitor import ground_truth as gt
from ctloop.monitor.drift import warm_up as warm_up_drift_tests
from ctloop.monitor.frames import (
    encode_labels,
    normalise,
    numeric_columns,
    schema_check,
    target_and_time,
)
from ctloop.monitor.result import MonitorError
from ctloop.tasks import Task

log = logging.getLogger(__name__)

OVERLAP_BYTES = 32 * 2**20  # captures at least this big are decoded in a worker process


@dataclass
class Current:
    frame: pd.DataFrame
    scores: np.ndarray | None  # the served scores, when captured and usable
    labels: np.ndarray | None  # the task's label codes (`Task.encode_known`), NaN where unknown
    times: pd.Series | None  # the data's own time column, if the rows carry it
    rows: dict[str, int]
    source: str


def is_table(location: str) -> bool:
    return "://" not in location and table_format(location) is not None


def current_window(
    location: str, since: str | None, until: str | None, champion: registry.ModelVersion,
) -> tuple[datetime | None, datetime | None]:  # fmt: skip
    """[since, until) as UTC instants; a capture defaults to traffic since the champion."""
    since_dt, until_dt = cap.parse_time(since), cap.parse_time(until)
    if since_dt is None and not is_table(location):
        # Default: traffic since this champion was registered (older traffic was judged by,
        # and may already have retrained, its predecessor).
        since_dt = datetime.fromtimestamp(champion.created_ms / 1000, tz=UTC)
    if since_dt and until_dt and since_dt >= until_dt:
        raise MonitorError(f"empty window: --since {since} is not before --until {until}")
    return since_dt, until_dt


def decoder_pool(location: str):
    """A one-process pool, started now, to decode a large capture; None for small ones.

    Decoding JSON and importing Evidently are both CPU-bound for several seconds; in a worker
    process the decoding overlaps with this process loading the champion and importing
    Evidently (2 cores here). Small captures are decoded in-process: a worker costs ~1 s.
    """
    if is_table(location) or (os.cpu_count() or 1) < 2:
        return None
    try:
        if cap.capture_bytes(location) < OVERLAP_BYTES:
            return None
    except cap.CaptureError:  # reported where the capture is read
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: this process will hold MLflow's database connections and maybe threads.
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    pool.submit(cap.ready)  # start the worker and its imports now
    return pool


def decode_capture(pool, location: str, features: list[str], numeric: list[str],
                   since: datetime | None, until: datetime | None, extras: list[str],
                   decode_rows: int | None, seed: int,
                   task: Task | None = None) -> cap.CaptureData:  # fmt: skip
    """Decode the capture, in the worker (if any) while this process imports Evidently."""
    args = (location, features, numeric, since, until, extras, decode_rows, seed)
    if pool is None:
        return cap.read_capture(*args, task=task)
    future = pool.submit(cap.read_capture, *args, False, task=task)
    try:
        warm_up_drift_tests()
    except Exception:  # an import failure surfaces later, where it is reported properly
        log.debug("warming up Evidently failed", exc_info=True)
    data = future.result()
    pool.shutdown(wait=True)  # not kept through the report and a retraining
    cap.warn_malformed(data, location)
    return data


def read_current(
    cfg: Config, location: str, since: datetime | None, until: datetime | None,
    model: TabularModel, version: int, ground_truth: str | None, pool=None,
) -> Current:  # fmt: skip
    """The current rows from a table file or a capture; an unreadable capture is a MonitorError."""
    try:
        if is_table(location):
            return _read_table(cfg, location, since, until, model, version)
        return _read_captured(cfg, location, since, until, model, version, ground_truth, pool)
    except cap.CaptureError as exc:
        raise MonitorError(str(exc)) from None


def _read_table(cfg: Config, location: str, since: datetime | None, until: datetime | None,
                model: TabularModel, version: int) -> Current:  # fmt: skip
    target, time_col = target_and_time(cfg)
    frame = read_table(location)
    rows = {"requests": len(frame), "malformed_lines": 0, "outside_window": 0, "files": 1}
    if since or until:
        if not time_col or time_col not in frame.columns:
            raise MonitorError(f"{location}: --since/--until need the time column "
                               f"'{time_col or 'data.time_column'}' in the file")  # fmt: skip
        times = pd.to_datetime(frame[time_col], errors="coerce", utc=True)
        keep = times.notna()
        if since:
            keep &= times >= pd.Timestamp(since)
        if until:
            keep &= times < pd.Timestamp(until)
        rows["outside_window"] = int((~keep).sum())
        frame = frame[keep.to_numpy()]
    schema_check(frame, model, version, location)
    labels = encode_labels(frame[target], model.task) if target in frame.columns else None
    times = (pd.to_datetime(frame[time_col], errors="coerce") if time_col
             and time_col in frame.columns else None)  # fmt: skip
    return Current(normalise(frame, model).reset_index(drop=True), None, labels,
                   times, rows, location)  # fmt: skip


def _read_captured(cfg: Config, location: str, since: datetime | None, until: datetime | None,
                   model: TabularModel, version: int, ground_truth: str | None,
                   pool) -> Current:  # fmt: skip
    target, time_col = target_and_time(cfg)
    extras = [c for c in (target, time_col) if c]
    data = decode_capture(pool, location, list(model.feature_columns), numeric_columns(model),
                          since, until, extras, cfg.monitor.decode_rows, cfg.split.seed,
                          model.task)  # fmt: skip
    rows = {"requests": data.requests, "malformed_lines": data.malformed_lines,
            "outside_window": data.outside_window, "files": data.files,
            "capture_lines": data.lines, "decoded_lines": data.decoded_lines}  # fmt: skip
    schema_check(data.frame, model, version, location)
    labels = None
    if target in data.frame.columns:
        labels = encode_labels(data.frame[target], model.task)
    truth_location = ground_truth or cfg.monitor.ground_truth
    if truth_location and data.rows:
        truth, bad = gt.read_ground_truth(truth_location, model.task)
        rows["malformed_ground_truth_lines"] = bad
        joined = gt.join_ground_truth(data.event_ids, truth)
        labels = joined if labels is None else np.where(np.isnan(labels), joined, labels)
    times = None
    if time_col and time_col in data.frame.columns:
        times = pd.to_datetime(data.frame[time_col], errors="coerce")
    frame = data.frame if not len(data.frame) else normalise(data.frame, model)
    return Current(frame, data.scores, labels, times, rows, location)
