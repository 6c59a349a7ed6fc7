"""Sampled capture reads: a seeded random sample of lines, honest counts, joins, the worker."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from ctloop.monitor import capture as cap
from ctloop.monitor import current
from ctloop.monitor import ground_truth as gt
from ctloop.tasks import BinaryTask
from tests.conftest import make_churn
from tests.unit.monitor.support import T0, capture_line, write_capture, write_ground_truth

FEATURES = ("tenure", "monthly_charges", "contract", "internet")
NUMERIC = ("tenure", "monthly_charges")


def _frame(rows: int, seed: int = 0) -> pd.DataFrame:
    return make_churn(rows, seed)[list(FEATURES)]


def test_sample_decodes_a_seeded_subset_of_lines(tmp_path: Path) -> None:
    frame = _frame(3000)
    write_capture(tmp_path, frame, T0, timedelta(seconds=5), np.full(3000, 0.3))
    full = cap.read_capture(str(tmp_path), FEATURES, NUMERIC)
    one = cap.read_capture(str(tmp_path), FEATURES, NUMERIC, sample_rows=1000, seed=7,
                           task=BinaryTask("Yes", "No"))  # fmt: skip
    two = cap.read_capture(str(tmp_path), FEATURES, NUMERIC, sample_rows=1000, seed=7)
    other = cap.read_capture(str(tmp_path), FEATURES, NUMERIC, sample_rows=1000, seed=8)
    assert (full.lines, full.decoded_lines, full.sampled) == (3000, 3000, False)
    assert one.lines == 3000 and one.sampled and 1000 <= one.rows <= 1100
    assert one.decoded_lines == one.requests == one.rows  # one row per request
    assert list(one.event_ids) == list(two.event_ids)  # seeded
    assert list(one.event_ids) != list(other.event_ids)
    assert len(set(one.event_ids)) == one.rows  # without replacement
    assert one.scores is not None and len(one.scores) == one.rows
    # rows are the sampled requests' own rows, in capture order
    by_id = dict(zip(full.event_ids, full.frame["tenure"], strict=True))
    assert [by_id[e] for e in one.event_ids] == one.frame["tenure"].tolist()
    assert one.inference_times.is_monotonic_increasing


def test_sample_counts_rows_not_lines(tmp_path: Path) -> None:
    write_capture(tmp_path, _frame(4000), T0, timedelta(seconds=5), rows_per_request=20)
    data = cap.read_capture(str(tmp_path), FEATURES, NUMERIC, sample_rows=1000, seed=1)
    assert data.lines == 200 and data.sampled
    assert 1000 <= data.rows <= 1100 and data.rows == 20 * data.requests


def test_small_capture_is_read_whole(tmp_path: Path) -> None:
    write_capture(tmp_path, _frame(50), T0, timedelta(seconds=5))
    data = cap.read_capture(str(tmp_path), FEATURES, NUMERIC, sample_rows=1000, seed=1)
    assert (data.rows, data.lines, data.decoded_lines, data.sampled) == (50, 50, 50, False)


def test_sample_counts_malformed_lines_among_the_sampled(tmp_path: Path) -> None:
    good = capture_line(_frame(1), T0, [0.2])
    write_capture(tmp_path, _frame(1500), T0, timedelta(seconds=5),
                  malformed=["{not json"] * 1500)  # fmt: skip
    data = cap.read_capture(str(tmp_path), FEATURES, NUMERIC, sample_rows=1000, seed=3)
    assert data.lines == 3000 and data.sampled and json.loads(good)
    assert data.decoded_lines == data.requests + data.malformed_lines
    assert 0.35 < data.malformed_lines / data.decoded_lines < 0.65  # about half, as in the file
    assert data.rows >= 1000


def test_sampled_rows_join_ground_truth(tmp_path: Path) -> None:
    ids = write_capture(tmp_path / "cap", _frame(4000), T0, timedelta(seconds=5),
                        rows_per_request=2)  # fmt: skip
    write_ground_truth(tmp_path / "gt", {i: "Yes,No" for i in ids}, T0)
    labels, _ = gt.read_ground_truth(str(tmp_path / "gt"), BinaryTask("Yes", "No"))
    data = cap.read_capture(str(tmp_path / "cap"), FEATURES, NUMERIC, sample_rows=1000, seed=2)
    joined = gt.join_ground_truth(data.event_ids, labels)
    assert data.sampled and not np.isnan(joined).any()
    np.testing.assert_array_equal(joined, [1, 0] * data.requests)


def test_worker_process_decodes_the_same_sample(tmp_path: Path, monkeypatch) -> None:
    write_capture(tmp_path, _frame(3000), T0, timedelta(seconds=5), np.full(3000, 0.3))
    args = (str(tmp_path), list(FEATURES), list(NUMERIC), None, None, [], 1000, 5)
    monkeypatch.setattr(current, "OVERLAP_BYTES", 0)
    monkeypatch.setattr(current, "warm_up_drift_tests", lambda: None)
    pool = current.decoder_pool(str(tmp_path))
    assert pool is not None
    try:
        remote = current.decode_capture(pool, *args, BinaryTask("Yes", "No"))
    finally:
        pool.shutdown()
    local = cap.read_capture(*args, task=BinaryTask("Yes", "No"))
    assert local.scores is not None
    np.testing.assert_array_equal(remote.scores, local.scores)
    assert list(remote.event_ids) == list(local.event_ids)
    pd.testing.assert_frame_equal(remote.frame, local.frame)
    assert (remote.lines, remote.decoded_lines) == (local.lines, local.decoded_lines)
