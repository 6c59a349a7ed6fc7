"""Project runs: rerunning the MLflow project (`mlflow.projects.run`) to retrain on drift.

Why a module of its own: launching `mlflow run` as a child process has its own care — an
absolute store URI for the child's working folder, `ctloop` on PATH, tagging the run before it
works, and never leaving it RUNNING (Ctrl-C, or an exit code that says little).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from ctloop.tracking.store import _client, experiment_id, set_run_tags


def _absolute_tracking_uri(uri: str) -> str:
    """A relative sqlite path would point elsewhere once the project runs in its own folder."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix):]).resolve())
    if "://" not in uri:
        return str(Path(uri).resolve())
    return uri


def run_project(
    project_uri: str, entry_point: str, parameters: Mapping[str, str],
    experiment: str, env_manager: str, tags: Mapping[str, str],
) -> tuple[str, str]:  # fmt: skip
    """Rerun the MLflow project (`mlflow.projects.run`) and wait; returns (run_id, status).

    Submitted asynchronously so the run can be tagged at once: MLflow then runs the entry
    point through an `mlflow run` child process, whose exit code is only 0 or 1, so callers
    judge the outcome from what the run produced (see `mark_finished`).

    The run is tagged before it starts working, so its trigger is recorded even if it fails.
    The console script's folder goes first on PATH so the entry point finds `ctloop`.
    """
    import sys

    import mlflow
    import mlflow.projects

    old_uri, old_path = mlflow.get_tracking_uri(), os.environ.get("PATH", "")
    mlflow.set_tracking_uri(_absolute_tracking_uri(old_uri))
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), old_path])
    submitted = None
    try:
        submitted = mlflow.projects.run(
            project_uri, entry_point=entry_point, parameters=dict(parameters),
            experiment_id=experiment_id(experiment), env_manager=env_manager,
            synchronous=False, run_name=f"retrain-{time.strftime('%Y%m%d-%H%M%S')}",
        )  # fmt: skip
        set_run_tags(submitted.run_id, tags)
        ok = submitted.wait()
    except KeyboardInterrupt:
        if submitted is not None:
            submitted.cancel()
            _terminate_if_running(submitted.run_id, "FAILED")
        raise
    finally:
        os.environ["PATH"] = old_path
        mlflow.set_tracking_uri(old_uri)
    _terminate_if_running(submitted.run_id, "FINISHED" if ok else "FAILED")
    return submitted.run_id, _client().get_run(submitted.run_id).info.status


def mark_finished(run_id: str) -> None:
    """Record a run as FINISHED (e.g. a retraining whose challenger the gate rejected)."""
    _client().set_terminated(run_id, "FINISHED")


def _terminate_if_running(run_id: str, status: str) -> None:
    client = _client()
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, status)
