"""Training runs: the parent run of `ctloop train`, a child run per trial, the logged models.

Why a module of its own: this is where a trained candidate becomes a standard MLflow pyfunc
model (signature, bundled ctloop source, pinned requirements), and where `select` finds the
training run and its trials again.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctloop.data import Dataset
from ctloop.features import FeatureEncoder
from ctloop.tasks import Task
from ctloop.tracking.layout import (
    MODEL_NAME_IN_RUN,
    OUT_OF_FOLD_ARTIFACT,
    RUN_KIND_TAG,
    TRAINING_KIND,
    TRIAL_KIND,
)
from ctloop.tracking.store import _client, _short, experiment_id, use_experiment

# Runtime packages a logged model needs, pinned to what trained it.
MODEL_REQUIREMENTS = ("mlflow", "pandas", "numpy", "scipy", "scikit-learn", "xgboost",
                      "lightgbm", "skops", "pyarrow")

log = logging.getLogger(__name__)


def input_types(encoder: FeatureEncoder) -> dict[str, str]:
    """Each raw input column's signature type: `Any`, so that MLflow's schema enforcement
    lets through whatever dtype pandas gave the column and the model converts it itself.
    A concrete type refuses frames that `pd.read_csv` and `pd.read_parquet` make every day:
    `double` an int64 column; `string` a category column, a text column that is empty in a
    small file (read as float64 NaN), and codes that pandas read as numbers; and `string`
    turns the missing values of a pyarrow-backed frame into the text '<NA>'."""
    return dict.fromkeys(encoder.columns, "any")


def _model_signature(encoder: FeatureEncoder, task: Task):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    inputs = Schema([ColSpec(AnyType(), col, required=False) for col in input_types(encoder)])
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
        # parents[1]: the whole ctloop package folder, not this tracking/ subpackage.
        shutil.copytree(Path(__file__).resolve().parents[1], target,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        _CODE_SNAPSHOT[:] = [target]
    return _CODE_SNAPSHOT[0]


@functools.cache
def _requirements() -> tuple[str, ...]:
    """The installed versions, looked up once per process (each lookup reads package
    metadata from disk: 50 ms a model)."""
    pins = []
    for package in MODEL_REQUIREMENTS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            pins.append(f"{package}=={metadata.version(package)}")
    return tuple(pins)


def installed_modules() -> dict[str, list[str]]:
    """MLflow's map from importable modules to the installed distributions providing them.

    MLflow builds it in each process at the first model logged, to warn when the model's
    requirements do not match this environment, by reading every installed package's
    metadata (1 s of CPU). A training has an idle worker build it while its own process loads
    the data, and hands the map to MLflow (`adopt_installed_modules`) before its first model
    log, rather than pay that second while its workers fit the last trials.
    """
    from mlflow.utils import requirements_utils

    requirements_utils._init_modules_to_packages_map()
    return requirements_utils._MODULES_TO_PACKAGES


def installed_modules_known() -> bool:
    """Whether this process's MLflow has the map already (from an earlier model log)."""
    from mlflow.utils import requirements_utils

    return requirements_utils._MODULES_TO_PACKAGES is not None


def adopt_installed_modules(modules: dict[str, list[str]]) -> None:
    """Give MLflow the map `installed_modules` built in another process of this environment,
    unless it has one."""
    from mlflow.utils import requirements_utils

    if requirements_utils._MODULES_TO_PACKAGES is None:
        requirements_utils._MODULES_TO_PACKAGES = modules


def dataset_schema(frame: pd.DataFrame):
    """The schema MLflow infers for a logged dataset, inferred from each column's distinct
    values (for a numeric, boolean or date column, from one present and one missing value:
    its dtype gives the type): the type and whether a value is missing depend only on those,
    and MLflow's own inference looks at every cell in Python (0.5 s of CPU on the flights
    demo's training rows, taken from the workers while they fit; the distinct departure
    times of the flights still took 0.3 s). None where MLflow infers none (a column mixing
    types)."""
    from mlflow.types import Schema
    from mlflow.types.utils import _infer_schema

    specs = []
    for name in frame.columns:
        column = frame[name]
        if column.dtype.kind in "biufcmM" and len(column):  # typed by the dtype alone:
            missing = column.isna().to_numpy()  # a present value and a missing one suffice
            column = column.iloc[sorted({int(np.argmin(missing)), int(np.argmax(missing))})]
        else:
            with contextlib.suppress(TypeError):  # unhashable cells (lists): infer from all
                column = column.drop_duplicates()
        try:
            specs.extend(_infer_schema(column.to_frame(name)).inputs)
        except Exception:  # what `PandasDataset.schema` catches too
            return None
    return Schema(specs)


@dataclass(frozen=True)
class TrialRecord:
    """What a finished trial hands to the tracker: all computed in the worker process."""

    name: str
    family: str
    params: Mapping[str, Any]
    metrics: Mapping[str, float]


class TrainingRun:
    """One parent run per `ctloop train`, with a child run per trial."""

    def __init__(self, run_id: str, experiment: str, experiment_id: str,
                 installed_modules: Callable[[], dict[str, list[str]]] | None = None) -> None:
        self.run_id = run_id
        self.experiment = experiment
        self.experiment_id = experiment_id
        self._installed_modules = installed_modules  # `installed_modules()`, built elsewhere

    def log_inputs(self, dataset: Dataset, split: str,
                   frames: Mapping[str, pd.DataFrame]) -> None:
        """The training split as the run's MLflow dataset input, and each frame as a Parquet
        artifact: the training rows (the monitor's reference) and the holdout (the gate
        scores challenger and champion on exactly these rows).

        Through the client with this run's id, not the fluent API: it runs on a thread of its
        own while the trials fit (hashing and writing ~100k rows takes seconds), and MLflow's
        active run is per thread.
        """
        import mlflow
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        client = _client()
        ds = mlflow.data.from_pandas(
            dataset.frame, source=dataset.source, targets=dataset.target, name=f"{split}"
        )
        ds.__dict__["schema"] = dataset_schema(dataset.frame)  # what `ds.schema` would infer
        # The entity is what `mlflow.log_input` builds too; only the fluent call is per thread.
        client.log_inputs(self.run_id, datasets=[DatasetInput(
            ds._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, split)])])
        with tempfile.TemporaryDirectory() as tmp:
            for artifact, frame in frames.items():
                path = Path(tmp) / Path(artifact).name
                frame.to_parquet(path, index=False)
                client.log_artifact(self.run_id, str(path), str(Path(artifact).parent))

    def log_out_of_fold(self, labels: np.ndarray, scores: np.ndarray) -> None:
        """The best trial's out-of-fold scores of every training + validation row, with
        their encoded labels: a cross-validated champion's expected level on far more rows
        than its holdout (`ctloop.monitor` reads them back)."""
        columns = np.asarray(scores, dtype=np.float64).reshape(len(labels), -1)
        frame = pd.DataFrame({"label": np.asarray(labels, dtype=np.float64), **{
            f"score_{k}": columns[:, k] for k in range(columns.shape[1])}})
        folder, name = OUT_OF_FOLD_ARTIFACT.rsplit("/", 1)
        with tempfile.TemporaryDirectory() as tmp:
            frame.to_parquet(Path(tmp) / name, index=False)
            _client().log_artifact(self.run_id, str(Path(tmp) / name), folder)

    def log_trial(self, record: TrialRecord, tags: Mapping[str, str]) -> str:
        """A finished child run with the trial's params, metrics and tags (one batch write,
        cheap enough to keep up with the workers); returns its run id."""
        from mlflow.entities import Metric, Param
        from mlflow.utils.time import get_current_time_millis

        client = _client()
        child = client.create_run(self.experiment_id, run_name=record.name, tags={
            **tags, RUN_KIND_TAG: TRIAL_KIND, "ctloop.family": record.family,
            "ctloop.parent_run_id": self.run_id, "mlflow.parentRunId": self.run_id})
        now = get_current_time_millis()
        client.log_batch(
            child.info.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in record.metrics.items()],
            params=[Param(k, _short(v)) for k, v in record.params.items()],
        )
        client.set_terminated(child.info.run_id)
        return child.info.run_id

    def log_trial_model(self, trial_run_id: str, model_dir: Path, encoder: FeatureEncoder,
                        task: Task, input_example: pd.DataFrame, fitted_rows: int) -> str:
        """The pyfunc model on a trial's child run (with how many rows the model was
        refitted on: training + validation); returns the model URI."""
        import mlflow

        if self._installed_modules is not None:
            built, self._installed_modules = self._installed_modules, None
            try:
                adopt_installed_modules(built())
            except Exception:  # MLflow then builds the map itself
                log.debug("the installed modules' map was not built", exc_info=True)
        with mlflow.start_run(run_id=trial_run_id, nested=True):
            mlflow.log_param("model_fitted_rows", fitted_rows)
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME_IN_RUN,
                loader_module="ctloop.model",
                data_path=str(model_dir),
                code_paths=[str(_code_snapshot())],
                signature=_model_signature(encoder, task),
                input_example=input_example,
                pip_requirements=list(_requirements()),
            )
            mlflow.set_tag("ctloop.model_uri", info.model_uri)
        return info.model_uri

    def log_trial_plots(self, trial_run_id: str, plot_dir: Path) -> None:
        """A trial's plots, under `plots/` of its child run."""
        _client().log_artifacts(trial_run_id, str(plot_dir), "plots")

    def log_search(self, stopped_by: str, trials: int, seconds: float) -> None:
        """What ended the search (`trials` or `time_budget`), after how many trials and
        seconds: the first thing to look at when a champion seems under-tuned."""
        import mlflow

        mlflow.set_tag("ctloop.search_stopped_by", stopped_by)
        mlflow.log_metrics({"n_trials": trials, "search_seconds": seconds})

    def mark_best(self, trial_run_id: str, metric: str, value: float) -> None:
        import mlflow

        uri = f"runs:/{trial_run_id}/{MODEL_NAME_IN_RUN}"
        mlflow.set_tags({"ctloop.best_trial_run_id": trial_run_id, "ctloop.best_model_uri": uri})
        mlflow.log_metric(f"best_{metric}", value)


@contextlib.contextmanager
def training_run(
    experiment: str, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str],
    installed_modules: Callable[[], dict[str, list[str]]] | None = None,
) -> Iterator[TrainingRun]:
    """Start the parent run; any exception (or Ctrl-C) ends it FAILED, never left RUNNING.
    `installed_modules`: waits for the map `installed_modules()` built in a worker."""
    import mlflow

    use_experiment(experiment_id(experiment))
    with mlflow.start_run(run_name=run_name, tags={**tags, RUN_KIND_TAG: TRAINING_KIND}) as run:
        mlflow.log_params({k: _short(v) for k, v in params.items()})
        yield TrainingRun(run.info.run_id, experiment, run.info.experiment_id,
                          installed_modules)


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
