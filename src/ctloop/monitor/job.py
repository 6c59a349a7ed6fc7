"""One monitor job: champion + its training data vs current traffic -> report, decision, retrain.

Reference: the rows the champion was trained on (artifact of its parent training run), scored by
the champion for the prediction-drift reference (`reference.py`). Current: captured requests in
the window (a local folder or s3:// prefix in Data Capture format) or a CSV/Parquet file
(`current.py`). From a capture, every line is counted but only a seeded random sample of lines
giving about `monitor.decode_rows` rows is decoded (`capture.read_capture`; a large capture in
a worker process while this one imports Evidently); the tags say so. Verdicts come from
Evidently's tests on all decoded rows (`drift.py`); the HTML/JSON report is Evidently's presets
on a seeded sample of `monitor.sample_rows` rows (`report.py`). The decision is about harm
(`decide.py`): the champion's metrics on the window, realised from labels or estimated from
its calibrated probabilities (`performance.py`, `estimate.py`), against their level on its
holdout (and, for a cross-validated champion, on its out-of-fold scores too: a small table's
holdout alone is too few rows to set a level by); the prediction's move is an effect size;
feature drift explains. Everything lands in one run of `<name>-monitoring`; retraining is
`retrain.py`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctloop import registry, tracking
from ctloop.config import Config
from ctloop.model import TabularModel
from ctloop.monitor import decide as dec
from ctloop.monitor import performance as perf
from ctloop.monitor.current import Current, current_window, decoder_pool, read_current
from ctloop.monitor.drift import (
    ColumnDrift,
    column_drift,
    dataset_drift,
    effect_size,
)
from ctloop.monitor.estimate import Calibrator, estimate
from ctloop.monitor.estimate_loss import LossEstimator
from ctloop.monitor.frames import (
    drift_view,
    encode_labels,
    label_names,
    normalise,
    schema_check,
    target_and_time,
)
from ctloop.monitor.quality import predict, quality
from ctloop.monitor.reference import load_champion, load_holdout, load_reference
from ctloop.monitor.report import (
    DATA_REPORT,
    MODEL_REPORT,
    TARGET_COLUMN,
    build_reports,
    model_frames,
)
from ctloop.monitor.result import MonitorError, MonitorResult
from ctloop.monitor.retrain import maybe_retrain
from ctloop.tasks import Task, TaskError

__all__ = ["MonitorError", "MonitorResult", "run_monitor"]

log = logging.getLogger(__name__)


class _Clock:
    """Seconds per step of the job, as `MonitorResult.timings`."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.last, 3)
        self.last = now


@dataclass
class _Evidence:
    """What the decision and the reports are made from."""

    columns: list[str]
    categorical: list[str]
    quality_report: dec.QualityReport
    ref_frame: pd.DataFrame  # the reference rows, normalised
    drift_cols: tuple[ColumnDrift, ...] = ()
    prediction: ColumnDrift | None = None
    pred_ref: pd.DataFrame | None = None  # prediction reference: holdout, else training rows
    pred_ref_frame: pd.DataFrame | None = None  # pred_ref normalised for the champion
    pred_ref_is_holdout: bool = False  # rows the champion never trained on
    ref_scores: np.ndarray | None = None  # the task's scores on pred_ref
    cur_scores: np.ndarray | None = None
    ref_labels: np.ndarray | None = None  # the task's label codes of pred_ref, if it has them
    # A cross-validated champion's out-of-fold labels and scores (training + validation rows)
    out_of_fold: tuple[np.ndarray, np.ndarray] | None = None
    target: ColumnDrift | None = None  # current labels vs ref_labels
    realised: list[perf.MetricCheck] = field(default_factory=list)
    estimated: list[perf.MetricCheck] = field(default_factory=list)


def run_monitor(
    cfg: Config,
    current: str | None = None,
    since: str | None = None,
    until: str | None = None,
    retrain: bool = False,
    ground_truth: str | None = None,
) -> MonitorResult:
    """Run one monitor job end to end; see the module docstring."""
    clock = _Clock()
    location = current or cfg.serve.capture.directory
    pool = decoder_pool(location)
    try:
        return _run_monitor(cfg, location, since, until, retrain, ground_truth, pool, clock)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _run_monitor(cfg: Config, location: str, since: str | None, until: str | None,
                 retrain: bool, ground_truth: str | None, pool,
                 clock: _Clock) -> MonitorResult:  # fmt: skip
    champion, model, parent_run_id = load_champion(cfg)
    task = model.task
    problem = dec.check_min_quality(cfg.monitor.thresholds.min_quality, task.kind,
                                    task.metric_names)  # fmt: skip
    if problem:
        raise MonitorError(problem)
    tolerances = _tolerances(cfg, task)
    reference = load_reference(parent_run_id, champion.version)
    schema_check(reference, model, champion.version, f"reference of v{champion.version}")
    clock.lap("load_champion_and_reference")

    since_dt, until_dt = current_window(location, since, until, champion)
    cur = read_current(cfg, location, since_dt, until_dt, model, champion.version,
                       ground_truth, pool)  # fmt: skip
    clock.lap("read_current")
    window = (_window_text(since_dt), _window_text(until_dt))
    result = MonitorResult(dec.NO_DATA, [], champion.version, window, location,
                           task=task.kind, timings=clock.timings)  # fmt: skip
    result.rows = {"reference": len(reference), "current": len(cur.frame), **cur.rows}

    evidence = _gather_evidence(cfg, model, reference, parent_run_id, cur, result, clock)
    if len(cur.frame):
        _performance(cfg, model, tolerances, cur, evidence, result)
        clock.lap("performance")
    _decide(cfg, model, evidence, len(cur.frame), result)
    run_id = _log_monitor_run(cfg, model, champion, parent_run_id, cur, evidence, result, clock)
    # The monitor run is complete here; retraining is recorded on it by tags.
    retrain_tags = maybe_retrain(cfg, result, retrain, cur, parent_run_id, run_id, champion)
    tracking.set_run_tags(run_id, retrain_tags)
    if result.retrain_run_id:
        clock.timings["retrain"] = round(time.perf_counter() - clock.last, 3)
    clock.timings["total"] = round(time.perf_counter() - clock.started, 3)
    log.info("monitor: %s", result.summary())
    return result


def _gather_evidence(cfg: Config, model: TabularModel, reference: pd.DataFrame,
                     parent_run_id: str, cur: Current, result: MonitorResult,
                     clock: _Clock) -> _Evidence:  # fmt: skip
    """Data quality of the current rows, then (if any) feature drift and prediction drift."""
    columns = list(model.feature_columns)
    categorical = [c for c in columns if c in model.encoder.vocabularies]
    quality_report = dec.data_quality(cur.frame, columns, cfg.monitor, reference=reference)
    result.missing_share = {k: round(v, 6) for k, v in quality_report.missing_share.items()}
    evidence = _Evidence(columns, categorical, quality_report, normalise(reference, model))
    if len(cur.frame):
        testable = [c for c in columns if c not in quality_report.empty_columns]
        evidence.drift_cols = dataset_drift(drift_view(evidence.ref_frame), drift_view(cur.frame),
                                            testable, categorical)
        clock.lap("drift_tests")
        _score_predictions(cfg, model, reference, parent_run_id, cur, evidence, result)
        clock.lap("predictions_and_quality")
    return evidence


def _score_predictions(cfg: Config, model: TabularModel, reference: pd.DataFrame,
                       parent_run_id: str, cur: Current, evidence: _Evidence,
                       result: MonitorResult) -> None:  # fmt: skip
    """Champion scores on the holdout (else training rows) vs current: prediction drift on
    the task's drift signal; where labelled, the task's quality and target drift."""
    task = model.task
    holdout = load_holdout(parent_run_id)
    evidence.pred_ref_is_holdout = holdout is not None and not holdout.empty
    evidence.pred_ref = holdout if evidence.pred_ref_is_holdout else reference
    evidence.pred_ref_frame = normalise(evidence.pred_ref, model)
    evidence.ref_scores = predict(model, evidence.pred_ref_frame, "reference")
    result.rows["prediction_reference"] = len(evidence.pred_ref)
    evidence.cur_scores = cur.scores if cur.scores is not None else predict(
        model, cur.frame, "current")  # fmt: skip
    ref_signal, kind = task.drift_signal(evidence.ref_scores)
    cur_signal, _ = task.drift_signal(evidence.cur_scores)
    evidence.prediction = effect_size(ref_signal, cur_signal, kind,
                                      cfg.monitor.thresholds.prediction_effect)
    result.quality, result.rows["labelled"] = quality(cur.labels, evidence.cur_scores, task)
    target = target_and_time(cfg)[0]
    if target in evidence.pred_ref.columns:
        evidence.ref_labels = encode_labels(evidence.pred_ref[target], task)
    evidence.target = _target_drift(task, evidence.ref_labels, cur.labels)
    evidence.out_of_fold = tracking.load_out_of_fold(parent_run_id)
    if evidence.target is not None:
        t = evidence.target
        result.target_drift = {"score": t.score, "method": t.method, "threshold": t.threshold,
                               "drifted": t.drifted}  # fmt: skip


def _target_drift(task: Task, ref_labels: np.ndarray | None,
                  cur_labels: np.ndarray | None) -> ColumnDrift | None:  # fmt: skip
    """Current labels vs the holdout's (categorical for classification, numeric for
    regression), when both sides have some; None otherwise. Reported, decides nothing."""
    if ref_labels is None or cur_labels is None:
        return None
    ref, cur = ref_labels[~np.isnan(ref_labels)], cur_labels[~np.isnan(cur_labels)]
    if not len(ref) or not len(cur):
        return None
    kind = "num" if task.kind == "regression" else "cat"
    return column_drift(label_names(ref, task), label_names(cur, task), kind, TARGET_COLUMN)


def _tolerances(cfg: Config, task: Task) -> dict[str, float]:
    """The metrics that decide and their tolerances (MonitorError on a key the task lacks)."""
    try:
        primary = task.primary_metric(cfg.training.primary_metric)
        return perf.tolerances(task, primary, cfg.monitor.thresholds.tolerance)
    except TaskError as exc:
        raise MonitorError(str(exc)) from None


def _performance(cfg: Config, model: TabularModel, tolerances: dict[str, float],
                 cur: Current, evidence: _Evidence,
                 result: MonitorResult) -> None:  # fmt: skip
    """The champion's metrics on the window vs its expected level: realised where enough rows
    are labelled, estimated otherwise (`_estimates`). The level and the calibration come from
    the holdout, joined by the out-of-fold rows where the champion was cross-validated (their
    models saw 1 - 1/k of the rows: a hair pessimistic, against a 100-row holdout's noise of
    several AUC points)."""
    task = model.task
    th = cfg.monitor.thresholds
    ref_scores, cur_scores = evidence.ref_scores, evidence.cur_scores
    if evidence.ref_labels is None or ref_scores is None or cur_scores is None:
        return
    known_ref = ~np.isnan(evidence.ref_labels)
    y_ref, s_ref = evidence.ref_labels[known_ref], ref_scores[known_ref]
    if evidence.out_of_fold is not None:
        y_oof, s_oof = evidence.out_of_fold
        y_ref, s_ref = np.concatenate([y_ref, y_oof]), np.concatenate([s_ref, s_oof])
    if task.kind != "regression":
        y_ref = y_ref.astype(np.int64)
    if cur.labels is not None and result.rows.get("labelled", 0) >= th.min_labels:
        known = ~np.isnan(cur.labels)
        y_cur = cur.labels[known]
        if task.kind != "regression":
            y_cur = y_cur.astype(np.int64)
        evidence.realised = perf.labelled_checks(task, tolerances, y_ref, s_ref, y_cur,
                                                 cur_scores[known], th.confidence,
                                                 seed=cfg.split.seed)  # fmt: skip
    expected, estimated = _estimates(model, tolerances, cur, evidence, y_ref, s_ref, known_ref,
                                     cfg.split.seed)
    if expected:
        evidence.estimated = perf.estimated_checks(tolerances, expected, estimated,
                                                   task.lower_is_better)  # fmt: skip
    result.performance = {
        "tolerance": tolerances, "confidence": th.confidence,
        "expected_rows": len(y_ref),
        "expected_from": "holdout" if evidence.out_of_fold is None else "holdout+out_of_fold",
        "realised": [c.to_dict() for c in evidence.realised],
        "estimated": [c.to_dict() for c in evidence.estimated],
    }  # fmt: skip


def _estimates(model: TabularModel, tolerances: dict[str, float], cur: Current,
               evidence: _Evidence, y_ref: np.ndarray, s_ref: np.ndarray,
               known_ref: np.ndarray, seed: int) -> tuple[dict[str, float], dict[str, float]]:
    """(the label-free estimate on the reference rows, the same on the window), or two empty
    dicts. Classification: CBPE, calibrated on holdout and out-of-fold scores. Regression:
    direct loss estimation, which learns from the features, so from the holdout's rows alone
    (never from rows the champion trained on)."""
    task, cur_scores = model.task, evidence.cur_scores
    if task.kind != "regression":
        calibrator = Calibrator.fit(task, y_ref, s_ref)
        if calibrator is None:
            return {}, {}
        return (estimate(task, s_ref, calibrator(s_ref)),
                estimate(task, cur_scores, calibrator(cur_scores)))
    if not evidence.pred_ref_is_holdout or evidence.ref_labels is None:
        return {}, {}
    holdout = evidence.pred_ref_frame.loc[known_ref]
    losses = LossEstimator.fit(model.encode(holdout), evidence.ref_scores[known_ref],
                               evidence.ref_labels[known_ref],
                               model.encoder.categorical_indices, tolerances, seed)
    if losses is None:
        return {}, {}
    return losses.expected, losses.estimate(model.encode(cur.frame), cur_scores)


def _decide(cfg: Config, model: TabularModel, evidence: _Evidence, n: int,
            result: MonitorResult) -> None:  # fmt: skip
    """The decision, its rule and reasons, with the figures they rest on, into `result`."""
    drift_cols, prediction = evidence.drift_cols, evidence.prediction
    signals = dec.Signals(n, drift_cols, prediction, evidence.realised, evidence.estimated,
                          result.quality, result.rows.get("labelled", 0),
                          evidence.quality_report.problems)  # fmt: skip
    verdict = dec.decide(signals, cfg.monitor, lower_is_better=model.task.lower_is_better)
    result.decision, result.rule, result.reasons = verdict.decision, verdict.rule, verdict.reasons
    result.drifted_columns = [c.column for c in drift_cols if c.drifted]
    result.drift_share = len(result.drifted_columns) / len(drift_cols) if drift_cols else 0.0
    result.feature_scores = {c.column: c.score for c in drift_cols}
    result.feature_methods = {c.column: c.method for c in drift_cols}
    if prediction is not None:
        result.prediction_drift = {"score": prediction.score, "method": prediction.method,
                                   "threshold": prediction.threshold,
                                   "drifted": prediction.drifted}  # fmt: skip


def _run_tags(cfg: Config, result: MonitorResult, champion: registry.ModelVersion,
              parent_run_id: str) -> dict[str, str]:  # fmt: skip
    return {
        "ctloop.model_name": cfg.name,
        "ctloop.model_version": str(champion.version),
        "ctloop.task": result.task or "",
        "ctloop.reference_run_id": parent_run_id,
        "ctloop.current_source": result.source,
        "ctloop.window_start": result.window[0] or "",
        "ctloop.window_end": result.window[1] or "",
        "ctloop.decision": result.decision,
        "ctloop.rule": result.rule,
        "ctloop.reasons": "; ".join(result.reasons),
        "ctloop.drifted_columns": ",".join(result.drifted_columns),
        "ctloop.malformed_lines": str(result.rows.get("malformed_lines", 0)),
        "ctloop.current_sample": _sample_note(result.rows, cfg.split.seed),
        **{f"ctloop.rows.{k}": str(v) for k, v in result.rows.items()},
    }


def _run_metrics(result: MonitorResult, prediction: ColumnDrift | None,
                 target: ColumnDrift | None = None) -> dict[str, float]:  # fmt: skip
    metrics = {"drift_share": result.drift_share,
               "drifted_columns": float(len(result.drifted_columns)),
               **{f"drift_score.{k}": v for k, v in result.feature_scores.items()},
               **{f"quality.{k}": v for k, v in result.quality.items()},
               **{f"missing_share.{k}": v for k, v in result.missing_share.items()},
               **{f"rows.{k}": float(v) for k, v in result.rows.items()}}  # fmt: skip
    if prediction is not None:
        metrics["prediction_drift_score"] = prediction.score
        metrics["prediction_drifted"] = float(prediction.drifted)
    if target is not None:
        metrics["target_drift_score"] = target.score
        metrics["target_drifted"] = float(target.drifted)
    for check in result.performance.get("realised", []):
        m = check["metric"]
        metrics |= {f"expected.{m}": check["expected"], f"realised.{m}": check["observed"],
                    f"realised_drop.{m}": check["drop"], f"realised_drop_lower.{m}": check["lower"]}
    for check in result.performance.get("estimated", []):
        m = check["metric"]
        metrics |= {f"estimated_expected.{m}": check["expected"],
                    f"estimated.{m}": check["observed"], f"estimated_drop.{m}": check["drop"]}
    metrics["retrain_warranted"] = float(result.decision == dec.RETRAIN)
    return metrics


def _run_params(cfg: Config, result: MonitorResult) -> dict[str, Any]:
    th = cfg.monitor.thresholds
    return {"drift_share_threshold": th.drift_share,
            "retrain_on_feature_drift": th.retrain_on_feature_drift,
            "prediction_drift": th.prediction_drift,
            "prediction_effect": th.prediction_effect,
            "tolerance": ",".join(f"{k}:{v:g}" for k, v in
                                  result.performance.get("tolerance", {}).items()),
            "confidence": th.confidence, "min_labels": th.min_labels,
            "min_quality": dict(cfg.monitor.thresholds.min_quality),
            "sample_rows": cfg.monitor.sample_rows, "min_rows": cfg.monitor.min_rows,
            "decode_rows": cfg.monitor.decode_rows,
            "methods": ",".join(f"{k}:{v}" for k, v in
                                result.feature_methods.items())}  # fmt: skip


def _log_monitor_run(cfg: Config, model: TabularModel, champion: registry.ModelVersion,
                     parent_run_id: str, cur: Current, evidence: _Evidence,
                     result: MonitorResult, clock: _Clock) -> str:  # fmt: skip
    """One run of `<name>-monitoring`: tags, metrics, params and (with rows) the reports."""
    tags = _run_tags(cfg, result, champion, parent_run_id)
    metrics = _run_metrics(result, evidence.prediction, evidence.target)
    params = _run_params(cfg, result)
    run_name = f"monitor-v{champion.version}-{time.strftime('%Y%m%d-%H%M%S')}"
    with (tempfile.TemporaryDirectory(prefix="ctloop-monitor-") as tmp,
          tracking.monitoring_run(cfg.monitoring_experiment, run_name, tags) as run):  # fmt: skip
        result.monitor_run_id = run.run_id
        run.log(metrics, params, {})
        if len(cur.frame):
            _log_reports(cfg, model, run, cur, evidence, result, Path(tmp) / "report", clock)
    return run.run_id


def _log_reports(cfg: Config, model: TabularModel, run, cur: Current, evidence: _Evidence,
                 result: MonitorResult, folder: Path, clock: _Clock) -> None:  # fmt: skip
    """Evidently's data and model reports on samples, logged as the run's `report` artifacts."""
    columns, categorical = evidence.columns, evidence.categorical
    empty = evidence.quality_report.empty_columns
    model_ref, model_cur = _model_frames(cfg, model, cur, evidence, result)
    files = build_reports(drift_view(evidence.ref_frame), drift_view(cur.frame),
                          [c for c in columns if c not in categorical and c not in empty],
                          [c for c in categorical if c not in empty],
                          model_ref, model_cur, folder,
                          cfg.monitor.sample_rows, cfg.split.seed,
                          cfg.monitor.thresholds.drift_share, model.task)  # fmt: skip
    clock.lap("evidently_report")
    folder_uri = run.log_artifacts(folder, "report")
    result.report_html = f"{folder_uri}/{DATA_REPORT}.html"
    result.report_json = f"{folder_uri}/{DATA_REPORT}.json"
    result.model_report_html = f"{folder_uri}/{MODEL_REPORT}.html"
    # Evidently's prediction-drift verdict is a test, ours an effect size: not compared.
    full = {c.column: c.drifted for c in evidence.drift_cols}
    if evidence.target is not None:
        full[TARGET_COLUMN] = evidence.target.drifted
    disagree = sorted(c for c, v in files.sample_verdicts.items()
                      if c in full and v != full[c])  # fmt: skip
    run.log({}, {"report_sample_rows": files.sample_rows},
            {"ctloop.report_sample_disagreements": ",".join(disagree)})  # fmt: skip
    clock.lap("log_artifacts")


def _model_frames(cfg: Config, model: TabularModel, cur: Current, evidence: _Evidence,
                  result: MonitorResult) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Predictions (and, when quality was measured, the labels) for the model report."""
    labelled = bool(result.quality) and evidence.ref_labels is not None
    return (model_frames(model.task, evidence.ref_scores,
                         evidence.ref_labels if labelled else None),
            model_frames(model.task, evidence.cur_scores,
                         cur.labels if labelled else None))  # fmt: skip


def _sample_note(rows: dict[str, int], seed: int) -> str:
    """How the current rows were obtained: every capture line, or a seeded sample of them."""
    lines, decoded = rows.get("capture_lines"), rows.get("decoded_lines")
    if lines is None or decoded is None or decoded >= lines:
        return "all"
    return (f"decoded a seeded (seed {seed}) random sample of {decoded} of {lines} capture "
            "lines; requests, malformed and outside-window counts are among the sampled lines")


def _window_text(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None
