"""Monitoring runs: one run per `ctloop monitor` job in the `<name>-monitoring` experiment.

Why a module of its own: the monitor logs its drift metrics, params, tags and report there,
and reads the same experiment back — the retrains it launched recently (loop safety) and the
last job's summary (`ctloop status`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ctloop.tracking.layout import MONITOR_KIND, RETRAIN_LAUNCHED, RETRAIN_TAG, RUN_KIND_TAG
from ctloop.tracking.store import _client, _short, experiment_id


class MonitorRun:
    """One run per monitor job in `<name>-monitoring`."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def log(self, metrics: Mapping[str, float], params: Mapping[str, Any],
            tags: Mapping[str, str]) -> None:  # fmt: skip
        import mlflow

        mlflow.log_metrics({_metric_key(k): float(v) for k, v in metrics.items()})
        mlflow.log_params({k: _short(v) for k, v in params.items()})
        mlflow.set_tags({k: _short(v) for k, v in tags.items()})

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> str:
        """Upload a folder; returns the artifact URI of the folder in the run."""
        import mlflow

        mlflow.log_artifacts(str(folder), artifact_path=artifact_path)
        return mlflow.get_artifact_uri(artifact_path)


def _metric_key(name: str) -> str:
    # MLflow keys allow alphanumerics, _ - . / and space; anything else becomes "_"
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in name)[:250]


@contextlib.contextmanager
def monitoring_run(experiment: str, run_name: str, tags: Mapping[str, str]) -> Iterator[MonitorRun]:
    """Start a monitor run; an exception (or Ctrl-C) ends it FAILED, never left RUNNING."""
    import mlflow

    exp_id = experiment_id(experiment)
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name,
                          tags={**tags, RUN_KIND_TAG: MONITOR_KIND}) as run:  # fmt: skip
        yield MonitorRun(run.info.run_id)


def recent_retrains(experiment: str, since_ms: int) -> list[int]:
    """Start times (ms) of monitor runs since `since_ms` that launched a retraining."""
    import mlflow

    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = _client().search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{RETRAIN_TAG}` = '{RETRAIN_LAUNCHED}' and "
        f"attributes.start_time >= {int(since_ms)}",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    return [int(r.info.start_time) for r in runs]


def last_run_summary(experiment: str) -> dict[str, Any] | None:
    """Metrics and tags of the newest run of an experiment (e.g. the last monitor job)."""
    import mlflow

    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = _client().search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"],
                                 max_results=1)
    if not runs:
        return None
    run = runs[0]
    return {"run_id": run.info.run_id, "status": run.info.status,
            "start_time": run.info.start_time, "metrics": dict(run.data.metrics),
            "tags": {k: v for k, v in run.data.tags.items() if k.startswith("ctloop.")}}
