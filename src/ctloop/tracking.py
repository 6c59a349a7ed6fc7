"""Everything ctloop writes to or reads from MLflow tracking (runs, artifacts, logged models).

With `registry`, the only module that imports MLflow: stages call these functions with plain
values, so swapping the embedded SQLite store for a team server changes nothing above here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from ctloop.data import Dataset
from ctloop.model import TabularModel

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MODEL_NAME_IN_RUN = "model"
MODEL_DATA_DIR = "ctloop_model"
REFERENCE_ARTIFACT = "reference/train.parquet"
RUN_KIND_TAG = "ctloop.kind"
TRAINING_KIND = "training"
TRIAL_KIND = "trial"
MONITOR_KIND = "monitor"
# Runtime packages a logged model needs, pinned to what trained it.
MODEL_REQUIREMENTS = ("mlflow", "pandas", "numpy", "scipy", "scikit-learn", "xgboost", "skops",
                      "pyarrow")  # fmt: skip


def configure() -> str:
    """Point MLflow at MLFLOW_TRACKING_URI, or the embedded SQLite store by default."""
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(os.environ.get("MLFLOW_REGISTRY_URI") or uri)
    return uri


def git_commit() -> str:
    """The commit of the code doing the work, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def experiment_id(name: str) -> str:
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return mlflow.create_experiment(name)
    except Exception:  # created concurrently by another process
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _model_signature(model: TabularModel, label_example: Any):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([
        ColSpec("string" if col in model.encoder.vocabularies else "double", col, required=False)
        for col in model.feature_columns
    ])  # fmt: skip
    label_type = "string" if isinstance(label_example, str) else (
        "boolean" if isinstance(label_example, bool) else
        "long" if isinstance(label_example, int) else "double")  # fmt: skip
    outputs = Schema([ColSpec("double", "probability"), ColSpec(label_type, "label")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def _requirements() -> list[str]:
    pins = []
    for package in MODEL_REQUIREMENTS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            pins.append(f"{package}=={metadata.version(package)}")
    return pins


@dataclass(frozen=True)
class TrialRecord:
    """What a finished trial hands to the tracker: all computed in the worker process."""

    name: str
    family: str
    params: Mapping[str, Any]
    metrics: Mapping[str, float]
    model_dir: Path
    plot_dir: Path | None
    input_example: pd.DataFrame


class TrainingRun:
    """One parent run per `ctloop train`, with a child run per trial."""

    def __init__(self, run_id: str, experiment: str) -> None:
        self.run_id = run_id
        self.experiment = experiment

    def log_dataset(self, dataset: Dataset, split: str) -> None:
        import mlflow

        ds = mlflow.data.from_pandas(
            dataset.frame, source=dataset.source, targets=dataset.target, name=f"{split}"
        )
        mlflow.log_input(ds, context=split)

    def log_reference(self, frame: pd.DataFrame) -> None:
        """The training rows, so the monitor can compare live traffic to them later."""
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(REFERENCE_ARTIFACT).name
            frame.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), artifact_path=str(Path(REFERENCE_ARTIFACT).parent))

    def log_trial(self, record: TrialRecord, model: TabularModel, tags: Mapping[str, str]) -> str:
        """A child run with params, metrics, plots and the pyfunc model; returns the model URI."""
        import mlflow

        with mlflow.start_run(run_name=record.name, nested=True) as child:
            mlflow.set_tags({**tags, RUN_KIND_TAG: TRIAL_KIND, "ctloop.family": record.family,
                             "ctloop.parent_run_id": self.run_id})  # fmt: skip
            mlflow.log_params({k: _short(v) for k, v in record.params.items()})
            mlflow.log_metrics(dict(record.metrics))
            if record.plot_dir is not None:
                mlflow.log_artifacts(str(record.plot_dir), artifact_path="plots")
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME_IN_RUN,
                loader_module="ctloop.model",
                data_path=str(record.model_dir),
                code_paths=[str(Path(__file__).resolve().parent)],
                signature=_model_signature(model, model.positive_label),
                input_example=record.input_example,
                pip_requirements=_requirements(),
            )
            mlflow.set_tag("ctloop.model_uri", info.model_uri)
            return child.info.run_id

    def mark_best(self, trial_run_id: str, metric: str, value: float) -> None:
        import mlflow

        uri = f"runs:/{trial_run_id}/{MODEL_NAME_IN_RUN}"
        mlflow.set_tags({"ctloop.best_trial_run_id": trial_run_id, "ctloop.best_model_uri": uri})
        mlflow.log_metric(f"best_{metric}", value)


@contextlib.contextmanager
def training_run(
    experiment: str, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]
) -> Iterator[TrainingRun]:
    """Start the parent run; any exception (or Ctrl-C) ends it FAILED, never left RUNNING."""
    import mlflow

    mlflow.set_experiment(experiment_id=experiment_id(experiment))
    with mlflow.start_run(run_name=run_name, tags={**tags, RUN_KIND_TAG: TRAINING_KIND}) as run:
        mlflow.log_params({k: _short(v) for k, v in params.items()})
        yield TrainingRun(run.info.run_id, experiment)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def latest_training_run(experiment: str) -> str | None:
    """The newest finished training (parent) run of the experiment."""
    import mlflow

    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = _client().search_runs(
        [exp.experiment_id],
        filter_string=(
            f"tags.`{RUN_KIND_TAG}` = '{TRAINING_KIND}' and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def trial_runs(parent_run_id: str) -> list[dict[str, Any]]:
    """The children of a training run with their metrics, params and tags."""
    parent = _client().get_run(parent_run_id)
    runs = _client().search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=1000,
    )
    return [
        {"run_id": r.info.run_id, "name": r.info.run_name, "metrics": dict(r.data.metrics),
         "params": dict(r.data.params), "tags": dict(r.data.tags)}
        for r in runs
    ]  # fmt: skip


def run_info(run_id: str) -> dict[str, Any]:
    run = _client().get_run(run_id)
    return {"run_id": run_id, "status": run.info.status, "tags": dict(run.data.tags),
            "params": dict(run.data.params), "metrics": dict(run.data.metrics),
            "start_time": run.info.start_time, "experiment_id": run.info.experiment_id}  # fmt: skip


def download_model_dir(model_uri: str, dst: str | Path | None = None) -> Path:
    """Fetch a logged pyfunc model and return its ctloop data folder."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=(
        str(dst) if dst else None)))  # fmt: skip
    return local / "data" / MODEL_DATA_DIR


def load_model(model_uri: str) -> TabularModel:
    """The TabularModel behind a logged model URI (runs:/, models:/ ...), without pyfunc glue."""
    return TabularModel.load(download_model_dir(model_uri))


def load_reference(training_run_id: str) -> pd.DataFrame:
    import mlflow

    path = mlflow.artifacts.download_artifacts(run_id=training_run_id,
                                               artifact_path=REFERENCE_ARTIFACT)  # fmt: skip
    return pd.read_parquet(path)
