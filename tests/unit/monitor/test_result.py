"""The monitor's one-line summary: a flagged no-action names its rule, a plain one does not."""

from __future__ import annotations

from ctloop.monitor.result import MonitorResult


def _result(decision: str, rule: str) -> MonitorResult:
    return MonitorResult(decision, ["rmse 1.2 vs expected 1.0 (realised): drop +11.0%"], 3,
                         (None, None), "file.csv", rule=rule, rows={"current": 5000})


def test_summary_head_names_the_rule_when_it_flags_or_acts() -> None:
    assert _result("retrain", "labelled_drop").summary().startswith(
        "RETRAIN (labelled_drop) | champion v3 | rows 5000")
    assert _result("no_action", "unconfirmed_drop").summary().startswith(
        "NO_ACTION (unconfirmed_drop) | champion v3")
    assert _result("no_action", "none").summary().startswith("NO_ACTION | champion v3")
