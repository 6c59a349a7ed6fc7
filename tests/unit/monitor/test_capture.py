"""The Data Capture reader: payload kinds, malformed lines, the time window, ground truth, S3."""

from __future__ import annotations

import base64
import io
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.monitor import capture as cap
from ctloop.monitor import ground_truth as gt
from ctloop.tasks import BinaryTask
from tests.conftest import make_churn
from tests.unit.monitor.support import T0, capture_line, write_capture, write_ground_truth

FEATURES = ("tenure", "monthly_charges", "contract", "internet")
NUMERIC = ("tenure", "monthly_charges")
BINARY = BinaryTask("Yes", "No")


def _frame(rows: int = 30, seed: int = 0) -> pd.DataFrame:
    return make_churn(rows, seed)[list(FEATURES)]


def test_reads_json_requests_with_served_probabilities(tmp_path: Path) -> None:
    frame = _frame()
    probs = np.linspace(0.05, 0.95, len(frame))
    write_capture(tmp_path, frame, T0, timedelta(minutes=7), probs, rows_per_request=3)
    data = cap.read_capture(str(tmp_path), FEATURES, NUMERIC, task=BINARY)
    assert (data.rows, data.requests, data.malformed_lines) == (30, 10, 0)
    assert data.files == 2  # 10 requests 7 minutes apart span two hour folders
    np.testing.assert_allclose(data.scores, probs)
    pd.testing.assert_series_equal(data.frame["tenure"], frame["tenure"].astype(float),
                                   check_names=False)  # fmt: skip
    assert data.frame["contract"].tolist() == frame["contract"].tolist()
    assert data.frame["internet"].isna().sum() == frame["internet"].isna().sum()
    assert list(data.event_ids[:4]) == ["ev-0", "ev-0", "ev-0", "ev-1"]


def test_malformed_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    good = capture_line(_frame(1), T0, [0.2])
    record = json.loads(good)
    no_time = json.loads(good)
    del no_time["eventMetadata"]["inferenceTime"]
    wrong_width = json.loads(good)
    wrong_width["captureData"]["endpointInput"]["data"] = json.dumps(
        {"dataframe_split": {"columns": list(FEATURES), "data": [[1, 2]]}})
    bad_b64 = json.loads(good)
    bad_b64["captureData"]["endpointInput"].update(encoding="BASE64", data="%%%not base64")
    malformed = ["{not json", '"just a string"', json.dumps({"captureData": {}}),
                 json.dumps(no_time), json.dumps(wrong_width), json.dumps(bad_b64)]
    write_capture(tmp_path, _frame(10), T0, timedelta(seconds=1), [0.5] * 10,
                  malformed=malformed)  # fmt: skip
    data = cap.read_capture(str(tmp_path), FEATURES, NUMERIC)
    assert data.rows == 10 and data.malformed_lines == len(malformed)
    assert data.malformed_examples and record["eventVersion"] == "0"


def test_window_filters_rows_and_prunes_hour_folders(tmp_path: Path) -> None:
    frame = _frame(48)
    write_capture(tmp_path, frame, T0, timedelta(minutes=30))  # 24 hours of traffic
    since, until = T0 + timedelta(hours=3), T0 + timedelta(hours=5)
    data = cap.read_capture(str(tmp_path), FEATURES, NUMERIC, since, until, task=BINARY)
    assert data.rows == 4  # 03:00, 03:30, 04:00, 04:30; until is exclusive
    assert data.files == 2  # only the 03 and 04 hour folders were opened
    assert data.inference_times.min() == pd.Timestamp(since)
    assert data.scores is None  # no endpointOutput captured


def test_csv_payloads_with_and_without_header(tmp_path: Path) -> None:
    frame = _frame(6)
    write_capture(tmp_path / "with", frame, T0, timedelta(seconds=1), csv=True,
                  rows_per_request=2)  # fmt: skip
    line = json.loads(capture_line(frame.head(2), T0, None))
    line["captureData"]["endpointInput"] = {
        "observedContentType": "text/csv", "mode": "INPUT", "encoding": "CSV",
        "data": frame.head(2).to_csv(index=False, header=False)}  # SageMaker: no header
    (tmp_path / "bare.jsonl").write_text(json.dumps(line) + "\n")
    with_header = cap.read_capture(str(tmp_path / "with"), FEATURES, NUMERIC)
    bare = cap.read_capture(str(tmp_path / "bare.jsonl"), FEATURES, NUMERIC)
    assert with_header.rows == 6 and bare.rows == 2
    assert with_header.frame["contract"].tolist() == frame["contract"].tolist()
    assert bare.frame["tenure"].tolist() == frame["tenure"].head(2).tolist()


def test_records_and_base64_parquet_payloads(tmp_path: Path) -> None:
    frame = _frame(4)
    records = json.loads(capture_line(frame, T0, None))
    records["captureData"]["endpointInput"]["data"] = json.dumps(
        {"dataframe_records": json.loads(frame.to_json(orient="records"))})
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    parquet = json.loads(capture_line(frame, T0, None))
    parquet["captureData"]["endpointInput"] = {
        "observedContentType": "application/vnd.apache.parquet", "mode": "INPUT",
        "encoding": "BASE64", "data": base64.b64encode(buffer.getvalue()).decode()}
    (tmp_path / "x.jsonl").write_text(json.dumps(records) + "\n" + json.dumps(parquet) + "\n")
    data = cap.read_capture(str(tmp_path / "x.jsonl"), FEATURES, NUMERIC)
    assert data.rows == 8 and data.malformed_lines == 0
    assert data.frame["contract"].tolist() == frame["contract"].tolist() * 2


def test_missing_location_and_bad_time_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(cap.CaptureError, match="not found"):
        cap.read_capture(str(tmp_path / "nope"), FEATURES, NUMERIC)
    with pytest.raises(cap.CaptureError, match="invalid time"):
        cap.parse_time("yesterday-ish")
    assert cap.parse_time("2026-03-01T10:00").tzinfo is not None


def test_ground_truth_joins_by_event_id(tmp_path: Path) -> None:
    ids = write_capture(tmp_path / "cap", _frame(6), T0, timedelta(seconds=1),
                        rows_per_request=2)  # fmt: skip
    write_ground_truth(tmp_path / "gt", {ids[0]: "Yes,No", ids[2]: "No,No"}, T0)
    (tmp_path / "gt" / "junk.jsonl").write_text('{"groundTruthData": {}}\n')
    labels, bad = gt.read_ground_truth(str(tmp_path / "gt"), BINARY)
    assert bad == 1 and labels == {"ev-0": [1, 0], "ev-2": [0, 0]}
    data = cap.read_capture(str(tmp_path / "cap"), FEATURES, NUMERIC)
    joined = gt.join_ground_truth(data.event_ids, labels)
    np.testing.assert_array_equal(joined, [1, 0, np.nan, np.nan, 0, 0])


def test_reads_an_s3_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    moto_server = pytest.importorskip("moto.server")
    import boto3

    server = moto_server.ThreadedMotoServer(port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for key, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test",
                           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                           "AWS_EC2_METADATA_DISABLED": "true"}.items():  # fmt: skip
            monkeypatch.setenv(key, value)
        write_capture(tmp_path, _frame(12), T0, timedelta(minutes=20), [0.3] * 12,
                      malformed=["oops"])  # fmt: skip
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="capture")
        for path in tmp_path.rglob("*.jsonl"):
            s3.upload_file(str(path), "capture", f"datacapture/{path.relative_to(tmp_path)}")
        data = cap.read_capture("s3://capture/datacapture", FEATURES, NUMERIC,
                                cap.parse_time("2026-03-01T11:00"))  # fmt: skip
        assert data.rows == 9 and data.malformed_lines == 0  # the bad line sits in hour 10
        everything = cap.read_capture("s3://capture/datacapture", FEATURES, NUMERIC)
        assert everything.rows == 12 and everything.malformed_lines == 1
    finally:
        server.stop()


def test_bulk_and_line_by_line_decoding_agree(tmp_path: Path) -> None:
    frame = _frame(40, seed=3)
    probs = np.linspace(0.1, 0.9, 40)
    write_capture(tmp_path / "clean", frame, T0, timedelta(minutes=1), probs, rows_per_request=2)
    write_capture(tmp_path / "dirty", frame, T0, timedelta(minutes=1), probs, rows_per_request=2,
                  malformed=["{oops"])  # one bad line sends its file down the per-line path
    clean = cap.read_capture(str(tmp_path / "clean"), FEATURES, NUMERIC, task=BINARY)
    dirty = cap.read_capture(str(tmp_path / "dirty"), FEATURES, NUMERIC, task=BINARY)
    assert (clean.malformed_lines, dirty.malformed_lines) == (0, 1)
    pd.testing.assert_frame_equal(clean.frame, dirty.frame)
    assert clean.scores is not None
    np.testing.assert_array_equal(clean.scores, dirty.scores)
    np.testing.assert_array_equal(clean.event_ids, dirty.event_ids)
    pd.testing.assert_series_equal(clean.inference_times, dirty.inference_times)
