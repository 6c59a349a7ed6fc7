"""Retraining when it is warranted: the loop-safety rules, the data window and the project run.

Retraining (on `retrain` with retrain=True) reruns this repo's MLflow project `main` entry point
with a new data window, so the retraining is itself a tracked project run; it is skipped during
the cooldown or above the daily cap, and never launched on an `alert` (broken data).
"""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import yaml

from ctloop import registry, tracking
from ctloop.config import BUILTIN_FLIGHTS, Config
from ctloop.data import load_flights, read_table
from ctloop.monitor import decide as dec
from ctloop.monitor.current import Current
from ctloop.monitor.frames import target_and_time
from ctloop.monitor.result import MonitorError, MonitorResult

log = logging.getLogger(__name__)

PROJECT_URI_ENV = "CTLOOP_PROJECT_URI"


def maybe_retrain(cfg: Config, result: MonitorResult, requested: bool, cur: Current,
                   parent_run_id: str, monitor_run_id: str,
                   champion: registry.ModelVersion) -> dict[str, str]:  # fmt: skip
    """Apply the loop-safety rules and, if they allow it, launch the project run."""
    if not requested:
        result.retrain = "not requested"
        return {tracking.RETRAIN_TAG: "not_requested"}
    if result.decision == dec.ALERT:
        result.retrain = "vetoed: data-quality alert"
        return {tracking.RETRAIN_TAG: "vetoed", "ctloop.retrain_reason": "data-quality alert"}
    if result.decision != dec.RETRAIN:
        result.retrain = f"not needed ({result.decision})"
        return {tracking.RETRAIN_TAG: "not_needed"}
    now_ms = int(time.time() * 1000)
    previous = tracking.recent_retrains(cfg.monitoring_experiment, now_ms - dec.DAY_MS)
    allowed, why = dec.retrain_allowed(now_ms, previous, cfg.monitor)
    if not allowed:
        result.retrain = f"skipped: {why}"
        return {tracking.RETRAIN_TAG: "skipped", "ctloop.retrain_reason": why}
    return _launch(cfg, result, cur, parent_run_id, monitor_run_id, champion)


def _launch(cfg: Config, result: MonitorResult, cur: Current, parent_run_id: str,
            monitor_run_id: str, champion: registry.ModelVersion) -> dict[str, str]:  # fmt: skip
    """Run the project's `main` entry point on the new window; report the version it made."""
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
