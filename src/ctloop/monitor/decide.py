"""The monitor's decision and the loop-safety rules, as pure functions of plain values.

Decisions, most severe first:
  no_data   the window holds no rows: nothing to judge (its own exit code);
  alert     the data itself looks broken (too few rows, a feature mostly missing or empty):
            never retrain on it, tell a person instead;
  drift     share of drifted features >= thresholds.drift_share, or the prediction drifted
            (thresholds.prediction_drift), or a quality metric crossed thresholds.min_quality;
  no_drift  none of the above.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from ctloop.config import MonitorConfig
from ctloop.monitor.drift import ColumnDrift

NO_DATA, ALERT, DRIFT, NO_DRIFT = "no_data", "alert", "drift", "no_drift"
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class QualityReport:
    missing_share: dict[str, float]
    empty_columns: tuple[str, ...]
    problems: tuple[str, ...]


def data_quality(frame: pd.DataFrame, columns: Sequence[str], cfg: MonitorConfig,
                 reference: pd.DataFrame | None = None) -> QualityReport:
    """Missing share per feature; problems that veto retraining (too few rows, broken columns).

    A column counts as broken when it is missing more than `max_missing_share` of the time
    although it was mostly present in the reference: a feature that was always sparse (the
    flights' wind_gust is missing in most hours, more so in summer) is not broken data.
    """
    rows = len(frame)
    missing = {c: float(frame[c].isna().mean()) if rows else 1.0 for c in columns}
    usual = {c: float(reference[c].isna().mean()) if reference is not None and c in reference
             and len(reference) else 0.0 for c in columns}
    empty = tuple(c for c, share in missing.items() if share >= 1.0)
    problems = []
    if 0 < rows < cfg.min_rows:
        problems.append(f"only {rows} current rows, need at least {cfg.min_rows} "
                        "(monitor.min_rows)")  # fmt: skip
    if rows and empty:
        problems.append(f"empty feature column(s): {', '.join(empty)}")
    too_missing = [f"{c} ({share:.0%})" for c, share in missing.items()
                   if cfg.max_missing_share < share < 1.0
                   and usual[c] <= cfg.max_missing_share]
    if rows and too_missing:
        problems.append(f"missing values above monitor.max_missing_share "
                        f"({cfg.max_missing_share:.0%}): {', '.join(too_missing)}")  # fmt: skip
    return QualityReport(missing, empty, tuple(problems))


def check_min_quality(minimums: Mapping[str, float], kind: str,
                      metric_names: Sequence[str]) -> str | None:  # fmt: skip
    """Why `monitor.thresholds.min_quality` does not fit the champion's task, or None."""
    for metric in minimums:
        if metric not in metric_names:
            return (f"monitor.thresholds.min_quality.{metric}: '{metric}' is not a {kind} "
                    f"metric (the champion's task is {kind}; choose from "
                    f"{', '.join(metric_names)})")  # fmt: skip
    return None


def quality_failures(quality: Mapping[str, float], minimums: Mapping[str, float],
                     lower_is_better: Collection[str]) -> list[str]:  # fmt: skip
    """Metrics that crossed their bound: a floor, or a ceiling for lower-is-better metrics
    (the task's `lower_is_better`)."""
    failures = []
    for metric, bound in minimums.items():
        if metric not in quality:
            continue
        value = quality[metric]
        if metric in lower_is_better:
            if value > bound:
                failures.append(f"{metric} {value:.4f} above the maximum {bound}")
        elif value < bound:
            failures.append(f"{metric} {value:.4f} below the minimum {bound}")
    return failures


def decide(
    rows: int,
    columns: Sequence[ColumnDrift],
    prediction: ColumnDrift | None,
    quality: Mapping[str, float],
    data_problems: Sequence[str],
    cfg: MonitorConfig,
    lower_is_better: Collection[str],
) -> tuple[str, list[str]]:
    """(decision, reasons); reasons name the drifted columns and crossed thresholds.

    `lower_is_better`: the champion's task's metrics where a `min_quality` bound is a ceiling.
    """
    if rows == 0:
        return NO_DATA, ["no current rows in the window"]
    reasons: list[str] = []
    drifted = [c for c in columns if c.drifted]
    share = len(drifted) / len(columns) if columns else 0.0
    threshold = cfg.thresholds.drift_share
    if columns and share >= threshold:
        reasons.append(f"{len(drifted)}/{len(columns)} features drifted ({share:.0%} >= "
                       f"{threshold:.0%}): {', '.join(c.column for c in drifted)}")  # fmt: skip
    if prediction is not None and prediction.drifted and cfg.thresholds.prediction_drift:
        reasons.append(f"prediction drifted ({prediction.method} {prediction.score:.3f}, "
                       f"threshold {prediction.threshold})")  # fmt: skip
    reasons.extend(quality_failures(quality, cfg.thresholds.min_quality, lower_is_better))
    if data_problems:
        return ALERT, [*data_problems, *reasons]
    if reasons:
        return DRIFT, reasons
    note = f"{len(drifted)}/{len(columns)} features drifted ({share:.0%} < {threshold:.0%})"
    if drifted:
        note += f": {', '.join(c.column for c in drifted)}"
    return NO_DRIFT, [note]


def retrain_allowed(
    now_ms: int, previous_ms: Sequence[int], cfg: MonitorConfig
) -> tuple[bool, str]:
    """Cooldown since the last retrain and a cap per rolling 24 hours."""
    last_day = [t for t in previous_ms if now_ms - t < DAY_MS]
    if len(last_day) >= cfg.max_retrains_per_day:
        return False, (f"cap reached: {len(last_day)} retrain(s) in the last 24 h "
                       f"(monitor.max_retrains_per_day={cfg.max_retrains_per_day})")  # fmt: skip
    if previous_ms:
        minutes = (now_ms - max(previous_ms)) / 60_000
        if minutes < cfg.cooldown_minutes:
            return False, (f"cooldown: last retrain {minutes:.1f} min ago "
                           f"(monitor.cooldown_minutes={cfg.cooldown_minutes:g})")  # fmt: skip
    return True, "allowed"
