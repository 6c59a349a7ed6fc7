"""The monitor's decision and the loop-safety rules, as pure functions of plain values.

The decision is about harm; drift is its explanation. Decisions, most severe first:
  no_data    the window holds no rows: nothing to judge (its own exit code);
  alert      the data itself looks broken (too few rows, a feature mostly missing or empty):
             never retrain on it, tell a person instead;
  retrain    the champion is, or very probably is, doing worse than it should (rule):
               labelled_drop    with labels: a realised metric dropped beyond its tolerance
                                with confidence (`performance.labelled_checks`);
               min_quality      with labels: a metric crossed thresholds.min_quality;
               estimated_drop   without labels: the estimate (CBPE for classification,
                                direct loss estimation for regression) dropped beyond
                                tolerance;
               prediction_drift without labels: the prediction moved by more than the
                                effect size thresholds.prediction_effect;
               feature_drift    only if thresholds.retrain_on_feature_drift (opt-in policy):
                                the share of drifted features reached drift_share;
  no_action  none of the above; drifted features are still named in the reasons. Rule
             `unconfirmed_drop` flags a labelled metric whose realised drop is beyond its
             tolerance while its lower confidence bound is not (watch the next window).
With labels (at least thresholds.min_labels of them) the labels decide: estimates and
prediction drift are then reported, not acted on.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from ctloop.config import MonitorConfig
from ctloop.monitor.drift import ColumnDrift
from ctloop.monitor.performance import MetricCheck

NO_DATA, ALERT, RETRAIN, NO_ACTION = "no_data", "alert", "retrain", "no_action"
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Verdict:
    decision: str
    rule: str  # which rule decided ("labelled_drop", ..., "none")
    reasons: list[str]


@dataclass(frozen=True)
class Signals:
    """Everything the decision rests on, as plain values."""

    rows: int
    columns: Sequence[ColumnDrift] = ()
    prediction: ColumnDrift | None = None
    realised: Sequence[MetricCheck] = ()  # empty unless enough labelled rows
    estimated: Sequence[MetricCheck] = ()
    quality: Mapping[str, float] = field(default_factory=dict)
    labelled: int = 0
    data_problems: Sequence[str] = ()


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


def feature_note(columns: Sequence[ColumnDrift], threshold: float) -> str:
    """'k/n features drifted (share vs threshold): names' for the reasons."""
    drifted = [c.column for c in columns if c.drifted]
    share = len(drifted) / len(columns) if columns else 0.0
    note = (f"{len(drifted)}/{len(columns)} features drifted ({share:.0%} "
            f"{'>=' if share >= threshold else '<'} {threshold:.0%})")
    return note + (f": {', '.join(drifted)}" if drifted else "")


def decide(signals: Signals, cfg: MonitorConfig, lower_is_better: Collection[str]) -> Verdict:
    """The decision, the rule that made it and the reasons (deciding ones first, then what
    was only reported). `lower_is_better`: metrics where a `min_quality` bound is a ceiling."""
    if signals.rows == 0:
        return Verdict(NO_DATA, "no_data", ["no current rows in the window"])
    th = cfg.thresholds
    fired: list[tuple[str, str]] = []  # (rule, reason)
    reported: list[str] = []
    columns, prediction = signals.columns, signals.prediction
    if signals.realised:
        fired += [("labelled_drop", c.describe()) for c in signals.realised if c.harmful]
        fired += [("min_quality", f) for f in quality_failures(signals.quality, th.min_quality,
                                                              lower_is_better)]  # fmt: skip
        reported += [c.describe() for c in signals.realised if not c.harmful]
        reported += [f"(reported) {c.describe()}" for c in signals.estimated]
    else:
        if signals.labelled:
            reported.append(f"only {signals.labelled} labelled rows (< monitor.thresholds."
                            f"min_labels={th.min_labels}): the estimate decides")
        fired += [("estimated_drop", c.describe()) for c in signals.estimated if c.harmful]
        reported += [c.describe() for c in signals.estimated if not c.harmful]
    if prediction is not None:
        text = (f"prediction moved {prediction.score:.3f} ({prediction.method}; effect "
                f"threshold {prediction.threshold:g})")
        if prediction.drifted and th.prediction_drift and not signals.realised:
            fired.append(("prediction_drift", text))
        else:
            reported.append(text)
    note = feature_note(columns, th.drift_share)
    share = sum(c.drifted for c in columns) / len(columns) if columns else 0.0
    if th.retrain_on_feature_drift and columns and share >= th.drift_share:
        fired.append(("feature_drift", note))
    else:
        reported.append(note)
    if signals.data_problems:
        return Verdict(ALERT, "data_quality", [*signals.data_problems,
                                               *(r for _, r in fired), *reported])
    if fired:
        rules = list(dict.fromkeys(rule for rule, _ in fired))
        return Verdict(RETRAIN, "+".join(rules), [r for _, r in fired] + reported)
    unconfirmed = [c.describe() for c in signals.realised if c.unconfirmed]
    if unconfirmed:
        return Verdict(NO_ACTION, "unconfirmed_drop",
                       [*unconfirmed, *(r for r in reported if r not in unconfirmed)])
    return Verdict(NO_ACTION, "none", reported)


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
