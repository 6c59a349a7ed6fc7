"""Tasks: inference from the target, metrics against scikit-learn, outputs, the bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from ctloop import tasks
from ctloop.metrics import paired_bootstrap
from ctloop.tasks import BinaryTask, MulticlassTask, RegressionTask, TaskError, resolve_task

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(("values", "kind", "why"), [
    (["Yes", "No", "No", "Yes"] * 30, "binary", "2 distinct values"),
    ([True, False] * 60, "binary", "2 distinct values"),
    (["Adelie", "Gentoo", "Chinstrap"] * 40, "multiclass", "3 distinct text values"),
    (list(range(4)) * 100, "multiclass", "4 distinct integer values"),
    (RNG.normal(100, 10, 200).tolist(), "regression", "fractional"),
    (RNG.integers(0, 500, 400).tolist(), "regression", "distinct integer values"),
    (["1.5", "2.25", "3.0", "0.5"] * 30, "regression", "fractional"),
])
def test_the_task_is_inferred_from_the_target_and_the_reason_said(values, kind, why):
    positive = "Yes" if values[0] == "Yes" else None
    task, reason = resolve_task(pd.Series(values), None, positive)
    assert task.kind == kind and why in reason and "set data.task to override" in reason


def test_a_declared_task_wins_and_contradictions_are_clear_errors():
    assert resolve_task(pd.Series([1, 2, 3] * 10), "regression")[0].kind == "regression"
    assert resolve_task(pd.Series([0, 1] * 10), "multiclass")[0].kind == "multiclass"
    with pytest.raises(TaskError, match="binary but the target has 3 distinct values"):
        resolve_task(pd.Series(["a", "b", "c"] * 10), "binary")
    with pytest.raises(TaskError, match="regression but the target is not numeric"):
        resolve_task(pd.Series(["a", "b", "c"] * 10), "regression")
    with pytest.raises(TaskError, match="positive_label is only for binary"):
        resolve_task(pd.Series(["a", "b", "c"] * 10), None, "a")


def test_binary_labels_need_a_positive_label_unless_it_is_obvious():
    assert resolve_task(pd.Series([0, 1, 1]), None)[0].positive_label == 1
    assert resolve_task(pd.Series([True, False]), None)[0].positive_label is True
    assert resolve_task(pd.Series(["true", "false"]), None)[0].positive_label == "true"
    task = resolve_task(pd.Series(["1", "2", "1"]), "binary", 2)[0]
    assert (task.positive_label, task.negative_label) == ("2", "1")
    with pytest.raises(TaskError, match=r"set data\.positive_label"):
        resolve_task(pd.Series(["Yes", "No"]), None)
    with pytest.raises(TaskError, match="'maybe' does not occur"):
        resolve_task(pd.Series(["Yes", "No"]), None, "maybe")


def test_labels_read_from_a_csv_are_shown_as_written():
    """pandas reads 0/1 and 3/5 columns as numpy integers; a message shows `0`, not
    `np.int64(0)`."""
    task, reason = resolve_task(pd.Series(np.array([0, 1, 1])), None)
    assert "2 distinct values (0, 1)" in reason
    assert task.describe().startswith("binary (1 positive vs 0,")
    with pytest.raises(TaskError, match=r"binary target with labels 3, 5: set"):
        resolve_task(pd.Series(np.array([3, 5, 5])), "binary")
    multiclass = resolve_task(pd.Series(np.array([2.0, 0.0, 1.0] * 20)), None)[0]
    assert multiclass.describe() == "multiclass (3 classes: 0.0, 1.0, 2.0)"


def test_too_many_text_classes_is_an_error_that_says_what_to_do():
    with pytest.raises(TaskError, match=r"too many classes; set data\.task"):
        resolve_task(pd.Series([f"name-{i}" for i in range(300)]), None)


def test_binary_metrics_match_scikit_learn():
    y = RNG.integers(0, 2, 500)
    p = np.clip(0.3 * y + 0.7 * RNG.random(500), 0, 1)
    m = BinaryTask(1, 0, 0.5).metrics(y, p)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert m["f1"] == pytest.approx(skm.f1_score(y, p >= 0.5))


def test_multiclass_metrics_match_scikit_learn():
    y = RNG.integers(0, 3, 600)
    raw = RNG.random((600, 3)) + np.eye(3)[y]
    p = raw / raw.sum(axis=1, keepdims=True)
    m = MulticlassTask(("a", "b", "c")).metrics(y, p)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p.argmax(axis=1)))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, p.argmax(axis=1), average="macro"))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr",
                                                           average="macro"))


def test_regression_metrics_match_scikit_learn_and_mape_needs_positive_targets():
    y = RNG.normal(50, 10, 400)
    pred = y + RNG.normal(0, 3, 400)
    m = RegressionTask().metrics(y, pred)
    assert m["rmse"] == pytest.approx(skm.root_mean_squared_error(y, pred))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert m["r2"] == pytest.approx(skm.r2_score(y, pred))
    assert m["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y, pred))
    assert "mape" not in RegressionTask().metrics(y - 60, pred)


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2", "mape"])
def test_every_regression_sampler_equals_the_weighted_metric(metric):
    y = RNG.uniform(1, 10, 300)
    pred = y + RNG.normal(0, 1, 300)
    counts = RNG.integers(0, 3, (4, 300)).astype(float)
    sampled = RegressionTask().sampler(metric, y, pred)(counts)
    reference = {"rmse": skm.root_mean_squared_error, "mae": skm.mean_absolute_error,
                 "r2": skm.r2_score, "mape": skm.mean_absolute_percentage_error}[metric]
    expected = [reference(y, pred, sample_weight=c) for c in counts]
    np.testing.assert_allclose(sampled, expected, rtol=1e-9)


@pytest.mark.parametrize("metric", ["log_loss", "accuracy", "roc_auc", "f1_macro"])
def test_every_multiclass_sampler_equals_the_metric_on_the_whole_set(metric):
    y = RNG.integers(0, 3, 300)
    raw = RNG.random((300, 3)) + np.eye(3)[y]
    p = raw / raw.sum(axis=1, keepdims=True)
    task = MulticlassTask((0, 1, 2))
    once = task.sampler(metric, y, p)(np.ones((1, 300)))[0]
    assert once == pytest.approx(task.metrics(y, p)[metric])


def test_the_bootstrap_is_direction_aware():
    """Lower rmse is better: a closer model shows a positive improvement, and vice versa."""
    y = RNG.normal(0, 1, 1000)
    close, far = y + RNG.normal(0, 0.2, 1000), y + RNG.normal(0, 0.8, 1000)
    task = RegressionTask()
    better = paired_bootstrap(task.sampler("rmse", y, close), task.sampler("rmse", y, far),
                              len(y), True, 200)
    worse = paired_bootstrap(task.sampler("rmse", y, far), task.sampler("rmse", y, close),
                             len(y), True, 200)
    assert better["lower_one_sided"] > 0 > worse["upper"]
    r2 = paired_bootstrap(task.sampler("r2", y, close), task.sampler("r2", y, far), len(y),
                          False, 200)
    assert r2["lower_one_sided"] > 0


def test_output_formats_per_task_and_reading_them_back():
    binary = BinaryTask("Yes", "No", 0.4)
    p = np.array([0.2, 0.5])
    assert binary.output_records(p) == [{"probability": 0.2, "label": "No"},
                                        {"probability": 0.5, "label": "Yes"}]
    assert list(binary.output_frame(p).columns) == ["probability", "label"]
    multi = MulticlassTask(("Adelie", "Gentoo"))
    probs = np.array([[0.9, 0.1], [0.3, 0.7]])
    records = multi.output_records(probs)
    assert records[1] == {"probability_Adelie": 0.3, "probability_Gentoo": 0.7,
                          "label": "Gentoo"}
    assert list(multi.output_frame(probs).columns) == [
        "probability_Adelie", "probability_Gentoo", "label"]
    np.testing.assert_allclose(multi.scores_from_records(records), probs)
    regression = RegressionTask()
    assert regression.output_records(np.array([1.5])) == [{"prediction": 1.5}]
    assert regression.output_types() == {"prediction": "double"}
    assert binary.output_types() == {"probability": "double", "label": "string"}
    assert BinaryTask(1, 0).output_types()["label"] == "long"
    with pytest.raises(TaskError):
        multi.scores_from_records([{"probability": 0.4}])


@pytest.mark.parametrize("task", [BinaryTask("y", "n", 0.3), MulticlassTask((1, 2, 3)),
                                  RegressionTask()])
def test_tasks_round_trip_through_json(task):
    assert tasks.from_json(task.to_json()) == task


def test_served_scores_are_checked_per_task():
    assert BinaryTask(1, 0).check_scores(np.array([0.1, 1.2]), 2) is not None
    assert MulticlassTask((0, 1)).check_scores(np.array([[0.5, 0.6]]), 1) is not None
    assert MulticlassTask((0, 1)).check_scores(np.array([[0.4, 0.6]]), 1) is None
    assert RegressionTask().check_scores(np.array([np.nan]), 1) is not None
