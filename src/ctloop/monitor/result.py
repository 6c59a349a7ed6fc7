"""What a monitor job hands back: `MonitorResult` (and its one-line summary) or `MonitorError`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ctloop.data import DataError
from ctloop.monitor import decide as dec


class MonitorError(DataError):
    """Input the monitor cannot judge (no champion, no reference, schema mismatch, ...)."""


@dataclass
class MonitorResult:
    """Plain values for the CLI, the demo and notebooks."""

    decision: str  # no_data, alert, retrain or no_action (`decide.py`)
    reasons: list[str]  # the deciding ones first, then what was only reported
    model_version: int | None
    window: tuple[str | None, str | None]
    source: str
    drift_share: float = 0.0
    drifted_columns: list[str] = field(default_factory=list)
    feature_scores: dict[str, float] = field(default_factory=dict)
    feature_methods: dict[str, str] = field(default_factory=dict)
    prediction_drift: dict[str, Any] | None = None
    # Current labels vs the holdout's labels (reported; it decides nothing).
    target_drift: dict[str, Any] | None = None
    task: str | None = None  # the champion's task kind: binary, multiclass or regression
    rule: str = "none"  # which rule decided (labelled_drop, estimated_drop, ...)
    # {"tolerance", "confidence", "expected_rows", "expected_from", "realised": [...],
    #  "estimated": [...]}:
    # each check is `performance.MetricCheck.to_dict()`.
    performance: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    missing_share: dict[str, float] = field(default_factory=dict)
    monitor_run_id: str | None = None
    report_html: str | None = None  # data drift + data quality (Evidently HTML)
    report_json: str | None = None
    model_report_html: str | None = None  # prediction (and target) drift + model quality
    retrain: str = "not requested"
    retrain_run_id: str | None = None
    retrain_status: str | None = None
    retrain_window: tuple[str, str] | None = None
    new_versions: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: decision and the rule that made it, rows, drift, retrain outcome, run
        id, then the reasons (the figures the rule rests on first)."""
        head = self.decision.upper()  # NO_ACTION, RETRAIN, ALERT, NO_DATA: one token to grep
        flagged = self.decision == dec.RETRAIN or self.rule == "unconfirmed_drop"
        parts = [f"{head} ({self.rule})" if flagged else head]
        if self.model_version is not None:
            parts.append(f"champion v{self.model_version}")
        parts.append(f"rows {self.rows.get('current', 0)}")
        if self.decision != dec.NO_DATA:
            parts.append(f"drift share {self.drift_share:.0%}")
            if self.drifted_columns:
                parts.append(f"drifted: {','.join(self.drifted_columns)}")
            if self.prediction_drift:
                p = self.prediction_drift
                parts.append(f"prediction {'moved' if p['drifted'] else 'ok'} "
                             f"({p['score']:.3f})")  # fmt: skip
            if self.target_drift:
                t = self.target_drift
                parts.append(f"target {'DRIFT' if t['drifted'] else 'ok'} ({t['score']:.3f})")
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
