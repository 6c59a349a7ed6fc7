"""Decision branches and loop-safety rules."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctloop.config import MonitorConfig
from ctloop.monitor import decide as dec
from ctloop.monitor.drift import ColumnDrift
from ctloop.tasks import BinaryTask, MulticlassTask, RegressionTask

NONE = frozenset()  # no lower-is-better metrics
CFG = MonitorConfig()  # drift_share 0.3, prediction drift on, min_rows 200


def _cols(*drifted: bool) -> list[ColumnDrift]:
    return [ColumnDrift(f"c{i}", "num", "wasserstein", 0.2 if d else 0.01, 0.1, d)
            for i, d in enumerate(drifted)]  # fmt: skip


PRED_OK = ColumnDrift("prediction", "num", "wasserstein", 0.02, 0.1, False)
PRED_DRIFT = ColumnDrift("prediction", "num", "wasserstein", 0.4, 0.1, True)


def test_no_drift_below_share() -> None:
    decision, reasons = dec.decide(500, _cols(True, False, False, False), PRED_OK, {}, [],
                                   CFG, NONE)  # fmt: skip
    assert decision == dec.NO_DRIFT and "1/4 features drifted" in reasons[0]


def test_drift_at_share_names_columns() -> None:
    decision, reasons = dec.decide(500, _cols(True, False, True, False), PRED_OK, {}, [],
                                   CFG, NONE)  # fmt: skip
    assert decision == dec.DRIFT and reasons == ["2/4 features drifted (50% >= 30%): c0, c2"]


def test_prediction_drift_alone_and_when_disabled() -> None:
    decision, reasons = dec.decide(500, _cols(False, False), PRED_DRIFT, {}, [], CFG, NONE)
    assert decision == dec.DRIFT and reasons[0].startswith("prediction drifted")
    off = CFG.model_copy(update={"thresholds": CFG.thresholds.model_copy(
        update={"prediction_drift": False})})  # fmt: skip
    assert dec.decide(500, _cols(False, False), PRED_DRIFT, {}, [], off, NONE)[0] == dec.NO_DRIFT


def test_quality_thresholds_floor_and_ceiling() -> None:
    cfg = CFG.model_copy(update={"thresholds": CFG.thresholds.model_copy(
        update={"min_quality": {"roc_auc": 0.8, "log_loss": 0.5}})})  # fmt: skip
    lower = BinaryTask.lower_is_better
    ok = dec.decide(500, _cols(False), PRED_OK, {"roc_auc": 0.85, "log_loss": 0.4}, [], cfg,
                    lower_is_better=lower)  # fmt: skip
    assert ok[0] == dec.NO_DRIFT
    decision, reasons = dec.decide(500, _cols(False), PRED_OK,
                                   {"roc_auc": 0.7, "log_loss": 0.6}, [], cfg,
                                   lower_is_better=lower)  # fmt: skip
    assert decision == dec.DRIFT
    assert reasons == ["roc_auc 0.7000 below the minimum 0.8",
                       "log_loss 0.6000 above the maximum 0.5"]  # fmt: skip
    # without labels the quality rule cannot fire
    assert dec.decide(500, _cols(False), PRED_OK, {}, [], cfg, lower)[0] == dec.NO_DRIFT


def test_no_data_and_alert_outrank_drift() -> None:
    assert dec.decide(0, [], None, {}, [], CFG, NONE)[0] == dec.NO_DATA
    decision, reasons = dec.decide(500, _cols(True, True), PRED_DRIFT, {}, ["broken"], CFG,
                                   NONE)  # fmt: skip
    assert decision == dec.ALERT and reasons[0] == "broken" and len(reasons) == 3


def test_data_quality_veto_rules() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=300), "b": np.nan, "c": rng.normal(size=300)})
    frame.loc[:200, "c"] = np.nan  # 67% missing > 50%
    report = dec.data_quality(frame, ["a", "b", "c"], CFG)
    assert report.empty_columns == ("b",)
    assert report.problems == ("empty feature column(s): b",
                               "missing values above monitor.max_missing_share (50%): c (67%)")
    few = dec.data_quality(frame[["a"]].head(50), ["a"], CFG)
    assert few.problems == ("only 50 current rows, need at least 200 (monitor.min_rows)",)
    assert dec.data_quality(frame[["a"]], ["a"], CFG).problems == ()


def test_cooldown_and_daily_cap() -> None:
    now = 10 * dec.DAY_MS
    minute = 60_000
    assert dec.retrain_allowed(now, [], CFG) == (True, "allowed")
    allowed, why = dec.retrain_allowed(now, [now - 10 * minute], CFG)
    assert not allowed and why.startswith("cooldown: last retrain 10.0 min ago")
    assert dec.retrain_allowed(now, [now - 31 * minute], CFG)[0]
    four = [now - h * 60 * minute for h in (1, 3, 5, 7)]
    allowed, why = dec.retrain_allowed(now, four, CFG)
    assert not allowed and why.startswith("cap reached: 4 retrain(s)")
    # retrains older than 24 h do not count towards the cap
    assert dec.retrain_allowed(now, [now - 25 * 60 * minute] * 9, CFG)[0]
    never = CFG.model_copy(update={"max_retrains_per_day": 0})
    assert not dec.retrain_allowed(now, [], never)[0]


def test_lower_is_better_comes_from_the_task() -> None:
    cfg = CFG.model_copy(update={"thresholds": CFG.thresholds.model_copy(
        update={"min_quality": {"rmse": 10.0, "r2": 0.5}})})  # fmt: skip
    quality = {"rmse": 12.0, "r2": 0.4}
    decision, reasons = dec.decide(500, _cols(False), PRED_OK, quality, [], cfg,
                                   RegressionTask.lower_is_better)  # fmt: skip
    assert decision == dec.DRIFT
    assert reasons == ["rmse 12.0000 above the maximum 10.0", "r2 0.4000 below the minimum 0.5"]


def test_min_quality_keys_must_be_metrics_of_the_task() -> None:
    assert dec.check_min_quality({"rmse": 1.0}, "regression", RegressionTask.metric_names) is None
    problem = dec.check_min_quality({"roc_auc": 0.7}, "regression", RegressionTask.metric_names)
    assert problem == ("monitor.thresholds.min_quality.roc_auc: 'roc_auc' is not a regression "
                       "metric (the champion's task is regression; choose from rmse, mae, r2, "
                       "mape)")  # fmt: skip
    multiclass = dec.check_min_quality({"f1": 0.7}, "multiclass", MulticlassTask.metric_names)
    assert multiclass and "f1" in multiclass and "accuracy, f1_macro" in multiclass
