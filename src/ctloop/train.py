"""Train every candidate trial in parallel and log one parent run with a child per trial.

The heavy work of a trial (fit, score, plots, saving the model files) runs in a worker
process; the parent only streams finished trials into MLflow, so logging overlaps fitting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

from ctloop import tracking
from ctloop.candidates import Trial, feature_importance, fit_estimator, sample_trials
from ctloop.config import Config, ConfigError
from ctloop.data import Dataset, Splits, load_dataset, split_dataset
from ctloop.features import FeatureEncoder
from ctloop.model import TabularModel
from ctloop.tasks import Task, TaskError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialResult:
    name: str
    family: str
    run_id: str
    metrics: dict[str, float]


@dataclass
class TrainResult:
    run_id: str
    experiment: str
    primary_metric: str
    task: str = ""  # e.g. "multiclass (3 classes: 'Adelie', ...)"
    task_reason: str = ""
    trials: list[TrialResult] = field(default_factory=list)
    window: tuple[str | None, str | None] = (None, None)
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # where the wall time went
    excluded: dict[str, str] = field(default_factory=dict)  # columns not used, and why
    notes: dict[str, str] = field(default_factory=dict)  # how other columns are used

    @property
    def best(self) -> TrialResult:
        return self.trials[0]


ProgressCallback = Callable[[int, int, TrialResult | None], None]


def _run_trial(trial: Trial, encoder: FeatureEncoder, splits_xy: tuple, task: Task,
               workdir: str, plots: bool) -> tracking.TrialRecord:
    """Fit and score one trial (in a worker): everything but the MLflow calls."""
    X_train, y_train, X_val, y_val, example = splits_xy
    with threadpool_limits(1):
        start = time.perf_counter()
        estimator = fit_estimator(trial, task.kind, X_train, y_train,
                                  encoder.categorical_indices)
        fit_seconds = time.perf_counter() - start
    if trial.family == "xgboost":
        estimator = estimator.get_booster()
    model = TabularModel(encoder, estimator, trial.family, task)
    scores = model.scores_encoded(X_val)
    model.task = task.fit_threshold(y_val, scores)
    metrics = model.task.metrics(y_val, scores)
    metrics["fit_seconds"] = fit_seconds
    folder = Path(workdir) / trial.name
    model.save(folder / tracking.MODEL_DATA_DIR)
    plot_dir = None
    if plots:
        importance = feature_importance(
            estimator if trial.family != "xgboost" else _xgb_importance(estimator, encoder),
            encoder.n_features,
        )
        plot_dir = folder / "plots"
        model.task.plots(plot_dir, y_val, scores, list(encoder.feature_names), importance)
    return tracking.TrialRecord(trial.name, trial.family, trial.params, metrics,
                                folder / tracking.MODEL_DATA_DIR, plot_dir, example)


class _Importance:
    def __init__(self, values: np.ndarray) -> None:
        self.feature_importances_ = values


def _xgb_importance(booster, encoder: FeatureEncoder) -> _Importance:
    gains = booster.get_score(importance_type="gain")
    values = np.array([gains.get(f"f{i}", 0.0) for i in range(encoder.n_features)])
    return _Importance(values / values.sum() if values.sum() else values)


def train(cfg: Config, on_progress: ProgressCallback | None = None,
          extra_tags: dict[str, str] | None = None) -> TrainResult:
    """Load, split, fit every trial in parallel, log it all; returns trials best first."""
    started = time.perf_counter()
    dataset = load_dataset(cfg.data)
    splits: Splits = split_dataset(dataset, cfg.split)
    task = dataset.task
    try:
        metric = task.primary_metric(cfg.training.primary_metric)
    except TaskError as exc:
        raise ConfigError(str(exc)) from None
    encoder = FeatureEncoder.fit(splits.train.frame, dataset.feature_columns, dataset.kinds,
                                 cfg.data.features.max_categories)
    X_train = encoder.encode_frame(splits.train.frame)
    X_val = encoder.encode_frame(splits.validation.frame)
    example = splits.validation.X.head(3).reset_index(drop=True)
    xy = (X_train, splits.train.y, X_val, splits.validation.y, example)
    trials = sample_trials(cfg.training.candidates, cfg.training.seed)
    window = dataset.window_bounds()
    rows = {"train": len(splits.train.frame), "validation": len(splits.validation.frame),
            "holdout": len(splits.holdout.frame), **{f"dropped_{k}": v for k, v in
                                                     dataset.dropped_rows.items()}}
    tags = {
        "ctloop.config_hash": cfg.digest(),
        "ctloop.git_commit": tracking.git_commit(),
        "ctloop.data_source": dataset.source,
        "ctloop.window_start": str(cfg.data.window.start or window[0]),
        "ctloop.window_end": str(cfg.data.window.end or window[1]),
        **(extra_tags or {}),
    }
    tags.update(column_tags(dataset))
    params = {"n_trials": len(trials), "primary_metric": metric, "task": task.kind,
              "features": ",".join(dataset.feature_columns), "target": dataset.target,
              **{f"rows_{k}": v for k, v in rows.items()}}
    if task.kind == "binary":
        params["positive_label"] = task.positive_label
    result = TrainResult("", cfg.name, metric, task=task.describe(),
                         task_reason=dataset.task_reason, window=window, rows=rows,
                         excluded=dict(dataset.excluded), notes=dict(dataset.notes))
    if on_progress:
        on_progress(0, len(trials), None)
    with (
        tempfile.TemporaryDirectory(prefix="ctloop-train-") as workdir,
        tracking.training_run(cfg.name, f"train-{time.strftime('%Y%m%d-%H%M%S')}", params,
                              tags) as run,
    ):
        result.run_id = run.run_id
        run.log_dataset(splits.train, "training")
        kept = [*dataset.feature_columns, dataset.target]
        if dataset.time_column:
            kept.append(dataset.time_column)
        run.log_frame(splits.train.frame[kept], tracking.REFERENCE_ARTIFACT)
        run.log_frame(splits.holdout.frame[kept], tracking.HOLDOUT_ARTIFACT)
        result.phases["prepare_and_log_inputs"] = round(time.perf_counter() - started, 2)
        trials_started = time.perf_counter()
        with _trial_parallelism(cfg, len(trials), shared=[encoder, xy]) as n_jobs:
            jobs = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
            if cfg.compute.backend == "local":
                done = jobs(delayed(_run_trial)(t, encoder, xy, task, workdir,
                                                cfg.training.plots) for t in trials)
            else:  # a Dask worker may be another machine: its files come back as bytes
                done = (_unpack_trial(record, payload, workdir) for record, payload in jobs(
                    delayed(_run_trial_shipped)(t, encoder, xy, task, cfg.training.plots)
                    for t in trials))
            result.trials = list(_log_trials(run, done, encoder, task, tags, len(trials),
                                             on_progress))
        result.phases["trials_fit_and_logged"] = round(time.perf_counter() - trials_started, 2)
        key = task.sort_key(metric)
        result.trials.sort(key=lambda t: _nan_last(key(t.metrics.get(metric, float("nan")))))
        run.mark_best(result.best.run_id, metric, result.best.metrics[metric])
    result.seconds = time.perf_counter() - started
    return result


def column_tags(dataset: Dataset) -> dict[str, str]:
    """How the table was read, on the run: the task and why, each column's kind, and every
    column that was left out or rows that were dropped, with the reason."""
    tags = {"ctloop.task": dataset.task.kind, "ctloop.task_reason": dataset.task_reason,
            "ctloop.feature_kinds": ", ".join(f"{c}:{k}" for c, k in dataset.kinds.items())}
    if dataset.excluded:
        tags["ctloop.excluded_columns"] = "; ".join(
            f"{c}: {why}" for c, why in dataset.excluded.items())
    if dataset.notes:
        tags["ctloop.column_notes"] = "; ".join(f"{c}: {n}" for c, n in dataset.notes.items())
    return tags


def _nan_last(key: float) -> float:
    return float("inf") if key != key else key


def _n_jobs(cfg: Config, n_trials: int) -> int:
    import os

    cores = os.cpu_count() or 1
    wanted = cores if cfg.training.n_jobs < 0 else cfg.training.n_jobs
    return max(1, min(wanted, n_trials))


def _log_trials(run: tracking.TrainingRun, done: Iterator[tracking.TrialRecord],
                encoder: FeatureEncoder, task: Task, tags: dict[str, str],
                total: int, on_progress: ProgressCallback | None) -> Iterator[TrialResult]:
    """Log each trial as it finishes (in the parent: one MLflow client, one parent run).

    The signature comes from the parent's own encoder: no need to load each saved model back.
    """
    for count, record in enumerate(done, 1):
        run_id = run.log_trial(record, encoder, task, tags)
        trial = TrialResult(record.name, record.family, run_id, dict(record.metrics))
        if on_progress:
            on_progress(count, total, trial)
        yield trial


@contextlib.contextmanager
def _trial_parallelism(cfg: Config, n_trials: int, shared: list) -> Iterator[int]:
    """The joblib backend for the trials; yields the `n_jobs` to give `Parallel`.

    `local`: loky worker processes on this machine. `dask`: joblib's Dask backend on the
    cluster at `compute.scheduler_address`; `shared` (encoder, arrays) is broadcast to the
    workers once instead of being pickled into every task.
    """
    if cfg.compute.backend == "local":
        yield _n_jobs(cfg, n_trials)
        return
    from distributed import Client
    from joblib import parallel_config

    address = cfg.compute.scheduler_address
    if not address:
        raise ConfigError("compute.scheduler_address is required when compute.backend is "
                          "'dask' (e.g. tcp://scheduler:8786)")
    try:
        # Connect timeout: dask's distributed.comm.timeouts.connect (30 s unless configured).
        client = Client(address, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"compute.scheduler_address: cannot reach the Dask scheduler at "
                          f"{address}: {exc}") from None
    with client:
        log.info("trials on Dask at %s (%d worker threads)", address,
                 sum(client.nthreads().values()))
        with parallel_config(backend="dask", client=client, scatter=shared,
                             wait_for_workers_timeout=60):
            yield -1


def _run_trial_shipped(trial: Trial, encoder: FeatureEncoder, splits_xy: tuple, task: Task,
                       plots: bool) -> tuple[tracking.TrialRecord, bytes]:
    """A trial on a Dask worker: its model and plot files come back as a tar, since the
    worker need not share a file system with the process that logs to MLflow."""
    with tempfile.TemporaryDirectory(prefix="ctloop-trial-") as tmp:
        record = _run_trial(trial, encoder, splits_xy, task, tmp, plots)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(Path(tmp) / trial.name, arcname=trial.name)
    return record, buffer.getvalue()


def _unpack_trial(record: tracking.TrialRecord, payload: bytes,
                  workdir: str) -> tracking.TrialRecord:
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as tar:
        tar.extractall(workdir, filter="data")
    folder = Path(workdir) / record.name
    return dataclasses.replace(
        record, model_dir=folder / tracking.MODEL_DATA_DIR,
        plot_dir=folder / "plots" if record.plot_dir is not None else None)
