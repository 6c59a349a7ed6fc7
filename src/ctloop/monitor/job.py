"""One monitor job: champion + its training data vs current traffic -> report, decision, retrain.

Reference: the rows the champion was trained on (artifact of its parent training run), scored by
the champion for the prediction-drift reference. Current: captured requests in the window (a
local folder or s3:// prefix in Data Capture format) or a CSV/Parquet file. From a capture,
every line is counted but only a seeded random sample of lines giving about
`monitor.decode_rows` rows is decoded (`capture.read_capture`; a large capture in a worker
process while this one imports Evidently); the tags say so. Verdicts come from Evidently's
tests on all decoded rows (`drift.py`); the HTML/JSON report is Evidently's presets on a
seeded sample of `monitor.sample_rows` rows (`report.py`). Everything lands in one run of
`<name>-monitoring`.

Retraining (on `drift` with retrain=True) reruns this repo's MLflow project `main` entry point
with a new data window, so the retraining is itself a tracked project run; it is skipped during
the cooldown or above the daily cap, and never launched on an `alert` (broken data).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ctloop import registry, tracking
from ctloop.config import BUILTIN_FLIGHTS, Config
from ctloop.data import FLIGHTS_TARGET, FLIGHTS_TIME, DataError, load_flights, read_table
from ctloop.features import EncodingError
from ctloop.metrics import classification_metrics
from ctloop.model import TabularModel
from ctloop.monitor import capture as cap
from ctloop.monitor import decide as dec
from ctloop.monitor.drift import PREDICTION_COLUMN, ColumnDrift, column_drift, dataset_drift
from ctloop.monitor.drift import warm_up as warm_up_drift_tests
from ctloop.monitor.report import DATA_REPORT, MODEL_REPORT, TARGET_COLUMN, build_reports

log = logging.getLogger(__name__)

TABLE_SUFFIXES = (".csv", ".parquet")
PROJECT_URI_ENV = "CTLOOP_PROJECT_URI"
OVERLAP_BYTES = 32 * 2**20  # captures at least this big are decoded in a worker process


class MonitorError(DataError):
    """Input the monitor cannot judge (no champion, no reference, schema mismatch, ...)."""


@dataclass
class MonitorResult:
    """Plain values for the CLI, the demo and notebooks."""

    decision: str
    reasons: list[str]
    model_version: int | None
    window: tuple[str | None, str | None]
    source: str
    drift_share: float = 0.0
    drifted_columns: list[str] = field(default_factory=list)
    feature_scores: dict[str, float] = field(default_factory=dict)
    feature_methods: dict[str, str] = field(default_factory=dict)
    prediction_drift: dict[str, Any] | None = None
    quality: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    missing_share: dict[str, float] = field(default_factory=dict)
    monitor_run_id: str | None = None
    report_html: str | None = None  # data drift + data quality (Evidently HTML)
    report_json: str | None = None
    model_report_html: str | None = None  # prediction drift + classification quality
    retrain: str = "not requested"
    retrain_run_id: str | None = None
    retrain_status: str | None = None
    retrain_window: tuple[str, str] | None = None
    new_versions: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: decision, drift share, columns, rows, run id, retrain outcome."""
        parts = [f"{self.decision.upper()}"]
        if self.model_version is not None:
            parts.append(f"champion v{self.model_version}")
        parts.append(f"rows {self.rows.get('current', 0)}")
        if self.decision != dec.NO_DATA:
            parts.append(f"drift share {self.drift_share:.0%}")
            if self.drifted_columns:
                parts.append(f"drifted: {','.join(self.drifted_columns)}")
            if self.prediction_drift:
                p = self.prediction_drift
                parts.append(f"prediction {'DRIFT' if p['drifted'] else 'ok'} "
                             f"({p['score']:.3f})")  # fmt: skip
        lines, decoded = self.rows.get("capture_lines", 0), self.rows.get("decoded_lines", 0)
        if decoded < lines:
            parts.append(f"sampled {decoded}/{lines} lines")
        if self.rows.get("malformed_lines"):
            parts.append(f"malformed lines {self.rows['malformed_lines']}")
        parts.append(f"retrain: {self.retrain}")
        if self.monitor_run_id:
            parts.append(f"run {self.monitor_run_id}")
        text = " | ".join(parts)
        return f"{text} | {'; '.join(self.reasons)}" if self.reasons else text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Current:
    frame: pd.DataFrame
    probability: np.ndarray | None
    labels: np.ndarray | None  # 0/1 with NaN where unknown
    times: pd.Series | None  # the data's own time column, if the rows carry it
    rows: dict[str, int]
    source: str


def target_and_time(cfg: Config) -> tuple[str, str | None]:
    if cfg.data.source == BUILTIN_FLIGHTS:
        return FLIGHTS_TARGET, FLIGHTS_TIME
    return cfg.data.target, cfg.data.time_column


def _champion(cfg: Config) -> tuple[registry.ModelVersion, TabularModel, str]:
    champion = registry.champion(cfg.name)
    if champion is None:
        raise MonitorError(f"registered model '{cfg.name}' has no champion to monitor; run "
                           "`ctloop run` first")  # fmt: skip
    model = tracking.load_model(champion.uri)
    parent = None
    if champion.run_id:
        info = tracking.run_info(champion.run_id)
        parent = info["tags"].get("ctloop.parent_run_id") or (
            champion.run_id if info["tags"].get(tracking.RUN_KIND_TAG) == tracking.TRAINING_KIND
            else None)  # fmt: skip
    parent = parent or champion.tags.get("ctloop.training_run_id")
    if not parent:
        raise MonitorError(f"champion v{champion.version} of '{cfg.name}' has no training run "
                           "to take reference data from")  # fmt: skip
    return champion, model, parent


def _holdout(parent_run_id: str) -> pd.DataFrame | None:
    """The champion's holdout rows (out-of-sample reference for its predictions), if logged."""
    try:
        return tracking.load_holdout(parent_run_id)
    except Exception:  # older runs logged no holdout: fall back to the training rows
        log.info("training run %s has no holdout artifact; prediction reference = training "
                 "rows", parent_run_id)  # fmt: skip
        return None


def _reference(parent_run_id: str, version: int) -> pd.DataFrame:
    try:
        return tracking.load_reference(parent_run_id)
    except Exception as exc:  # MLflow raises its own exception types for a missing artifact
        raise MonitorError(f"reference data of champion v{version} is missing: training run "
                           f"{parent_run_id} has no '{tracking.REFERENCE_ARTIFACT}' artifact "
                           f"({type(exc).__name__})") from None  # fmt: skip


def _is_table(location: str) -> bool:
    return "://" not in location and location.lower().endswith(TABLE_SUFFIXES)


def _to_binary(values: pd.Series, model: TabularModel) -> np.ndarray:
    out = np.full(len(values), np.nan)
    text = values.astype(str).str.strip()
    out[(text == str(model.positive_label)).to_numpy()] = 1.0
    out[(text == str(model.negative_label)).to_numpy()] = 0.0
    return out


def _normalise(frame: pd.DataFrame, model: TabularModel) -> pd.DataFrame:
    """Numeric features as float (unparsable -> NaN), categorical ones as strings."""
    out = {}
    for col in model.feature_columns:
        series = frame[col]
        if col in model.encoder.vocabularies:
            series = series.astype(object)
            out[col] = series.where(series.isna(), series.astype(str))
        elif not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            out[col] = pd.to_numeric(series, errors="coerce").astype("float64")
        else:
            out[col] = series.astype("float64")
    return pd.DataFrame(out, index=frame.index)


def _schema_check(frame: pd.DataFrame, model: TabularModel, version: int, source: str) -> None:
    missing = [c for c in model.feature_columns if c not in frame.columns]
    if missing and len(frame):
        raise MonitorError(f"{source}: current data lacks feature column '{missing[0]}' that "
                           f"champion v{version} was trained on"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))


def _decoder_pool(location: str):
    """A one-process pool, started now, to decode a large capture; None for small ones.

    Decoding JSON and importing Evidently are both CPU-bound for several seconds; in a worker
    process the decoding overlaps with this process loading the champion and importing
    Evidently (2 cores here). Small captures are decoded in-process: a worker costs ~1 s.
    """
    if _is_table(location) or (os.cpu_count() or 1) < 2:
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


def _decode_capture(pool, location: str, features: list[str], numeric: list[str],
                    since: datetime | None, until: datetime | None, extras: list[str],
                    decode_rows: int | None, seed: int) -> cap.CaptureData:  # fmt: skip
    """Decode the capture, in the worker (if any) while this process imports Evidently."""
    args = (location, features, numeric, since, until, extras, decode_rows, seed)
    if pool is None:
        return cap.read_capture(*args)
    future = pool.submit(cap.read_capture, *args, False)
    try:
        warm_up_drift_tests()
    except Exception:  # an import failure surfaces later, where it is reported properly
        log.debug("warming up Evidently failed", exc_info=True)
    data = future.result()
    pool.shutdown(wait=True)  # not kept through the report and a retraining
    cap.warn_malformed(data, location)
    return data


def _read_current(
    cfg: Config, location: str, since: datetime | None, until: datetime | None,
    model: TabularModel, version: int, ground_truth: str | None, pool=None,
) -> _Current:  # fmt: skip
    target, time_col = target_and_time(cfg)
    numeric = [c for c in model.feature_columns if c not in model.encoder.vocabularies]
    extras = [c for c in (target, time_col) if c]
    if _is_table(location):
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
        _schema_check(frame, model, version, location)
        labels = _to_binary(frame[target], model) if target in frame.columns else None
        times = (pd.to_datetime(frame[time_col], errors="coerce") if time_col
                 and time_col in frame.columns else None)  # fmt: skip
        return _Current(_normalise(frame, model).reset_index(drop=True), None, labels,
                        times, rows, location)  # fmt: skip
    data = _decode_capture(pool, location, list(model.feature_columns), numeric, since, until,
                           extras, cfg.monitor.decode_rows, cfg.split.seed)  # fmt: skip
    rows = {"requests": data.requests, "malformed_lines": data.malformed_lines,
            "outside_window": data.outside_window, "files": data.files,
            "capture_lines": data.lines, "decoded_lines": data.decoded_lines}  # fmt: skip
    _schema_check(data.frame, model, version, location)
    labels = None
    if target in data.frame.columns:
        labels = _to_binary(data.frame[target], model)
    truth_location = ground_truth or cfg.monitor.ground_truth
    if truth_location and data.rows:
        truth, bad = cap.read_ground_truth(truth_location, model.positive_label,
                                           model.negative_label)  # fmt: skip
        rows["malformed_ground_truth_lines"] = bad
        joined = cap.join_ground_truth(data.event_ids, truth)
        labels = joined if labels is None else np.where(np.isnan(labels), joined, labels)
    times = None
    if time_col and time_col in data.frame.columns:
        times = pd.to_datetime(data.frame[time_col], errors="coerce")
    frame = data.frame if not len(data.frame) else _normalise(data.frame, model)
    return _Current(frame, data.probability, labels, times, rows, location)


def _predict(model: TabularModel, frame: pd.DataFrame, what: str) -> np.ndarray:
    try:
        return model.predict_proba(frame)
    except EncodingError as exc:
        raise MonitorError(f"cannot score the {what} data with the champion: {exc}") from None


def _quality(labels: np.ndarray | None, probability: np.ndarray,
             threshold: float) -> tuple[dict[str, float], int]:  # fmt: skip
    if labels is None:
        return {}, 0
    known = ~np.isnan(labels)
    y = labels[known].astype(int)
    if len(y) == 0 or len(np.unique(y)) < 2:
        return {}, int(known.sum())
    metrics = classification_metrics(y, probability[known], threshold)
    metrics.pop("threshold", None)
    return metrics, int(known.sum())


def _sample_note(rows: dict[str, int], seed: int) -> str:
    """How the current rows were obtained: every capture line, or a seeded sample of them."""
    lines, decoded = rows.get("capture_lines"), rows.get("decoded_lines")
    if lines is None or decoded is None or decoded >= lines:
        return "all"
    return (f"decoded a seeded (seed {seed}) random sample of {decoded} of {lines} capture "
            "lines; requests, malformed and outside-window counts are among the sampled lines")


def _window_text(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def run_monitor(
    cfg: Config,
    current: str | None = None,
    since: str | None = None,
    until: str | None = None,
    retrain: bool = False,
    ground_truth: str | None = None,
) -> MonitorResult:
    """Run one monitor job end to end; see the module docstring."""
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def tick(name: str, t0: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - t0, 3)
        return now

    location = current or cfg.serve.capture.directory
    pool = _decoder_pool(location)
    try:
        return _run_monitor(cfg, location, since, until, retrain, ground_truth, pool, started,
                            timings, tick)  # fmt: skip
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _run_monitor(cfg: Config, location: str, since: str | None, until: str | None,
                 retrain: bool, ground_truth: str | None, pool, started: float,
                 timings: dict[str, float], tick) -> MonitorResult:  # fmt: skip
    t = started
    champion, model, parent_run_id = _champion(cfg)
    reference = _reference(parent_run_id, champion.version)
    _schema_check(reference, model, champion.version, f"reference of v{champion.version}")
    t = tick("load_champion_and_reference", t)

    since_dt, until_dt = cap.parse_time(since), cap.parse_time(until)
    if since_dt is None and not _is_table(location):
        # Default: traffic since this champion was registered (older traffic was judged by,
        # and may already have retrained, its predecessor).
        since_dt = datetime.fromtimestamp(champion.created_ms / 1000, tz=UTC)
    if since_dt and until_dt and since_dt >= until_dt:
        raise MonitorError(f"empty window: --since {since} is not before --until {until}")
    try:
        cur = _read_current(cfg, location, since_dt, until_dt, model, champion.version,
                            ground_truth, pool)  # fmt: skip
    except cap.CaptureError as exc:
        raise MonitorError(str(exc)) from None
    t = tick("read_current", t)
    window = (_window_text(since_dt), _window_text(until_dt))
    result = MonitorResult(dec.NO_DATA, [], champion.version, window, location, timings=timings)
    n = len(cur.frame)
    result.rows = {"reference": len(reference), "current": n, **cur.rows}

    columns = list(model.feature_columns)
    categorical = [c for c in columns if c in model.encoder.vocabularies]
    quality_report = dec.data_quality(cur.frame, columns, cfg.monitor, reference=reference)
    result.missing_share = {k: round(v, 6) for k, v in quality_report.missing_share.items()}
    drift_cols: tuple[ColumnDrift, ...] = ()
    prediction: ColumnDrift | None = None
    ref_frame = _normalise(reference, model)
    cur_prob = ref_prob = None
    if n:
        testable = [c for c in columns if c not in quality_report.empty_columns]
        drift_cols = dataset_drift(ref_frame, cur.frame, testable, categorical)
        t = tick("drift_tests", t)
        holdout = _holdout(parent_run_id)
        pred_ref = reference if holdout is None or holdout.empty else holdout
        pred_ref_frame = _normalise(pred_ref, model)
        ref_prob = _predict(model, pred_ref_frame, "reference")
        result.rows["prediction_reference"] = len(pred_ref)
        cur_prob = cur.probability if cur.probability is not None else _predict(
            model, cur.frame, "current")  # fmt: skip
        prediction = column_drift(pd.Series(ref_prob), pd.Series(cur_prob), "num",
                                  PREDICTION_COLUMN)  # fmt: skip
        result.quality, result.rows["labelled"] = _quality(cur.labels, cur_prob, model.threshold)
        t = tick("predictions_and_quality", t)
    decision, reasons = dec.decide(n, drift_cols, prediction, result.quality,
                                   quality_report.problems, cfg.monitor)  # fmt: skip
    result.decision, result.reasons = decision, reasons
    result.drifted_columns = [c.column for c in drift_cols if c.drifted]
    result.drift_share = len(result.drifted_columns) / len(drift_cols) if drift_cols else 0.0
    result.feature_scores = {c.column: c.score for c in drift_cols}
    result.feature_methods = {c.column: c.method for c in drift_cols}
    if prediction is not None:
        result.prediction_drift = {"score": prediction.score, "method": prediction.method,
                                   "threshold": prediction.threshold,
                                   "drifted": prediction.drifted}  # fmt: skip

    tags = {
        "ctloop.model_name": cfg.name,
        "ctloop.model_version": str(champion.version),
        "ctloop.reference_run_id": parent_run_id,
        "ctloop.current_source": location,
        "ctloop.window_start": window[0] or "",
        "ctloop.window_end": window[1] or "",
        "ctloop.decision": decision,
        "ctloop.reasons": "; ".join(reasons),
        "ctloop.drifted_columns": ",".join(result.drifted_columns),
        "ctloop.malformed_lines": str(result.rows.get("malformed_lines", 0)),
        "ctloop.current_sample": _sample_note(result.rows, cfg.split.seed),
        **{f"ctloop.rows.{k}": str(v) for k, v in result.rows.items()},
    }
    metrics = {"drift_share": result.drift_share,
               "drifted_columns": float(len(result.drifted_columns)),
               **{f"drift_score.{k}": v for k, v in result.feature_scores.items()},
               **{f"quality.{k}": v for k, v in result.quality.items()},
               **{f"missing_share.{k}": v for k, v in result.missing_share.items()},
               **{f"rows.{k}": float(v) for k, v in result.rows.items()}}  # fmt: skip
    if prediction is not None:
        metrics["prediction_drift_score"] = prediction.score
        metrics["prediction_drifted"] = float(prediction.drifted)
    params = {"drift_share_threshold": cfg.monitor.thresholds.drift_share,
              "prediction_drift": cfg.monitor.thresholds.prediction_drift,
              "min_quality": dict(cfg.monitor.thresholds.min_quality),
              "sample_rows": cfg.monitor.sample_rows, "min_rows": cfg.monitor.min_rows,
              "decode_rows": cfg.monitor.decode_rows,
              "methods": ",".join(f"{k}:{v}" for k, v in
                                  result.feature_methods.items())}  # fmt: skip

    run_name = f"monitor-v{champion.version}-{time.strftime('%Y%m%d-%H%M%S')}"
    with (tempfile.TemporaryDirectory(prefix="ctloop-monitor-") as tmp,
          tracking.monitoring_run(cfg.monitoring_experiment, run_name, tags) as run):  # fmt: skip
        result.monitor_run_id = run.run_id
        run.log(metrics, params, {})
        if n:
            model_ref = pd.DataFrame({PREDICTION_COLUMN: ref_prob})
            model_cur = pd.DataFrame({PREDICTION_COLUMN: cur_prob})
            if result.quality:  # labels known: classification quality, holdout vs current
                model_ref[TARGET_COLUMN] = _to_binary(pred_ref[target_and_time(cfg)[0]], model)
                model_ref = model_ref.dropna()
                known = ~np.isnan(cur.labels)
                model_cur = model_cur[known].assign(**{TARGET_COLUMN: cur.labels[known]})
            files = build_reports(ref_frame, cur.frame,
                                  [c for c in columns if c not in categorical
                                   and c not in quality_report.empty_columns],
                                  [c for c in categorical
                                   if c not in quality_report.empty_columns],
                                  model_ref, model_cur, Path(tmp) / "report",
                                  cfg.monitor.sample_rows, cfg.split.seed,
                                  cfg.monitor.thresholds.drift_share)  # fmt: skip
            t = tick("evidently_report", t)
            folder_uri = run.log_artifacts(Path(tmp) / "report", "report")
            result.report_html = f"{folder_uri}/{DATA_REPORT}.html"
            result.report_json = f"{folder_uri}/{DATA_REPORT}.json"
            result.model_report_html = f"{folder_uri}/{MODEL_REPORT}.html"
            full = {**{c.column: c.drifted for c in drift_cols},
                    PREDICTION_COLUMN: prediction.drifted}  # fmt: skip
            disagree = sorted(c for c, v in files.sample_verdicts.items()
                              if c in full and v != full[c])  # fmt: skip
            run.log({}, {"report_sample_rows": files.sample_rows},
                    {"ctloop.report_sample_disagreements": ",".join(disagree)})  # fmt: skip
            t = tick("log_artifacts", t)
    # The monitor run is complete here; retraining is recorded on it by tags.
    retrain_tags = _maybe_retrain(cfg, result, retrain, cur, parent_run_id, run.run_id, champion)
    tracking.set_run_tags(run.run_id, retrain_tags)
    if result.retrain_run_id:
        timings["retrain"] = round(time.perf_counter() - t, 3)
    timings["total"] = round(time.perf_counter() - started, 3)
    log.info("monitor: %s", result.summary())
    return result


def _maybe_retrain(cfg: Config, result: MonitorResult, requested: bool, cur: _Current,
                   parent_run_id: str, monitor_run_id: str,
                   champion: registry.ModelVersion) -> dict[str, str]:  # fmt: skip
    """Apply the loop-safety rules and, if they allow it, launch the project run."""
    if not requested:
        result.retrain = "not requested"
        return {tracking.RETRAIN_TAG: "not_requested"}
    if result.decision == dec.ALERT:
        result.retrain = "vetoed: data-quality alert"
        return {tracking.RETRAIN_TAG: "vetoed", "ctloop.retrain_reason": "data-quality alert"}
    if result.decision != dec.DRIFT:
        result.retrain = f"not needed ({result.decision})"
        return {tracking.RETRAIN_TAG: "not_needed"}
    now_ms = int(time.time() * 1000)
    previous = tracking.recent_retrains(cfg.monitoring_experiment, now_ms - dec.DAY_MS)
    allowed, why = dec.retrain_allowed(now_ms, previous, cfg.monitor)
    if not allowed:
        result.retrain = f"skipped: {why}"
        return {tracking.RETRAIN_TAG: "skipped", "ctloop.retrain_reason": why}
    start, end = retrain_window(cfg, cur.times, tracking.run_info(parent_run_id)["tags"])
    result.retrain_window = (start, end)
    # Mark the launch first: a crash mid-training still counts towards cooldown and cap.
    tracking.set_run_tags(monitor_run_id, {tracking.RETRAIN_TAG: tracking.RETRAIN_LAUNCHED,
                                           "ctloop.retrain_window": f"{start}..{end}"})  # fmt: skip
    config_file = _snapshot_config(cfg, monitor_run_id)
    before = {v.version for v in registry.versions(cfg.name)}
    trigger = f"monitor:{monitor_run_id}"
    run_id, status = tracking.run_project(
        project_uri(), "main",
        {"config": str(config_file), "start": start, "end": end, "trigger": trigger},
        cfg.name, cfg.monitor.env_manager,
        {"ctloop.trigger_monitor_run_id": monitor_run_id, "ctloop.trigger": trigger,
         "ctloop.replaced_champion_version": str(champion.version)},
    )  # fmt: skip
    new = [v for v in registry.versions(cfg.name) if v.version not in before]
    result.new_versions = sorted(v.version for v in new)
    produced = [v for v in new if v.tags.get("ctloop.training_run_id") == run_id]
    if produced:
        # `ctloop run` exits non-zero when the gate rejects; the retraining itself finished.
        decision = produced[0].tags.get("ctloop.decision", "registered")
        outcome = f"v{produced[0].version} {decision}"
        if status != "FINISHED":
            tracking.mark_finished(run_id)
            status = "FINISHED"
    else:
        outcome = "failed: no new version registered"
    result.retrain_run_id, result.retrain_status = run_id, f"{status}: {outcome}"
    result.retrain = f"launched run {run_id}, {outcome}"
    return {tracking.RETRAIN_TAG: tracking.RETRAIN_LAUNCHED, "ctloop.retrain_run_id": run_id,
            "ctloop.retrain_status": status,
            "ctloop.new_versions": ",".join(map(str, result.new_versions))}  # fmt: skip


def project_uri() -> str:
    """This repo's MLproject folder (the editable checkout), or $CTLOOP_PROJECT_URI."""
    configured = os.environ.get(PROJECT_URI_ENV)
    if configured:
        return configured
    root = Path(__file__).resolve().parents[3]
    if not (root / "MLproject").exists():
        raise MonitorError(f"cannot retrain: no MLproject file at {root}; set {PROJECT_URI_ENV} "
                           "to the ctloop project folder or git URI")  # fmt: skip
    return str(root)


def _snapshot_config(cfg: Config, monitor_run_id: str) -> Path:
    """The effective config, with an absolute data path, for the project run to read."""
    body = cfg.model_dump(mode="json")
    source = body["data"]["source"]
    if source != BUILTIN_FLIGHTS:
        body["data"]["source"] = str(Path(source).resolve())
    folder = Path(".ctloop/retrain").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cfg.name}-{monitor_run_id}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def retrain_window(cfg: Config, current_times: pd.Series | None,
                   training_tags: dict[str, str]) -> tuple[str, str]:  # fmt: skip
    """[start, end) for the retraining, as MLproject parameters ("" = open).

    With a time column: the most recent window, as long as `monitor.retrain_window_days` or
    else the champion's own training window, ending just after the newest current row; when
    the current rows do not carry the time column (typical for captured traffic), ending at
    the newest labelled row of the configured source. Without a time column: "" and "", i.e.
    the whole configured source, which the user keeps appending labelled rows to.
    """
    _, time_col = target_and_time(cfg)
    if not time_col:
        return "", ""
    newest = None
    if current_times is not None and current_times.notna().any():
        newest = pd.Timestamp(current_times.max())
    if newest is None:
        newest = _newest_source_time(cfg, time_col)
    if newest.tzinfo is not None:
        newest = newest.tz_convert("UTC").tz_localize(None)
    end = newest + timedelta(seconds=1)
    if cfg.monitor.retrain_window_days:
        length = timedelta(days=cfg.monitor.retrain_window_days)
    else:
        try:
            start = pd.Timestamp(training_tags["ctloop.window_start"])
            length = (pd.Timestamp(training_tags["ctloop.window_end"]) - start).to_pytimedelta()
        except (KeyError, ValueError, TypeError):
            log.warning("champion's training window unknown; retraining on all data up to %s", end)
            return "", end.isoformat()
    return (end - length).isoformat(), end.isoformat()


def _newest_source_time(cfg: Config, time_col: str) -> pd.Timestamp:
    if cfg.data.source == BUILTIN_FLIGHTS:
        frame, _ = load_flights()
    else:
        frame = read_table(cfg.data.source)
    times = pd.to_datetime(frame[time_col], errors="coerce")
    if cfg.data.window.end is not None:  # labels exist only up to the configured window's end
        times = times[times < pd.Timestamp(cfg.data.window.end)]
    if times.notna().sum() == 0:
        raise MonitorError(f"{cfg.data.source}: no timestamps in '{time_col}' to place the "
                           "retraining window")  # fmt: skip
    return pd.Timestamp(times.max())
