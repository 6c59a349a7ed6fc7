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
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctloop.data import Dataset
from ctloop.features import FeatureEncoder
from ctloop.model import TabularModel
from ctloop.tasks import Task

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MODEL_NAME_IN_RUN = "model"
MODEL_DATA_DIR = "ctloop_model"
REFERENCE_ARTIFACT = "reference/train.parquet"
HOLDOUT_ARTIFACT = "evaluation/holdout.parquet"
RUN_KIND_TAG = "ctloop.kind"
TRAINING_KIND = "training"
TRIAL_KIND = "trial"
GATE_KIND = "gate"
MONITOR_KIND = "monitor"
# Runtime packages a logged model needs, pinned to what trained it.
MODEL_REQUIREMENTS = ("mlflow", "pandas", "numpy", "scipy", "scikit-learn", "xgboost", "skops",
                      "pyarrow")


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


def git_commit() -> str:
    """The commit of the code doing the work, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


# MLflow 3's UI opens an experiment on its GenAI overview unless it is tagged as model
# development; ctloop's experiments hold training, gate and monitor runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


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


def input_types(encoder: FeatureEncoder) -> dict[str, str]:
    """Each raw input column's signature type: `string` for text categories, `Any` for the
    rest, so that int64, float, bool and date columns straight from `pd.read_csv` or
    `pd.read_parquet` pass MLflow's schema enforcement (it refuses int64 -> double, and a
    column stored as int in one file and float in the next); the model converts them."""
    text = set(encoder.string_columns)
    return {col: "string" if col in text else "any" for col in encoder.columns}


def _model_signature(encoder: FeatureEncoder, task: Task):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    inputs = Schema([
        ColSpec(AnyType() if kind == "any" else kind, col, required=False)
        for col, kind in input_types(encoder).items()
    ])
    outputs = Schema([ColSpec(kind, name) for name, kind in task.output_types().items()])
    return ModelSignature(inputs=inputs, outputs=outputs)


_CODE_SNAPSHOT: list[Path] = []


def _code_snapshot() -> Path:
    """ctloop's source without bytecode caches, copied once per process: each logged model
    bundles it, and against a team server every file is one upload."""
    if not _CODE_SNAPSHOT or not _CODE_SNAPSHOT[0].exists():
        import atexit
        import shutil

        target = Path(tempfile.mkdtemp(prefix="ctloop-code-")) / "ctloop"
        atexit.register(shutil.rmtree, target.parent, True)
        shutil.copytree(Path(__file__).resolve().parent, target,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        _CODE_SNAPSHOT[:] = [target]
    return _CODE_SNAPSHOT[0]


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

    def log_frame(self, frame: pd.DataFrame, artifact: str) -> None:
        """A frame as a Parquet artifact: the training rows (the monitor's reference) and the
        holdout (the gate scores challenger and champion on exactly these rows)."""
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact).name
            frame.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), artifact_path=str(Path(artifact).parent))

    def log_trial(self, record: TrialRecord, encoder: FeatureEncoder, task: Task,
                  tags: Mapping[str, str]) -> str:
        """A child run with params, metrics, plots and the pyfunc model; returns the model URI."""
        import mlflow

        with mlflow.start_run(run_name=record.name, nested=True) as child:
            mlflow.set_tags({**tags, RUN_KIND_TAG: TRIAL_KIND, "ctloop.family": record.family,
                             "ctloop.parent_run_id": self.run_id})
            mlflow.log_params({k: _short(v) for k, v in record.params.items()})
            mlflow.log_metrics(dict(record.metrics))
            if record.plot_dir is not None:
                mlflow.log_artifacts(str(record.plot_dir), artifact_path="plots")
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME_IN_RUN,
                loader_module="ctloop.model",
                data_path=str(record.model_dir),
                code_paths=[str(_code_snapshot())],
                signature=_model_signature(encoder, task),
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

    use_experiment(experiment_id(experiment))
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
    ]


def run_info(run_id: str) -> dict[str, Any]:
    run = _client().get_run(run_id)
    return {"run_id": run_id, "status": run.info.status, "tags": dict(run.data.tags),
            "params": dict(run.data.params), "metrics": dict(run.data.metrics),
            "start_time": run.info.start_time, "experiment_id": run.info.experiment_id}


def download_model_dir(model_uri: str, dst: str | Path | None = None) -> Path:
    """Fetch a logged pyfunc model and return its ctloop data folder."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=(
        str(dst) if dst else None)))
    if not (local / "MLmodel").exists():
        # A models:/ version whose source is runs:/<id>/model lands in <dst>/model/ instead.
        nested = [p.parent for p in local.glob("*/MLmodel")]
        if len(nested) == 1:
            local = nested[0]
    return local / "data" / MODEL_DATA_DIR


def load_model(model_uri: str) -> TabularModel:
    """The TabularModel behind a logged model URI (runs:/, models:/ ...), without pyfunc glue."""
    return TabularModel.load(download_model_dir(model_uri))


def load_frame(run_id: str, artifact: str) -> pd.DataFrame:
    import mlflow

    return pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id,
                                                               artifact_path=artifact))


def load_reference(training_run_id: str) -> pd.DataFrame:
    return load_frame(training_run_id, REFERENCE_ARTIFACT)


def load_holdout(training_run_id: str) -> pd.DataFrame:
    return load_frame(training_run_id, HOLDOUT_ARTIFACT)


@contextlib.contextmanager
def gate_run(parent_run_id: str, tags: Mapping[str, str]) -> Iterator[str]:
    """A child run of the training run that holds one gate evaluation and its decision record."""
    import mlflow

    parent = _client().get_run(parent_run_id)
    use_experiment(parent.info.experiment_id)
    with mlflow.start_run(run_name=f"gate-{time.strftime('%Y%m%d-%H%M%S')}", nested=True,
                          parent_run_id=parent_run_id,
                          tags={**tags, RUN_KIND_TAG: GATE_KIND}) as run:
        yield run.info.run_id


def log_metrics(metrics: Mapping[str, float]) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})


def log_text(text: str, artifact_file: str) -> str:
    """Write text as an artifact of the active run; returns its artifact URI."""
    import mlflow

    mlflow.log_text(text, artifact_file)
    return f"{mlflow.get_artifact_uri()}/{artifact_file}"


def evaluate_floors(
    task: Task, y: Any, scores: Any, floors: Mapping[str, float]
) -> tuple[dict[str, float], list[str]]:
    """Absolute floors through MLflow's own evaluate + validate_evaluation_results.

    The scored holdout is evaluated as a static dataset with the task's `model_type`
    ("classifier" or "regressor"), so MLflow computes its built-in metrics (accuracy_score,
    f1_score, r2_score, root_mean_squared_error, ...) and a floor may name any of them; ctloop's
    own metrics of the task (which need the probabilities MLflow does not see) are added as
    custom metrics under their usual names. MLflow's MetricThreshold decides. Returns the
    evaluated metrics and one message per failed floor.
    """
    import mlflow
    from mlflow.models import MetricThreshold, make_metric
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    ours = task.metrics(np.asarray(y), np.asarray(scores))

    def metric_fn(name: str):
        def eval_fn(predictions, targets, metrics=None):
            return ours[name]

        return make_metric(eval_fn=eval_fn, greater_is_better=name not in task.lower_is_better,
                           name=name)

    truth, predicted, config = _evaluation_columns(task, np.asarray(y), np.asarray(scores))
    data = pd.DataFrame({"prediction": predicted, "target": truth})
    evaluation_log = logging.getLogger("mlflow.models.evaluation")
    level = evaluation_log.level
    evaluation_log.setLevel(logging.ERROR)  # its label-based type guess misfires on small sets
    try:
        result = mlflow.models.evaluate(
            data=data, predictions="prediction", targets="target",
            model_type=task.mlflow_model_type,
            extra_metrics=[metric_fn(n) for n in floors if n in ours],
            evaluator_config={"log_model_explainability": False, **config},
        )
    finally:
        evaluation_log.setLevel(level)
    unknown = [n for n in floors if n not in result.metrics]
    if unknown:
        raise ValueError(f"gate.floors: unknown metric '{unknown[0]}' for a {task.kind} model "
                         f"(available: {', '.join(sorted(result.metrics))})")
    thresholds = {
        name: MetricThreshold(threshold=value, greater_is_better=_higher_is_better(task, name))
        for name, value in floors.items()
    }
    failures: list[str] = []
    try:
        mlflow.validate_evaluation_results(thresholds, result)
    except ModelValidationFailedException as exc:
        failures = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return {k: float(v) for k, v in result.metrics.items()}, failures


def _evaluation_columns(task: Task, y: np.ndarray,
                        scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Targets and predictions as MLflow's evaluator wants them: class names for classifiers
    (so its per-class artifacts are readable), values for regressors."""
    if task.kind == "regression":
        return y, scores, {}
    if task.kind == "multiclass":
        names = np.array([str(c) for c in task.classes], dtype=object)
        return names[y.astype(int)], names[scores.argmax(axis=1)], {}
    positive, negative = str(task.positive_label), str(task.negative_label)
    predicted = np.where(scores >= task.threshold, positive, negative)
    return np.where(y == 1, positive, negative), predicted, {"pos_label": positive}


def _higher_is_better(task: Task, name: str) -> bool:
    if name in task.metric_names:
        return name not in task.lower_is_better
    return not any(word in name for word in ("error", "loss", "false_"))


_PROBE = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import mlflow
uri = sys.argv[1]
model = mlflow.pyfunc.load_model(uri)
example = model.input_example
if example is None:
    raise SystemExit("the model has no input example")
out = model.predict(example)
row = example.head(1)
times = []
for _ in range(30):
    start = time.perf_counter(); model.predict(row); times.append(time.perf_counter() - start)
times.sort()
cols = list(out.columns)
print(json.dumps({"rows": len(out), "columns": cols, "latency_ms": 1000 * times[len(times) // 2]}))
"""


def probe_in_fresh_process(model_uri: str, timeout_s: float = 300.0) -> dict[str, Any]:
    """Load the model with mlflow.pyfunc in a new interpreter and score its input example.

    This is the infrastructure check: what `mlflow models serve` or another team's process
    will do with the model. Returns {"ok", "error", "rows", "latency_ms", "seconds"}.
    """
    import json
    import sys

    start = time.perf_counter()
    env = {**os.environ, "MLFLOW_TRACKING_URI": _current_tracking_uri()}
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, model_uri], capture_output=True,
                              text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout_s:.0f} s", "seconds": timeout_s}
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "error": tail[:500], "seconds": seconds}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"ok": True, "error": "", "seconds": seconds, **result}


def _current_tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def signature_inputs(model_uri: str) -> dict[str, str]:
    """Input column -> declared type of a logged model's signature ({} when it has none)."""
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    if signature is None or signature.inputs is None:
        return {}
    specs = signature.inputs.inputs
    return {spec.name: getattr(spec.type, "name", str(spec.type).lower()) for spec in specs}


# --- monitoring (ctloop monitor) ------------------------------------------------------------
RETRAIN_TAG = "ctloop.retrain"
RETRAIN_LAUNCHED = "launched"


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


def set_run_tags(run_id: str, tags: Mapping[str, str]) -> None:
    client = _client()
    for key, value in tags.items():
        client.set_tag(run_id, key, _short(value))


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
