"""The tracking store and its experiments, plus reading and tagging any run.

Why a module of its own: every other part of `tracking` needs the same few basics — which
store MLflow points at, an experiment that exists and is tagged for the MLflow UI, a client,
and plain-dict views of runs — and none of them belongs to one kind of run.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

# MLflow 3's UI opens an experiment on its GenAI overview unless it is tagged as model
# development; ctloop's experiments hold training, gate and monitor runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def configure() -> str:
    """Point MLflow at MLFLOW_TRACKING_URI, or the embedded SQLite store by default."""
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network here, no waiting
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow sets its own log level on import; keep it at the level the CLI chose (or quieter).
    logging.getLogger("mlflow").setLevel(max(logging.getLogger().getEffectiveLevel(),
                                             logging.WARNING))
    # The registry follows the tracking URI unless MLFLOW_REGISTRY_URI says otherwise (MLflow
    # reads that variable itself; calling set_registry_uri would export and pin it).
    mlflow.set_tracking_uri(uri)
    return uri


def tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def git_commit() -> str:
    """The commit of the code doing the work, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parents[1],  # the ctloop package folder
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def experiment_id(name: str) -> str:
    """The experiment's id, created (and tagged as model development) if it does not exist."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        try:
            return mlflow.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception:  # created concurrently by another process
            experiment = mlflow.get_experiment_by_name(name)
            if experiment is None:
                raise
    if EXPERIMENT_KIND_TAG not in experiment.tags:  # made before ctloop tagged its experiments
        _client().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG,
                                     EXPERIMENT_KIND)
    return experiment.experiment_id


def use_experiment(experiment_id: str) -> None:
    """Make an experiment active without leaking MLFLOW_EXPERIMENT_ID into child processes
    (mlflow.set_experiment exports it, and `mlflow run` then refuses --experiment-name)."""
    import mlflow

    mlflow.set_experiment(experiment_id=experiment_id)
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


def run_info(run_id: str) -> dict[str, Any]:
    run = _client().get_run(run_id)
    return {"run_id": run_id, "status": run.info.status, "tags": dict(run.data.tags),
            "params": dict(run.data.params), "metrics": dict(run.data.metrics),
            "start_time": run.info.start_time, "experiment_id": run.info.experiment_id}


def set_run_tags(run_id: str, tags: Mapping[str, str]) -> None:
    client = _client()
    for key, value in tags.items():
        client.set_tag(run_id, key, _short(value))


def _short(value: Any) -> str:
    """The value as text, cut to a length MLflow accepts for a param or tag."""
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."
