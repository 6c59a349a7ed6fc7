"""Validate a challenger against the champion and record the decision in the registry.

Every gate scores challenger and champion on the same rows: the most recent holdout logged
with the challenger's training run. Gates:
  floors         absolute minimums through MLflow's evaluate + MetricThreshold
  no_regression  paired bootstrap of the primary metric: the point estimate must exceed
                 `min_delta` and the one-sided lower bound at `confidence` must reach it
  guards         metrics that may get worse by at most a tolerance (e.g. log loss)
  unseen_rows    says whether the holdout lies outside the champion's training data (by
                 time when there is a time column, else by identical rows); informational:
                 rows the champion was fitted on favour it, so the verdict stays cautious
  signature      the logged signature takes exactly the raw feature columns
  loads          the model loads and scores its input example in a fresh process
  invariance     changing a declared column leaves predictions (nearly) unchanged
  latency        single-row pyfunc predict within the budget
The `champion` alias move is the commit point; everything before it is safe to crash.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from ctloop import registry, tasks, tracking
from ctloop.config import BUILTIN_FLIGHTS, Config
from ctloop.data import FLIGHTS_TIME, naive_utc
from ctloop.metrics import paired_bootstrap
from ctloop.model import TabularModel
from ctloop.tasks import Task, TaskError

log = logging.getLogger(__name__)
INVARIANCE_ROWS = 2000


class SelectionError(RuntimeError):
    """Selection cannot proceed (no training run, no trials, bad invariance column...)."""


@dataclass
class Gate:
    name: str
    passed: bool
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decision:
    """Everything needed to answer "why is this version (not) serving?"."""

    name: str
    version: int | None
    promoted: bool
    gates: list[Gate]
    challenger: dict[str, float]
    champion: dict[str, float] | None
    champion_version: int | None
    interval: dict[str, float] | None
    training_run_id: str
    trial_run_id: str
    trigger: str
    forced: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    gate_run_id: str = ""

    @property
    def failed(self) -> list[str]:
        return [g.name for g in self.gates if not g.passed]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=str)

    def to_markdown(self) -> str:
        verdict = "PROMOTED" if self.promoted else "REJECTED"
        lines = [f"# {self.name} v{self.version}: {verdict}", "",
                 f"- trigger: {self.trigger}", f"- training run: {self.training_run_id}",
                 f"- trial run: {self.trial_run_id}",
                 f"- compared with champion: v{self.champion_version}"
                 if self.champion_version else "- first model: floors and model tests only",
                 "", "| gate | verdict | detail |", "|---|---|---|"]
        lines += [f"| {g.name} | {'pass' if g.passed else 'FAIL'} | {g.detail} |"
                  for g in self.gates]
        lines += ["", "| metric (holdout) | challenger | champion |", "|---|---|---|"]
        for metric, value in self.challenger.items():
            other = (self.champion or {}).get(metric)
            lines.append(f"| {metric} | {value:.4f} | {'' if other is None else f'{other:.4f}'} |")
        return "\n".join(lines) + "\n"


def best_trial(training_run_id: str) -> dict[str, Any]:
    """The trial of a training run with the best validation score on the run's primary
    metric (the one it was trained for), in that metric's direction, among the trials that
    carry a logged model (training logs one for the best few only)."""
    params = tracking.run_info(training_run_id)["params"]
    metric = params.get("primary_metric", "roc_auc")
    task_class = tasks.BY_KIND.get(params.get("task", "binary"), tasks.BinaryTask)
    trials = [t for t in tracking.trial_runs(training_run_id)
              if t["tags"].get(tracking.RUN_KIND_TAG) == tracking.TRIAL_KIND
              and metric in t["metrics"]]
    trials = [t for t in trials if "ctloop.model_uri" in t["tags"]] or trials
    if not trials:
        raise SelectionError(f"training run {training_run_id} has no trials scored on {metric}")
    sign = 1.0 if metric in task_class.lower_is_better else -1.0
    return min(trials, key=lambda t: sign * t["metrics"][metric])


def _holdout(
    training_run_id: str, model: TabularModel, target: str
) -> tuple[pd.DataFrame, np.ndarray]:
    frame = tracking.load_holdout(training_run_id)
    if target not in frame.columns:
        raise SelectionError(f"holdout of run {training_run_id} has no target column '{target}'")
    try:
        return frame, model.task.encode_target(frame[target])
    except TaskError as exc:
        raise SelectionError(f"holdout of run {training_run_id}: {exc}") from None


def _score(model: TabularModel, frame: pd.DataFrame, y: np.ndarray) -> tuple[np.ndarray, dict]:
    scores = model.scores(frame)
    return scores, model.task.metrics(y, scores)


def primary_metric(cfg: Config, task: Task) -> str:
    try:
        return task.primary_metric(cfg.training.primary_metric)
    except TaskError as exc:
        raise SelectionError(str(exc)) from None


def _no_regression(cfg: Config, task: Task, y: np.ndarray, new: np.ndarray,
                   old: np.ndarray) -> Gate:
    """Paired bootstrap of the task's primary metric, signed so that positive is better."""
    gate = cfg.gate
    metric = task.bootstrap_metric(primary_metric(cfg, task))
    interval = paired_bootstrap(task.sampler(metric, y, new), task.sampler(metric, y, old),
                                len(y), metric in task.lower_is_better,
                                gate.bootstrap_resamples, gate.confidence, seed=cfg.split.seed)
    passed = (interval["improvement"] > gate.min_delta
              and interval["lower_one_sided"] >= gate.min_delta)
    direction = "lower is better" if metric in task.lower_is_better else "higher is better"
    detail = (f"{metric} ({direction}) improvement {interval['improvement']:+.4f}, one-sided "
              f"{gate.confidence:.0%} lower bound {interval['lower_one_sided']:+.4f} "
              f"(needs >= {gate.min_delta:+.4f})")
    return Gate("no_regression", passed, detail, {"metric": metric, **interval})


def gate_guards(cfg: Config, task: Task) -> dict[str, float]:
    return dict(task.default_guards if cfg.gate.guards is None else cfg.gate.guards)


def gate_floors(cfg: Config, task: Task) -> dict[str, float]:
    return dict(task.default_floors if cfg.gate.floors is None else cfg.gate.floors)


def _guards(cfg: Config, task: Task, new: dict[str, float], old: dict[str, float]) -> Gate:
    problems, evidence = [], {}
    for metric, tolerance in gate_guards(cfg, task).items():
        if metric not in new:
            raise SelectionError(f"gate.guards: '{metric}' is not a {task.kind} metric "
                                 f"(choose from {', '.join(sorted(new))})")
        worse_by = (new[metric] - old[metric]) if metric in task.lower_is_better else (
            old[metric] - new[metric])
        evidence[metric] = worse_by
        if worse_by > tolerance:
            problems.append(f"{metric} worse by {worse_by:.4f} > {tolerance}")
    detail = "; ".join(problems) or "within tolerance: " + ", ".join(
        f"{m} {v:+.4f}" for m, v in evidence.items()) if evidence else "no guards"
    return Gate("guards", not problems, detail, evidence)


def _unseen_rows(cfg: Config, frame: pd.DataFrame, champion: registry.ModelVersion) -> Gate:
    """Do the evaluation rows lie outside what the champion was trained on? With a time
    column: after the start of the champion's own holdout (all before it was its training or
    validation); else: rows not identical to one of its training rows."""
    training_run = champion.tags.get("ctloop.training_run_id")
    try:
        seen = tracking.load_reference(training_run) if training_run else None
    except Exception:  # an older champion without its training rows: say so, decide nothing
        seen = None
    if seen is None:
        return Gate("unseen_rows", True, f"unknown: champion v{champion.version}'s training "
                    "rows are not logged")  # fmt: skip
    time_col = cfg.data.time_column or (FLIGHTS_TIME if cfg.data.source == BUILTIN_FLIGHTS
                                        else None)  # fmt: skip
    if time_col and time_col in frame.columns and time_col in seen.columns:
        try:  # naive UTC on both sides: an older champion's logged rows may hold zones
            cut = naive_utc(tracking.load_holdout(training_run)[time_col]).min()
        except Exception:
            cut = naive_utc(seen[time_col]).max()
        inside = int((naive_utc(frame[time_col]) < cut).sum())
        how = f"before {cut} (the end of champion v{champion.version}'s training window)"
    else:
        columns = [c for c in frame.columns if c in seen.columns]
        known = set(pd.util.hash_pandas_object(seen[columns], index=False))
        inside = int(pd.util.hash_pandas_object(frame[columns], index=False).isin(known).sum())
        how = f"identical to rows champion v{champion.version} was trained on"
    detail = (f"all {len(frame)} holdout rows lie outside the champion's training data"
              if not inside else
              f"{inside} of {len(frame)} holdout rows are {how}: the comparison favours the "
              "champion there")  # fmt: skip
    return Gate("unseen_rows", True, detail, {"inside": inside, "rows": len(frame)})


def _invariance(cfg: Config, model: TabularModel, frame: pd.DataFrame) -> Gate:
    sample = frame.head(INVARIANCE_ROWS)
    base = model.scores(sample)
    worst: dict[str, float] = {}
    problems = []
    for check in cfg.gate.invariance:
        if check.column not in model.feature_columns:
            raise SelectionError(f"gate.invariance: column '{check.column}' is not a feature "
                                 f"(features: {', '.join(model.feature_columns)})")
        for value in check.values:
            changed = sample.assign(**{check.column: value})
            shift = float(np.max(np.abs(model.scores(changed) - base)))
            worst[f"{check.column}={value}"] = shift
            if shift > check.tolerance:
                problems.append(f"{check.column}={value!r} moves a prediction by {shift:.4f} "
                                f"> {check.tolerance}")
    detail = "; ".join(problems) or f"{len(worst)} perturbations within tolerance"
    return Gate("invariance", not problems, detail, worst)


def _signature(declared: dict[str, str], model: TabularModel) -> Gate:
    """The logged signature must take exactly the raw feature columns, typed as trained.
    Models logged before every column became `Any` typed their categories `string`: they
    still serve (`ctloop promote` of an older version stays possible)."""
    expected = tracking.input_types(model.encoder)
    missing = sorted(set(expected) - set(declared))
    extra = sorted(set(declared) - set(expected))
    wrong = sorted(c for c in set(declared) & set(expected) if declared[c] != expected[c] and not (
        declared[c] == "string" and c in model.encoder.vocabularies))
    if not (missing or extra or wrong):
        return Gate("signature", True, f"{len(declared)} raw columns with their types")
    return Gate("signature", False, f"missing {missing}, extra {extra}, wrong type {wrong}")


def _latency(latency_ms: float, budget_ms: float) -> Gate:
    return Gate("latency", latency_ms <= budget_ms, f"single-row pyfunc predict median "
                f"{latency_ms:.2f} ms (budget {budget_ms} ms)", {"latency_ms": latency_ms})


def evaluate(cfg: Config, model_uri: str, training_run_id: str,
             champion: registry.ModelVersion | None) -> tuple[list[Gate], dict, dict | None,
                                                             dict | None, dict]:
    """Run every gate; returns (gates, challenger metrics, champion metrics, interval, timings).

    The fresh-process probe (seconds of interpreter and MLflow start-up) runs in the
    background while the in-process gates score the holdout and bootstrap.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="ctloop-probe") as pool:
        pending = pool.submit(tracking.probe_in_fresh_process, model_uri)
        try:
            model = tracking.load_model(model_uri)
        except Exception as exc:  # whatever breaks the load, the model cannot serve: a failed gate
            probe = pending.result()
            detail = probe["error"] if not probe["ok"] else f"{type(exc).__name__}: {exc}"
            return [Gate("loads", False, detail)], {}, None, None, {}
        gates, new, old, interval, timings = _in_process_gates(cfg, model, model_uri,
                                                               training_run_id, champion)
        waited = time.perf_counter()
        probe = pending.result()
        timings["fresh_process_probe_wait"] = round(time.perf_counter() - waited, 3)
    timings["fresh_process_probe"] = round(probe["seconds"], 3)
    loads = Gate("loads", probe["ok"], "loaded and scored its input example in a fresh process "
                 f"({probe['seconds']:.1f} s)" if probe["ok"] else probe["error"],
                 {k: v for k, v in probe.items() if k != "columns"})
    gates.insert(0, loads)
    if probe["ok"]:
        gates.append(_latency(probe["latency_ms"], cfg.gate.latency_budget_ms))
    return gates, new, old, interval, timings


def _in_process_gates(cfg: Config, model: TabularModel, model_uri: str, training_run_id: str,
                      champion: registry.ModelVersion | None):
    """Signature, floors, no-regression, guards and invariance, timed step by step."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    target = tracking.run_info(training_run_id)["params"].get("target", cfg.data.target)
    task = model.task
    frame, y = _holdout(training_run_id, model, target)
    lap("load_holdout")
    gates = [_signature(tracking.signature_inputs(model_uri), model)]
    p_new, new = _score(model, frame, y)
    lap("score_challenger")
    floors = gate_floors(cfg, task)
    try:
        floor_metrics, failures = tracking.evaluate_floors(task, y, p_new, floors)
    except ValueError as exc:  # a floor naming a metric the task does not have
        raise SelectionError(str(exc)) from None
    gates.append(Gate("floors", not failures, "; ".join(failures) or ", ".join(
        f"{k} {floor_metrics.get(k, float('nan')):.4f} vs {v}" for k, v in floors.items())
        or "no floors", floor_metrics))
    lap("floors_mlflow_evaluate")
    old = interval = None
    if champion is not None:
        try:
            champion_model = tracking.load_model(champion.uri)
        except Exception as exc:
            raise SelectionError(f"cannot load champion v{champion.version}: {exc}") from exc
        p_old, old = _score(champion_model, frame, y)
        lap("score_champion")
        if _labels_of(champion_model.task) != _labels_of(task):
            raise SelectionError(f"cannot compare: the champion v{champion.version} is "
                                 f"{champion_model.task.describe()}, the challenger "
                                 f"{task.describe()}")
        regression = _no_regression(cfg, task, y, p_new, p_old)
        interval = regression.evidence
        gates += [regression, _guards(cfg, task, new, old), _unseen_rows(cfg, frame, champion)]
        lap("bootstrap_and_guards")
    if cfg.gate.invariance:
        gates.append(_invariance(cfg, model, frame))
        lap("invariance")
    return gates, new, old, interval, timings


def _labels_of(task: Task) -> dict[str, Any]:
    """What must match for two models to be compared on the same rows (not the threshold)."""
    return {k: v for k, v in task.to_json().items() if k != "threshold"}


def decision_tags(decision: Decision, run_tags: dict[str, str]) -> dict[str, str]:
    """The decision record as model version tags (the UI shows them on the version page)."""
    tags = {
        "ctloop.decision": "promoted" if decision.promoted else "rejected",
        "ctloop.gates": ", ".join(f"{g.name}:{'pass' if g.passed else 'FAIL'}"
                                  for g in decision.gates),
        "ctloop.failed_gates": ", ".join(decision.failed) or "none",
        "ctloop.holdout_metrics": json.dumps({k: round(v, 5) for k, v in
                                              decision.challenger.items()}),
        "ctloop.champion_holdout_metrics": json.dumps(
            {k: round(v, 5) for k, v in (decision.champion or {}).items()}),
        "ctloop.compared_with": f"v{decision.champion_version}" if decision.champion_version
        else "none (first model)",
        "ctloop.interval": json.dumps(decision.interval or {}),
        "ctloop.training_run_id": decision.training_run_id,
        "ctloop.trial_run_id": decision.trial_run_id,
        "ctloop.gate_run_id": decision.gate_run_id,
        "ctloop.trigger": decision.trigger,
        "ctloop.forced": str(decision.forced).lower(),
    }
    for key in ("ctloop.window_start", "ctloop.window_end", "ctloop.config_hash",
                "ctloop.git_commit", "ctloop.data_source", "ctloop.task"):
        if key in run_tags:
            tags[key] = run_tags[key]
    return tags


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def select(cfg: Config, training_run_id: str, trigger: str = "manual") -> Decision:
    """Gate the best trial of a training run, register it, promote it if every gate passes."""
    trial = best_trial(training_run_id)
    model_uri = trial["tags"].get("ctloop.model_uri") or f"runs:/{trial['run_id']}/model"
    return _decide(cfg, model_uri, training_run_id, trial["run_id"], trigger, version=None)


def promote_version(cfg: Config, version: int, force: bool, trigger: str) -> Decision:
    """Manually promote an existing version: gated like any challenger unless forced."""
    mv = registry.get_version(cfg.name, version)
    training_run_id = mv.tags.get("ctloop.training_run_id")
    if not training_run_id:
        raise SelectionError(f"{cfg.name} v{version} has no ctloop.training_run_id tag; "
                             "it was not registered by ctloop")
    return _decide(cfg, mv.source, training_run_id, mv.run_id or "", trigger, version=version,
                   force=force)


def _decide(cfg: Config, model_uri: str, training_run_id: str, trial_run_id: str, trigger: str,
            version: int | None, force: bool = False) -> Decision:
    run_tags = tracking.run_info(training_run_id)["tags"]
    with registry.promotion_lock(cfg.name):
        champion = registry.champion(cfg.name)
        if champion is not None and version is not None and champion.version == version:
            raise SelectionError(f"{cfg.name} v{version} is already the champion")
        with tracking.gate_run(training_run_id, {"ctloop.trigger": trigger}) as gate_run_id:
            if force:
                gates = [Gate("forced", True, "gates skipped by --force (recorded)")]
                new, old, interval, timings = {}, None, None, {}
            else:
                gates, new, old, interval, timings = evaluate(cfg, model_uri, training_run_id,
                                                              champion)
            decision = Decision(
                name=cfg.name, version=version, promoted=all(g.passed for g in gates),
                gates=gates, challenger=new, champion=old,
                champion_version=champion.version if champion else None, interval=interval,
                training_run_id=training_run_id, trial_run_id=trial_run_id, trigger=trigger,
                forced=force, timings=timings, gate_run_id=gate_run_id,
            )
            tracking.log_metrics({f"challenger_{k}": v for k, v in new.items()})
            if old:
                tracking.log_metrics({f"champion_{k}": v for k, v in old.items()})
            tags = decision_tags(decision, run_tags)
            if version is None:
                mv = registry.register(cfg.name, model_uri, trial_run_id, tags)
                decision.version = mv.version
                registry.set_alias(cfg.name, registry.CHALLENGER, mv.version)
            else:
                registry.set_tags(cfg.name, version, tags)
            tracking.log_text(decision.to_json(), f"decision/v{decision.version}.json")
            decision_uri = tracking.log_text(decision.to_markdown(),
                                             f"decision/v{decision.version}.md")
            registry.set_tags(cfg.name, decision.version, {"ctloop.decision_record": decision_uri})
        if decision.promoted:
            # Another machine may have promoted meanwhile: never overwrite an unseen champion.
            current = registry.champion(cfg.name)
            if (current.version if current else None) != decision.champion_version:
                decision.promoted = False
                decision.gates.append(Gate("fresh_champion", False, "the champion changed "
                                           "during the gate; run select again"))
                registry.set_tags(cfg.name, decision.version, decision_tags(decision, run_tags))
            else:
                registry.set_tags(cfg.name, decision.version, {"ctloop.champion_since": _stamp()})
                registry.move_champion(cfg.name, decision.version)
        registry.set_description(cfg.name, decision.version, decision.to_markdown())
        registry.reconcile_stages(cfg.name)
    log.info("%s v%s %s", cfg.name, decision.version,
             "promoted" if decision.promoted else f"rejected: {decision.failed}")
    return decision


def rollback(cfg: Config) -> tuple[int, int]:
    """Champion back to `previous-champion`; recorded on both versions. Returns (from, to)."""
    with registry.promotion_lock(cfg.name):
        current = registry.champion(cfg.name)
        previous = registry.by_alias(cfg.name, registry.PREVIOUS_CHAMPION)
        if current is None or previous is None:
            raise SelectionError(f"{cfg.name}: nothing to roll back to (needs a champion and a "
                                 "previous-champion)")
        stamp = _stamp()
        registry.set_tags(cfg.name, current.version, {"ctloop.rolled_back_at": stamp})
        registry.set_tags(cfg.name, previous.version, {"ctloop.champion_since": stamp,
                                                        "ctloop.restored_from_rollback_of":
                                                        f"v{current.version}"})
        registry.set_alias(cfg.name, registry.CHAMPION, previous.version)
        registry.delete_alias(cfg.name, registry.PREVIOUS_CHAMPION)
        registry.reconcile_stages(cfg.name)
    return current.version, previous.version
