"""The demo's narration follows the numbers of each monitor result, whatever they are."""

from __future__ import annotations

from ctloop.cli import _monitor_line
from ctloop.demo import verdict_text
from ctloop.monitor.performance import MetricCheck
from ctloop.monitor.result import MonitorResult


def _result(decision: str, rule: str, *checks: MetricCheck) -> MonitorResult:
    result = MonitorResult(decision, [], 2, (None, None), "capture", rule=rule,
                           drifted_columns=["temp"], drift_share=0.5)
    result.performance = {"confidence": 0.9, "realised": [c.to_dict() for c in checks]}
    return result


def _check(metric: str, expected: float, observed: float, lower: float, tol: float,
           harmful: bool) -> MetricCheck:
    return MetricCheck(metric, "labels", expected, observed, expected - observed, lower, tol,
                       harmful)


def test_a_harmful_drop_is_said_to_warrant_a_retrain() -> None:
    text = verdict_text(_result("retrain", "labelled_drop",
                                _check("roc_auc", 0.689, 0.675, 0.005, 0.03, False),
                                _check("recall", 0.480, 0.007, 0.46, 0.15, True)), "July")
    assert text.startswith("v2 on July: roc_auc 0.675 (holdout 0.689), recall 0.007")
    assert "recall dropped beyond the tolerance: retrain warranted" in text


def test_a_drop_beyond_the_tolerance_without_confidence_is_slipping_not_holding_up() -> None:
    result = _result("no_action", "none", _check("roc_auc", 0.696, 0.661, 0.026, 0.03, False))
    text = verdict_text(result, "Sep-Oct")
    assert "roc_auc drop +0.035 (lower bound +0.026) beyond the tolerance but not with 90% " \
        "confidence: no action yet, v2 is slipping" in text
    assert "holds up" not in text
    line = _monitor_line(result.to_dict())
    assert line.startswith("v2: roc_auc 0.661 (holdout 0.696, lower bound of the drop +0.026")
    assert "-> no action; 50% of features drifted: temp" in line


def test_within_tolerance_holds_up_and_no_labels_is_said() -> None:
    calm = _result("no_action", "none", _check("roc_auc", 0.70, 0.69, -0.01, 0.03, False))
    assert verdict_text(calm, "May").endswith("within tolerance, v2 holds up: no action")
    assert "no labelled metrics" in verdict_text(_result("no_action", "none"), "May")
