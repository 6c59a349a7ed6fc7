"""Train every candidate trial in parallel and log one parent run with a child per trial.

The heavy work of a trial (fit, score, plots, saving the model files) runs in a worker
process; the parent only streams finished trials into MLflow, so logging overlaps fitting.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

from ctloop import tracking
from ctloop.candidates import Trial, feature_importance, fit_estimator, sample_trials
from ctloop.config import Config
from ctloop.data import Splits, load_dataset, split_dataset
from ctloop.features import FeatureEncoder
from ctloop.metrics import choose_threshold, classification_metrics, save_plots, sort_key
from ctloop.model import TabularModel

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
    trials: list[TrialResult] = field(default_factory=list)
    window: tuple[str | None, str | None] = (None, None)
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def best(self) -> TrialResult:
        return self.trials[0]


ProgressCallback = Callable[[int, int, TrialResult | None], None]


def _run_trial(trial: Trial, encoder: FeatureEncoder, splits_xy: tuple, labels: tuple,
               workdir: str, plots: bool) -> tracking.TrialRecord:
    """Fit and score one trial (in a worker): everything but the MLflow calls."""
    X_train, y_train, X_val, y_val, example = splits_xy
    with threadpool_limits(1):
        start = time.perf_counter()
        estimator = fit_estimator(trial, X_train, y_train, encoder.categorical_indices)
        fit_seconds = time.perf_counter() - start
    if trial.family == "xgboost":
        estimator = estimator.get_booster()
    model = TabularModel(encoder, estimator, trial.family, 0.5, *labels)
    probability = model.predict_proba_encoded(X_val)
    model.threshold = choose_threshold(y_val, probability)
    metrics = classification_metrics(y_val, probability, model.threshold)
    metrics["fit_seconds"] = fit_seconds
    folder = Path(workdir) / trial.name
    model.save(folder / tracking.MODEL_DATA_DIR)
    plot_dir = None
    if plots:
        importance = feature_importance(
            estimator if trial.family != "xgboost" else _xgb_importance(estimator, encoder),
            len(encoder.columns),
        )
        plot_dir = folder / "plots"
        save_plots(plot_dir, y_val, probability, model.threshold, list(encoder.columns),
                   importance)
    return tracking.TrialRecord(trial.name, trial.family, trial.params, metrics,
                                folder / tracking.MODEL_DATA_DIR, plot_dir, example)


class _Importance:
    def __init__(self, values: np.ndarray) -> None:
        self.feature_importances_ = values


def _xgb_importance(booster, encoder: FeatureEncoder) -> _Importance:
    gains = booster.get_score(importance_type="gain")
    values = np.array([gains.get(f"f{i}", 0.0) for i in range(len(encoder.columns))])
    return _Importance(values / values.sum() if values.sum() else values)


def train(cfg: Config, on_progress: ProgressCallback | None = None,
          extra_tags: dict[str, str] | None = None) -> TrainResult:
    """Load, split, fit every trial in parallel, log it all; returns trials best first."""
    started = time.perf_counter()
    dataset = load_dataset(cfg.data)
    splits: Splits = split_dataset(dataset, cfg.split)
    encoder = FeatureEncoder.fit(splits.train.frame, dataset.feature_columns, dataset.categorical,
                                 cfg.data.features.max_categories)
    X_train = encoder.encode_frame(splits.train.frame)
    X_val = encoder.encode_frame(splits.validation.frame)
    example = splits.validation.X.head(3).reset_index(drop=True)
    xy = (X_train, splits.train.y, X_val, splits.validation.y, example)
    labels = (dataset.positive_label, dataset.negative_label)
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
    params = {"n_trials": len(trials), "primary_metric": cfg.training.primary_metric,
              "features": ",".join(dataset.feature_columns), "target": dataset.target,
              "positive_label": dataset.positive_label, **{f"rows_{k}": v for k, v in
                                                           rows.items()}}
    result = TrainResult("", cfg.name, cfg.training.primary_metric, window=window, rows=rows)
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
        jobs = Parallel(n_jobs=_n_jobs(cfg, len(trials)), return_as="generator_unordered")
        for record in jobs(
            delayed(_run_trial)(t, encoder, xy, labels, workdir, cfg.training.plots) for t in trials
        ):
            model = TabularModel.load(record.model_dir)
            run_id = run.log_trial(record, model, tags)
            result.trials.append(TrialResult(record.name, record.family, run_id,
                                             dict(record.metrics)))
            if on_progress:
                on_progress(len(result.trials), len(trials), result.trials[-1])
        metric = cfg.training.primary_metric
        result.trials.sort(key=lambda t: sort_key(metric)(t.metrics[metric]))
        run.mark_best(result.best.run_id, metric, result.best.metrics[metric])
    result.seconds = time.perf_counter() - started
    return result


def _n_jobs(cfg: Config, n_trials: int) -> int:
    import os

    cores = os.cpu_count() or 1
    wanted = cores if cfg.training.n_jobs < 0 else cfg.training.n_jobs
    return max(1, min(wanted, n_trials))
