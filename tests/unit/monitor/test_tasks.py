"""The monitor for every task: served outputs read back, labels, quality, prediction drift,
the model report's frames, and feature kinds (booleans and dates arrive as text)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.features import FeatureEncoder
from ctloop.model import TabularModel
from ctloop.monitor import capture as cap
from ctloop.monitor import ground_truth as gt
from ctloop.monitor.capture_decode import served_scores
from ctloop.monitor.drift import column_drift
from ctloop.monitor.frames import (
    drift_view,
    encode_labels,
    label_names,
    normalise,
    numeric_columns,
)
from ctloop.monitor.quality import quality
from ctloop.monitor.report import PREDICTION_COLUMN, TARGET_COLUMN, model_frames
from ctloop.tasks import BinaryTask, MulticlassTask, RegressionTask, Task
from tests.conftest import make_churn
from tests.unit.monitor.support import T0, write_capture, write_ground_truth

FEATURES = ("tenure", "monthly_charges", "contract", "internet")
NUMERIC = ("tenure", "monthly_charges")
BINARY = BinaryTask("Yes", "No", threshold=0.4)
MULTICLASS = MulticlassTask(("Adelie", "Chinstrap", "Gentoo"))
REGRESSION = RegressionTask()
TASKS = {"binary": BINARY, "multiclass": MULTICLASS, "regression": REGRESSION}


def _scores(task: Task, n: int, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if task.kind == "binary":
        return np.clip(rng.beta(2, 5, n) + shift, 0, 1)
    if task.kind == "multiclass":
        alpha = np.array([1.0 + 10 * shift, 1.0, 1.0])
        return rng.dirichlet(alpha * 2, n)
    return rng.normal(150 + 60 * shift, 40, n)


def _frame(rows: int, seed: int = 0) -> pd.DataFrame:
    return make_churn(rows, seed)[list(FEATURES)]


# --- served outputs ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(TASKS))
def test_served_outputs_decode_per_task_in_bulk_and_per_line(kind: str, tmp_path: Path) -> None:
    task = TASKS[kind]
    frame = _frame(40, seed=3)
    scores = _scores(task, 40)
    records = task.output_records(scores)
    write_capture(tmp_path / "clean", frame, T0, timedelta(minutes=1), rows_per_request=2,
                  records=records)  # fmt: skip
    write_capture(tmp_path / "dirty", frame, T0, timedelta(minutes=1), rows_per_request=2,
                  records=records, malformed=["{oops"])  # per-line path for that file
    clean = cap.read_capture(str(tmp_path / "clean"), FEATURES, NUMERIC, task=task)
    dirty = cap.read_capture(str(tmp_path / "dirty"), FEATURES, NUMERIC, task=task)
    assert dirty.malformed_lines == 1
    assert clean.scores is not None and dirty.scores is not None
    assert clean.scores.shape == scores.shape
    np.testing.assert_allclose(clean.scores, scores)
    np.testing.assert_array_equal(clean.scores, dirty.scores)
    # without the task the served outputs are not read (the champion re-scores the rows)
    assert cap.read_capture(str(tmp_path / "clean"), FEATURES, NUMERIC).scores is None


def test_a_multiclass_capture_is_not_read_as_binary_or_regression(tmp_path: Path) -> None:
    scores = _scores(MULTICLASS, 10)
    write_capture(tmp_path, _frame(10), T0, timedelta(seconds=1),
                  records=MULTICLASS.output_records(scores))  # fmt: skip
    for other in (BINARY, REGRESSION):
        assert cap.read_capture(str(tmp_path), FEATURES, NUMERIC, task=other).scores is None


def test_unusable_outputs_fall_back_to_none(tmp_path: Path) -> None:
    scores = _scores(MULTICLASS, 6)
    records = MULTICLASS.output_records(scores)
    del records[3]["probability_Gentoo"]  # a served model that knew other classes
    write_capture(tmp_path / "mc", _frame(6), T0, timedelta(seconds=1), records=records)
    assert cap.read_capture(str(tmp_path / "mc"), FEATURES, NUMERIC, task=MULTICLASS).scores is None
    bad = [{"prediction": float("nan")}, *REGRESSION.output_records(_scores(REGRESSION, 5))]
    write_capture(tmp_path / "rg", _frame(6), T0, timedelta(seconds=1), records=bad)
    assert cap.read_capture(str(tmp_path / "rg"), FEATURES, NUMERIC, task=REGRESSION).scores is None
    outside = [{"probability": 1.5, "label": "Yes"}] * 6
    write_capture(tmp_path / "bn", _frame(6), T0, timedelta(seconds=1), records=outside)
    assert cap.read_capture(str(tmp_path / "bn"), FEATURES, NUMERIC, task=BINARY).scores is None


def _block(data: str, encoding: str = "JSON", content: str = "application/json") -> dict:
    return {"observedContentType": content, "mode": "OUTPUT", "data": data, "encoding": encoding}


def test_served_scores_accepts_other_body_shapes() -> None:
    p = [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]
    lists = _block(json.dumps({"predictions": p}))
    np.testing.assert_allclose(served_scores(lists, 2, MULTICLASS), p)
    columnar = _block(json.dumps({"predictions": {"probability_Adelie": [0.7, 0.1],
                                                  "probability_Chinstrap": [0.2, 0.1],
                                                  "probability_Gentoo": [0.1, 0.8],
                                                  "label": ["Adelie", "Gentoo"]}}))
    np.testing.assert_allclose(served_scores(columnar, 2, MULTICLASS), p)
    csv_bare = _block("0.7,0.2,0.1\n0.1,0.1,0.8\n", "CSV", "text/csv")
    np.testing.assert_allclose(served_scores(csv_bare, 2, MULTICLASS), p)
    csv_header = _block("prediction\n151.5\n90\n", "CSV", "text/csv")
    np.testing.assert_allclose(served_scores(csv_header, 2, REGRESSION), [151.5, 90.0])
    bare = _block(json.dumps([151.5, 90]))
    np.testing.assert_allclose(served_scores(bare, 2, REGRESSION), [151.5, 90.0])
    binary = _block(json.dumps({"predictions": {"probability": [0.2, 0.9], "label": [0, 1]}}))
    np.testing.assert_allclose(served_scores(binary, 2, BINARY), [0.2, 0.9])
    assert served_scores(binary, 3, BINARY) is None  # row count mismatch
    assert served_scores(_block("not json"), 2, BINARY) is None
    assert served_scores(_block(json.dumps({"error": "boom"})), 2, REGRESSION) is None


# --- labels -------------------------------------------------------------------------------


def test_labels_per_task() -> None:
    np.testing.assert_array_equal(
        encode_labels(pd.Series(["Yes", " No", None, "maybe"]), BINARY), [1, 0, np.nan, np.nan])
    np.testing.assert_array_equal(  # ground truth may say 1/0/true/false
        encode_labels(["1", "false", "Yes", "2"], BINARY, binary_words=True), [1, 0, 1, np.nan])
    np.testing.assert_array_equal(
        encode_labels(pd.Series(["Gentoo", "Adelie", "Emperor", np.nan, "Gentoo"]), MULTICLASS),
        [2, 0, np.nan, np.nan, 2])
    integers = MulticlassTask((0, 1, 2))
    np.testing.assert_array_equal(encode_labels(pd.Series([2, 0, 7]), integers), [2, 0, np.nan])
    np.testing.assert_array_equal(  # an integer column with missing values reads as floats
        encode_labels(pd.Series([2.0, np.nan, 1.0, 1.5]), integers), [2, np.nan, 1, np.nan])
    np.testing.assert_array_equal(
        encode_labels(pd.Series(["151.5", 90, None, "n/a"]), REGRESSION),
        [151.5, 90.0, np.nan, np.nan])
    assert label_names(np.array([1.0, 0.0, np.nan]), BINARY).tolist() == ["Yes", "No", None]
    assert label_names(np.array([2.0, np.nan]), MULTICLASS).tolist() == ["Gentoo", None]


@pytest.mark.parametrize(("kind", "raw", "codes"), [
    ("binary", ["Yes,No", "No,1"], [[1, 0], [0, 1]]),
    ("multiclass", ["Gentoo,Adelie", "Chinstrap,Chinstrap"], [[2, 0], [1, 1]]),
    ("regression", ["151.5,90", "12,0.25"], [[151.5, 90], [12, 0.25]]),
])  # fmt: skip
def test_ground_truth_per_task(kind: str, raw: list[str], codes: list, tmp_path: Path) -> None:
    task = TASKS[kind]
    ids = write_capture(tmp_path / "cap", _frame(6), T0, timedelta(seconds=1), rows_per_request=2)
    unknown = "Emperor,Adelie" if kind == "multiclass" else "maybe,No" if kind == "binary" \
        else "lots,1"  # fmt: skip
    write_ground_truth(tmp_path / "gt", {ids[0]: raw[0], ids[1]: raw[1], ids[2]: unknown}, T0)
    labels, bad = gt.read_ground_truth(str(tmp_path / "gt"), task)
    assert bad == 1 and labels == {ids[0]: codes[0], ids[1]: codes[1]}
    data = cap.read_capture(str(tmp_path / "cap"), FEATURES, NUMERIC)
    joined = gt.join_ground_truth(data.event_ids, labels)
    np.testing.assert_array_equal(joined, [*codes[0], *codes[1], np.nan, np.nan])


# --- quality ------------------------------------------------------------------------------


def _labelled(task: Task, n: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels that agree more often than not."""
    rng = np.random.default_rng(seed)
    scores = _scores(task, n, seed)
    if task.kind == "binary":
        y = (rng.random(n) < scores).astype(float)
    elif task.kind == "multiclass":
        y = np.array([rng.choice(3, p=p) for p in scores], dtype=float)
    else:
        y = np.abs(scores + rng.normal(0, 20, n)) + 1.0  # positive: mape is defined
    y[:10] = np.nan  # unlabelled rows
    return scores, y


@pytest.mark.parametrize("kind", list(TASKS))
def test_quality_is_the_tasks_metrics_on_labelled_rows(kind: str) -> None:
    task = TASKS[kind]
    scores, y = _labelled(task)
    metrics, labelled = quality(y, scores, task)
    assert labelled == 390
    assert set(metrics) == set(task.metric_names)
    expected = task.metrics(y[10:].astype(np.int64) if kind != "regression" else y[10:],
                            scores[10:])  # fmt: skip
    for name in task.metric_names:
        assert metrics[name] == pytest.approx(expected[name])
    assert quality(None, scores, task) == ({}, 0)


def test_binary_quality_uses_the_champions_threshold() -> None:
    scores, y = _labelled(BINARY)
    low, _ = quality(y, scores, BinaryTask("Yes", "No", threshold=0.1))
    high, _ = quality(y, scores, BinaryTask("Yes", "No", threshold=0.6))
    assert low["roc_auc"] == high["roc_auc"] and low["recall"] > high["recall"]
    assert "threshold" not in low


def test_quality_needs_two_classes_or_two_rows() -> None:
    assert quality(np.array([1.0, 1.0, np.nan]), np.array([0.2, 0.3, 0.4]), BINARY) == ({}, 2)
    one_class = np.array([[0.8, 0.1, 0.1]] * 3)
    assert quality(np.array([0.0, 0.0, 0.0]), one_class, MULTICLASS) == ({}, 3)
    assert quality(np.array([5.0, np.nan]), np.array([4.0, 1.0]), REGRESSION) == ({}, 1)
    metrics, n = quality(np.array([5.0, 7.0, 9.0]), np.array([4.0, 7.5, 9.0]), REGRESSION)
    assert n == 3 and metrics["mae"] == pytest.approx(0.5)


# --- prediction drift ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(TASKS))
def test_prediction_drift_on_the_tasks_signal(kind: str) -> None:
    task = TASKS[kind]
    ref_values, signal = task.drift_signal(_scores(task, 2000, seed=1))
    same, _ = task.drift_signal(_scores(task, 2000, seed=2))
    shifted, _ = task.drift_signal(_scores(task, 2000, seed=3, shift=0.4))
    assert signal == ("cat" if kind == "multiclass" else "num")
    ok = column_drift(pd.Series(ref_values), pd.Series(same), signal, PREDICTION_COLUMN)
    bad = column_drift(pd.Series(ref_values), pd.Series(shifted), signal, PREDICTION_COLUMN)
    assert not ok.drifted and bad.drifted and bad.column == PREDICTION_COLUMN
    assert bad.kind == signal


# --- the model report's frames ------------------------------------------------------------


def test_model_frames_per_task() -> None:
    scores, y = _labelled(BINARY, 50)
    frame = model_frames(BINARY, scores, y)
    assert list(frame.columns) == [PREDICTION_COLUMN, TARGET_COLUMN] and len(frame) == 40
    assert frame[TARGET_COLUMN].dtype.kind == "i"
    scores, y = _labelled(MULTICLASS, 50)
    frame = model_frames(MULTICLASS, scores, y)
    assert list(frame.columns) == [PREDICTION_COLUMN, "Adelie", "Chinstrap", "Gentoo",
                                   TARGET_COLUMN]  # fmt: skip
    assert set(frame[PREDICTION_COLUMN]) <= set(MULTICLASS.classes)
    assert set(frame[TARGET_COLUMN]) <= set(MULTICLASS.classes)
    unlabelled = model_frames(REGRESSION, _scores(REGRESSION, 5), None)
    assert list(unlabelled.columns) == [PREDICTION_COLUMN] and len(unlabelled) == 5


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["multiclass", "regression"])
def test_model_report_runs_evidentlys_preset_for_the_task(kind: str, tmp_path: Path) -> None:
    from ctloop.monitor.report import build_reports

    task = TASKS[kind]
    ref_scores, ref_y = _labelled(task, 300, seed=1)
    cur_scores, cur_y = _labelled(task, 200, seed=2)
    features = _frame(200)
    files = build_reports(features, features, list(NUMERIC), ["contract", "internet"],
                          model_frames(task, ref_scores, ref_y),
                          model_frames(task, cur_scores, cur_y), tmp_path, 1000, 0, 0.3,
                          task)  # fmt: skip
    text = (tmp_path / "model_report.json").read_text()
    if kind == "multiclass":
        assert "Accuracy" in text and "F1ByLabel" in text and "RocAuc" in text
    else:
        assert "RMSE" in text and "MAE" in text and "R2Score" in text
    assert set(files.sample_verdicts) >= {PREDICTION_COLUMN, TARGET_COLUMN}


# --- feature kinds ------------------------------------------------------------------------


def test_booleans_and_dates_arriving_as_text_are_normalised() -> None:
    encoder = FeatureEncoder(columns=("amount", "member", "joined", "plan"), categorical=("plan",),
                             vocabularies={"plan": ("a", "b")},
                             kinds={"amount": "numeric", "member": "boolean",
                                    "joined": "datetime", "plan": "categorical"})  # fmt: skip
    model = TabularModel(encoder, None, "xgboost", REGRESSION)
    assert numeric_columns(model) == ["amount"]
    training = pd.DataFrame({"amount": [1, 2], "member": [True, False],
                             "joined": pd.to_datetime(["2026-01-01", "2026-01-02"]),
                             "plan": ["a", "b"]})  # fmt: skip
    captured = pd.DataFrame({"amount": [1.0, None], "member": ["True", "false"],
                             "joined": ["2026-01-01T00:00:00", "2026-01-02"],
                             "plan": ["a", "b"]})  # fmt: skip
    left, right = normalise(training, model), normalise(captured, model)
    pd.testing.assert_series_equal(left["member"], right["member"])
    pd.testing.assert_series_equal(left["joined"], right["joined"])
    assert left["member"].tolist() == [1.0, 0.0]
    assert drift_view(right)["joined"].diff().iloc[1] == 86400.0
    np.testing.assert_array_equal(encoder.encode_frame(left), encoder.encode_frame(training))
    odd = normalise(pd.DataFrame({"amount": ["x"], "member": ["perhaps"], "joined": ["soon"],
                                  "plan": [None]}), model)  # fmt: skip
    assert odd[["amount", "member", "joined"]].isna().all(axis=None)
