"""The whole CT loop on the flights data, step by step, in an isolated workspace.

train on Q1 -> gate -> champion v1 -> local server -> replay two months of later flights as
live traffic (July-August, then September-October, then November-December; the flights carry
their labels) -> after each, the monitor measures the champion's realised metrics there
against its holdout and retrains only if they dropped beyond the tolerance (a tracked MLflow
project run) -> the challenger must beat the champion on the same recent holdout -> promoted
-> the server hot-swaps -> the next two months, after the retraining window, are replayed
against the new champion, whose realised metrics there say whether it holds up; the demo ends.

The narration follows the numbers: a champion that holds up all year, a rejected challenger or
a retrain warranted again are said as they happen. The demo writes to its own store
(`.ctloop/demo/`) unless MLFLOW_TRACKING_URI is set, so it never touches a user's registry;
every step is timed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ctloop import loop
from ctloop.config import Config
from ctloop.data import FLIGHTS_FEATURES, FLIGHTS_TARGET, FLIGHTS_TIME, load_flights

WORKSPACE = Path(".ctloop/demo")
TRAIN_WINDOW = ("2013-01-01", "2013-04-01")
# The months replayed as live traffic, in order, until one after a retrain has been judged.
WINDOWS = (("July-August", ("2013-07-01", "2013-09-01")),
           ("September-October", ("2013-09-01", "2013-11-01")),
           ("November-December", ("2013-11-01", "2014-01-01")))
# Sent with each request beside the features (the server ignores them, the capture keeps
# them): the label, as if it arrived with the traffic, and the time for the retrain window.
REPLAY_COLUMNS = [*FLIGHTS_FEATURES, FLIGHTS_TARGET, FLIGHTS_TIME]
BATCH_ROWS = 100
CLIENTS = 4

Narrate = Callable[[str, str], None]


@dataclass
class DemoReport:
    tracking_uri: str
    model_name: str
    steps: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_config(base: Config, workspace: Path, port: int) -> Config:
    """The flights config with the demo's training window, server port and capture folder."""
    serve = base.serve.model_copy(update={
        "port": port, "poll_seconds": 1.0,
        "capture": base.serve.capture.model_copy(update={"directory": str(workspace / "capture"),
                                                         "flush_seconds": 0.5}),
    })
    return base.with_window(*TRAIN_WINDOW).model_copy(update={"serve": serve})


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def replay(url: str, frame: pd.DataFrame, columns: list[str]) -> dict[str, int]:
    """POST the rows as live traffic in `dataframe_split` batches from a few clients."""
    frame = frame[columns].copy()
    for column in frame.columns:  # times as ISO text, as a client sends them
        if pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = frame[column].dt.strftime("%Y-%m-%dT%H:%M:%S")
    values = frame.astype(object).where(frame.notna(), None)
    rows = values.to_numpy().tolist()
    batches = [rows[i:i + BATCH_ROWS] for i in range(0, len(rows), BATCH_ROWS)]

    def post(batch: list) -> int:
        body = json.dumps({"dataframe_split": {"columns": columns, "data": batch}}).encode()
        request = urllib.request.Request(f"{url}/invocations", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status

    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses = list(pool.map(post, batches))
    return {"requests": len(batches), "rows": len(rows),
            "failed": sum(status != 200 for status in statuses)}


def _months(flights: pd.DataFrame, window: tuple[str, str]) -> pd.DataFrame:
    return flights[(flights[FLIGHTS_TIME] >= window[0]) & (flights[FLIGHTS_TIME] < window[1])]


def realised(result, metric: str) -> tuple[float, float] | None:
    """(realised, expected) of a metric on a monitor result, None when not measured."""
    for check in result.performance.get("realised", []):
        if check["metric"] == metric:
            return check["observed"], check["expected"]
    return None


def verdict_text(result, months: str) -> str:
    """What the numbers say, in words: the champion's realised metrics and what follows."""
    who = f"v{result.model_version}"
    checks = result.performance.get("realised", [])
    if not checks:
        return f"{who} on {months}: no labelled metrics ({result.decision}: {result.rule})"
    figures = ", ".join(f"{c['metric']} {c['observed']:.3f} (holdout {c['expected']:.3f})"
                        for c in checks)  # fmt: skip
    harmed = [c["metric"] for c in checks if c["harmful"]]
    if result.decision == "retrain":
        return (f"{who} on {months}: {figures}; {', '.join(harmed) or result.rule} dropped "
                f"beyond the tolerance: retrain warranted")  # fmt: skip
    slipping = [c for c in checks if c["drop"] > c["tolerance"]]
    if slipping:
        confidence = result.performance["confidence"]  # written beside the checks
        which = ", ".join(f"{c['metric']} drop {c['drop']:+.3f} (lower bound {c['lower']:+.3f})"
                          for c in slipping)  # fmt: skip
        return (f"{who} on {months}: {figures}; {which} beyond the tolerance but not with "
                f"{confidence:.0%} confidence: no action yet, {who} is slipping")  # fmt: skip
    return f"{who} on {months}: {figures}; within tolerance, {who} holds up: no action"


def _after_retrain(cfg: Config, url: str, first, report: DemoReport, narrate: Narrate,
                   swap_started: float) -> int | None:  # fmt: skip
    """After a launched retraining: the new version's gate, and the hot swap if promoted.
    Returns the version now serving if it changed."""
    if not first.new_versions:
        raise loop.UserError(f"retraining registered no version ({first.retrain})")
    new_version = max(first.new_versions)
    status = loop.status(cfg)
    tags = next(mv.tags for mv in status["versions"] if mv.version == new_version)
    report.facts["v2"] = {
        "version": new_version, "compared_with": tags.get("ctloop.compared_with", ""),
        "holdout": json.loads(tags.get("ctloop.holdout_metrics", "{}")),
        "champion_holdout": json.loads(tags.get("ctloop.champion_holdout_metrics", "{}")),
        "interval": json.loads(tags.get("ctloop.interval", "{}")),
        "promoted": (status["champion"] or {}).get("version") == new_version,
        "failed_gates": tags.get("ctloop.failed_gates", ""),
    }
    if not report.facts["v2"]["promoted"]:
        narrate("gate", f"retrained v{new_version} was rejected by the gate "
                f"({tags.get('ctloop.failed_gates', '?')}); v{first.model_version} keeps serving")
        return None
    # From the retrain decision on: the report and its logging, the retrain, the hot swap.
    after_decision = sum(first.timings.get(k, 0.0) for k in
                         ("evidently_report", "log_artifacts", "retrain"))
    narrate("swap", f"v{new_version} promoted; waiting for the server to hot-swap")
    _wait_for_version(url, new_version)
    report.facts["drift_to_serving_s"] = round(after_decision + time.monotonic() - swap_started, 1)
    report.facts["drift_to_serving_steps"] = {
        k: first.timings.get(k) for k in ("evidently_report", "log_artifacts", "retrain")}
    return new_version


def _wait_for_version(url: str, version: int, timeout_s: float = 120.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if _get(f"{url}/version").get("version") == version:
            return time.monotonic() - start
        time.sleep(0.25)
    raise loop.UserError(f"the server did not switch to v{version} within {timeout_s:.0f} s")


def run_demo(base: Config, narrate: Narrate, keep_serving: bool = False,
             workspace: Path = WORKSPACE) -> DemoReport:
    """Run the loop end to end; returns what happened and how long each step took."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        shutil.rmtree(workspace, ignore_errors=True)
        workspace.mkdir(parents=True, exist_ok=True)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workspace.resolve() / 'mlflow.db'}"
    report = DemoReport(os.environ["MLFLOW_TRACKING_URI"], base.name)
    cfg = demo_config(base, workspace, _free_port())
    url = f"http://{cfg.serve.host}:{cfg.serve.port}"
    clock = time.monotonic()

    def step(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        report.steps[name] = round(now - clock, 1)
        clock = now

    narrate("train", f"training candidates on flights {TRAIN_WINDOW[0]} .. {TRAIN_WINDOW[1]}")
    trained, decision = loop.run(cfg, trigger="demo: initial training")
    report.facts["v1"] = {"version": decision.version, "trial": trained.best.name,
                          "holdout": decision.challenger}
    step("train_and_gate_v1")
    if not decision.promoted:
        raise loop.UserError(f"the first model failed its gates: {decision.failed}")
    narrate("gate", f"v{decision.version} ({trained.best.name}) passed the gates: champion")

    narrate("serve", f"starting the local scoring server on {url}")
    loop.deploy_local(cfg)
    step("server_up")
    try:
        flights, _ = load_flights()
        serving = report.facts["v1"]["version"]
        report.facts["windows"] = []
        retrained = False
        for number, (months, window) in enumerate(WINDOWS, 1):
            frame = _months(flights, window)
            narrate("replay", f"replaying {len(frame):,} flights of {months} as live traffic "
                    f"against v{serving}")
            since = pd.Timestamp.now(tz="UTC").tz_localize(None).floor("s").isoformat()
            replayed = replay(url, frame, REPLAY_COLUMNS)
            step(f"replay_{number}")
            # The labels of the replayed months have "arrived": the world now ends there.
            narrate("monitor", f"v{serving}'s realised metrics on the captured traffic vs its "
                    "holdout" + ("" if retrained else "; retrain (rerun the MLflow project on "
                                 "the recent window) only on harm"))
            time.sleep(2 * cfg.serve.capture.flush_seconds)
            result = loop.monitor(cfg.with_window(TRAIN_WINDOW[0], window[1]),
                                  retrain=not retrained, since=since)
            swap_started = time.monotonic()
            step(f"monitor_{number}")
            narrate("monitor", result.summary())
            narrate("verdict", verdict_text(result, months))
            report.facts["windows"].append({"months": months, "replay": replayed,
                                            "monitor": result.to_dict()})
            if retrained:
                break  # the months after the retrain have judged the new champion
            if result.decision == "retrain":
                serving = _after_retrain(cfg, url, result, report, narrate,
                                         swap_started) or serving
                step("hot_swap")
                retrained = True
    finally:
        if not keep_serving:
            loop.stop_local(cfg)
    report.facts["serving"] = url if keep_serving else "stopped"
    return report
