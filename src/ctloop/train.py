"""Search the candidate families under a trial and time budget; log one parent run with a
child run per trial, and a pyfunc model for the best few.

The heavy work of a trial (fit with early stopping, score) runs in a worker process; the
parent asks the search (`ctloop.search`) for the next trial whenever a worker is free and
writes each finished trial's child run (params and metrics, one batch) while the others fit.
A trial's fitted model comes back in memory and is kept only while it ranks among the best
`training.logged_models`; those alone are saved, plotted and logged as pyfunc models, while
the search's last trials run where the outcome is already certain, the rest at the end
(`_BestModels`): saving a scikit-learn model (skops) costs more than fitting a small one,
and logging one more still, and a trial that cannot be chosen needs neither.

On small tables without a time column a trial is ranked by k-fold cross-validation over the
training + validation rows (`training.cv_folds`): a 15% validation split of a few hundred
rows ranks trials by noise. Each fold's boosting rounds stop early on a tenth of that fold's
own training rows (never on the rows it is scored on), and the trial's model is then fitted
on all the rows with the median of the folds' rounds. Such a search ends by trying a weighted
average of its best trials (`ctloop.ensemble`), chosen on their out-of-fold scores and ranked
as one more trial: its members are fitted on every row already, so it costs no fit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctloop import ensemble, plots, tracking, workers
from ctloop.candidates import (
    BOOSTED,
    BinnedRows,
    Deadline,
    Trial,
    feature_importance,
    fit_estimator,
    fitted_rounds,
    native_model,
    refit_trial,
)
from ctloop.config import Config, ConfigError
from ctloop.data import Dataset, Splits, load_dataset, split_dataset
from ctloop.features import FeatureEncoder
from ctloop.model import NATIVE_FAMILIES, Members, TabularModel, import_skops
from ctloop.search import Search
from ctloop.tasks import Task, TaskError
from ctloop.tasks.base import shown

log = logging.getLogger(__name__)

STOPPED_BY_TRIALS, STOPPED_BY_TIME = "trials", "time_budget"
_ARRAY_NAMES = ("X_train", "y_train", "X_val", "y_val", "folds")
CV_MAX_ROWS = 20_000  # training + validation rows up to which `cv_folds: null` cross-validates
CV_DEFAULT_FOLDS = 5
_EARLY_STOPPING_SHARE = 10  # every 10th training row of a fold is its early-stopping set


@dataclass(frozen=True)
class TrialResult:
    name: str
    family: str
    run_id: str
    metrics: dict[str, float]
    params: dict[str, Any] = field(default_factory=dict)
    model_uri: str | None = None  # only the best `training.logged_models` trials have one


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
    stopped_by: str = STOPPED_BY_TRIALS  # what ended the search: "trials" or "time_budget"
    search_seconds: float = 0.0
    searched: int = 0  # trials the search ran (`trials` also holds any ensemble of them)
    cv_folds: int = 0  # > 0: trials ranked by cross-validation instead of the validation split
    cv_reason: str = ""  # why that many folds, as the training output says it

    @property
    def best(self) -> TrialResult:
        return self.trials[0]


ProgressCallback = Callable[[int, int, TrialResult | None], None]


@dataclass(frozen=True)
class _Finished:
    """A trial back from its worker: the tracker's record, and what its plots need."""

    trial: Trial
    record: tracking.TrialRecord
    task: Task  # with the threshold fitted on this trial's validation scores
    scores: np.ndarray  # validation scores (out-of-fold scores of every row, with folds)
    importance: np.ndarray
    model: TabularModel | None  # None once the trial has dropped out of the best few


_ARRAYS: dict[str, tuple[np.ndarray, ...]] = {}
_BINNED: dict[tuple[str | int, Any], tuple[Any, BinnedRows]] = {}


def _arrays(data: str | tuple) -> tuple[np.ndarray, ...]:
    """The encoded splits: memory-mapped from the run's work folder (local workers, loaded
    once per worker process), or the tuple itself (scattered to Dask workers)."""
    if not isinstance(data, str):
        return data
    if data not in _ARRAYS:
        _ARRAYS.clear()
        _ARRAYS[data] = tuple(np.load(Path(data) / f"{n}.npy", mmap_mode="r")
                              for n in _ARRAY_NAMES)
    return _ARRAYS[data]


def _binned(data: str | tuple, rows: Any, X: np.ndarray, y: np.ndarray, cats: list[int],
            validation: tuple[np.ndarray, np.ndarray] | None = None) -> BinnedRows:
    """This worker's binned copy of one set of rows of the run's data (`rows` names them: the
    split, a fold, all rows), built once and reused by every later trial on them; another
    run's data lets the previous run's go."""
    # A local run is its work folder (each trial brings its own copy of the path); a Dask
    # run is the scattered tuple itself, which the entry keeps alive so its id stays its own.
    run = data if isinstance(data, str) else id(data)
    if not any(kept == run for kept, _ in _BINNED):
        _BINNED.clear()
    if (run, rows) not in _BINNED:
        _BINNED[run, rows] = (data, BinnedRows(X, y, cats, validation))
    return _BINNED[run, rows][1]


def _run_trial(trial: Trial, encoder: FeatureEncoder, data: str | tuple, task: Task,
               deadline: float | None, bar: tuple[str, float] | None = None
               ) -> _Finished | None:
    """Fit and score one trial (in a worker): everything but saving and the MLflow calls.
    One thread throughout, scoring included: the other workers have the other cores, and an
    OpenMP team (HistGradientBoosting's predict) waiting on a busy core costs more than it
    gains. None: the time budget ran out while the trial waited for a worker.

    `bar` (a metric and its value): a trial that does not beat it comes back without its
    model, which could never be logged (see `_model_bar`); pickling a LightGBM model to send
    it back costs 10-40 ms."""
    if deadline is not None and time.time() >= deadline:
        return None
    with workers.one_thread():
        finished = _fit_and_score(trial, encoder, data, task, deadline)
    if bar is not None:
        metric, value = bar
        key = task.sort_key(metric)
        if not key(finished.record.metrics.get(metric, float("nan"))) < key(value):
            finished = dataclasses.replace(finished, model=None)
    return finished


def _fit_and_score(trial: Trial, encoder: FeatureEncoder, data: str | tuple, task: Task,
                   deadline: float | None) -> _Finished:
    X_train, y_train, X_val, y_val, folds = _arrays(data)
    start = time.perf_counter()
    if folds.size:
        y_val = np.concatenate([y_train, y_val])
        fitted, scores, rounds = _cross_validate(trial, encoder, task, np.concatenate(
            [X_train, X_val]), y_val, folds, deadline, data)
    else:
        cats = encoder.categorical_indices
        computed: list[np.ndarray] = []  # the validation scores, if the fit kept them
        fitted = fit_estimator(trial, task.kind, X_train, y_train, cats,
                               validation=(X_val, y_val), deadline=deadline,
                               binned=_binned(data, "split", X_train, y_train, cats,
                                              (X_val, y_val)),
                               on_validation_scores=computed.append)
        rounds = fitted_rounds(fitted, trial.family)
    fit_seconds = time.perf_counter() - start
    estimator = native_model(fitted, trial.family)
    model = TabularModel(encoder, estimator, trial.family, task, fast_path=False)
    if not folds.size:
        scores = computed[0] if computed else model.scores_encoded(np.asarray(X_val))
    model.task = task.fit_threshold(y_val, scores)
    metrics = model.task.metrics(y_val, scores)
    metrics["fit_seconds"] = fit_seconds
    params = dict(trial.params)
    if rounds is not None:
        params["n_rounds"] = rounds  # chosen by early stopping
    record = tracking.TrialRecord(trial.name, trial.family, params, metrics)
    importance = feature_importance(estimator, trial.family, encoder.n_features)
    return _Finished(trial, record, model.task, scores, importance, model)


def _cross_validate(trial: Trial, encoder: FeatureEncoder, task: Task, X: np.ndarray,
                    y: np.ndarray, folds: np.ndarray, deadline: float | None,
                    data: str | tuple) -> tuple[Any, np.ndarray, int | None]:
    """Out-of-fold scores of every row, and the trial fitted on all rows with the median of
    the rounds its folds kept."""
    scores: np.ndarray | None = None
    kept = []
    cats = encoder.categorical_indices
    classes = None if task.kind == "regression" else y.astype(np.int64)
    for k, fit_rows, stop, scored in fold_rows(folds, trial.family, classes):
        validation = None if stop is None else (X[stop], y[stop])
        X_fit, y_fit = X[fit_rows], y[fit_rows]
        binned = _binned(data, k, X_fit, y_fit, cats, validation) if validation else None
        fitted = fit_estimator(trial, task.kind, X_fit, y_fit, cats, validation=validation,
                               deadline=deadline, binned=binned)
        fold_model = TabularModel(encoder, native_model(fitted, trial.family), trial.family,
                                  task, fast_path=False)
        fold_scores = fold_model.scores_encoded(np.asarray(X[scored]))
        if scores is None:
            scores = np.empty((len(y), *fold_scores.shape[1:]), dtype=np.float64)
        scores[scored] = fold_scores
        kept.append(fitted_rounds(fitted, trial.family))
    rounds = None if kept[0] is None else int(np.median(kept))
    final = fit_estimator(refit_trial(trial, rounds), task.kind, X, y, cats,
                          deadline=deadline,  # a forest's trees
                          binned=_binned(data, "all", X, y, cats))
    return final, scores, rounds


def fold_rows(folds: np.ndarray, family: str, classes: np.ndarray | None = None) -> Iterator[
        tuple[int, np.ndarray, np.ndarray | None, np.ndarray]]:
    """Each fold of a cross-validated trial: its number, the rows its model fits, the rows a
    boosting family stops early on (every 10th of the others; None for the families with no
    rounds to stop, which fit them all) and the rows it scores (a mask). `classes` (each
    row's class code): a class's last rows in a fold's share are fitted, not stopped on, so
    that every fold's model knows every class (a class may have as few rows as folds)."""
    for k in np.unique(folds):
        fit_rows, scored = np.flatnonzero(folds != k), folds == k
        stop = None
        if family in BOOSTED:
            stop = fit_rows[int(k) % _EARLY_STOPPING_SHARE::_EARLY_STOPPING_SHARE]
            if classes is not None:
                fitted = np.bincount(classes[fit_rows]) - np.bincount(
                    classes[stop], minlength=int(classes[fit_rows].max()) + 1)
                stop = stop[fitted[classes[stop]] > 0]
            fit_rows = np.setdiff1d(fit_rows, stop, assume_unique=True)
        yield int(k), fit_rows, stop, scored


def cv_folds(cfg: Config, dataset: Dataset, y: np.ndarray) -> tuple[int, str]:
    """How many folds rank the trials (0: the validation split does) on the training +
    validation rows' labels `y`, and why. Left to ctloop, a small table gets 5 folds, or as
    many as its rarest class has rows: stratified folds put a class in every fold's scored
    rows only if it has a row for each (a class of 5 rows keeps 4 after the holdout)."""
    wanted = cfg.training.cv_folds
    if wanted is None:
        if dataset.time_column is not None or len(y) > CV_MAX_ROWS:
            return 0, ""
        small = f"at most {CV_MAX_ROWS:,} rows and no time column"
        rarest, label = _rarest_class(dataset.task, y)
        if rarest >= CV_DEFAULT_FOLDS:
            return CV_DEFAULT_FOLDS, small
        if rarest < 2:
            return 0, ""
        return rarest, f"{small}; {rarest} folds, as class {shown(label)} has {rarest} rows"
    if wanted == 1:
        raise ConfigError("training.cv_folds: 1 fold is no cross-validation; use 0 (the "
                          "validation split) or 2 or more folds")
    if wanted and dataset.time_column:
        raise ConfigError(f"training.cv_folds: {wanted} folds would train on rows later "
                          f"than those they score (data.time_column '{dataset.time_column}' "
                          "orders the rows); use 0 or remove the time column")
    if wanted:
        rarest, _ = _rarest_class(dataset.task, y)
        if rarest < wanted:
            raise ConfigError(f"training.cv_folds: {wanted} folds need at least {wanted} "
                              f"rows of every class in the training and validation rows "
                              f"(the rarest has {rarest}); use fewer folds or 0")
    return wanted, "training.cv_folds"


def _rarest_class(task: Task, y: np.ndarray) -> tuple[int, Any]:
    """The rows of the rarest class among `y` (every row, for regression), and its label."""
    if task.kind == "regression":
        return len(y), None
    counts = np.bincount(y.astype(np.int64))
    code = int(np.argmin(counts))
    if task.kind == "binary":
        return int(counts[code]), task.positive_label if code else task.negative_label
    return int(counts[code]), task.classes[code]


def fold_ids(task: Task, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each training + validation row's fold (stratified by class for classification)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    ids = np.empty(len(y), dtype=np.int8)
    if task.kind == "regression":
        splitter = KFold(folds, shuffle=True, random_state=seed).split(y)
    else:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed).split(y, y)
    for k, (_, scored) in enumerate(splitter):
        ids[scored] = k
    return ids


def _refit(trial: Trial, encoder: FeatureEncoder, data: str, task: Task,
           model_dir: str, cancelled_by: str) -> str | None:
    """Fit a chosen trial again on the training and validation rows together (its rounds as
    early stopping chose them, its threshold as fitted on validation) and save it in place
    of the model fitted on the training rows alone: the logged model learns from every row
    the gate does not hold out. None: the file `cancelled_by` appeared (a later trial won)
    and the boosting stopped early; nothing is saved."""
    X_train, y_train, X_val, y_val, _ = _arrays(data)
    X, y = np.concatenate([X_train, X_val]), np.concatenate([y_train, y_val])
    deadline = Deadline(cancelled_by=cancelled_by)
    with workers.one_thread():
        fitted = fit_estimator(trial, task.kind, X, y, encoder.categorical_indices,
                               deadline=deadline)
    if deadline.passed():
        return None
    model = TabularModel(encoder, native_model(fitted, trial.family), trial.family, task,
                         fast_path=False)
    model.save(Path(model_dir))
    return model_dir


def _render_plots(task: Task, folder: str, y_val: np.ndarray, scores: np.ndarray,
                  names: list[str], importance: np.ndarray) -> str:
    """One trial's plots (in a worker process: matplotlib is slow and not thread-safe)."""
    task.plots(Path(folder), y_val, scores, names, importance)
    return folder


def train(cfg: Config, on_progress: ProgressCallback | None = None,
          extra_tags: dict[str, str] | None = None) -> TrainResult:
    """Load, split, search the families within the budget, log it all; trials best first."""
    started = time.perf_counter()
    with local_workers(cfg) as local:
        installed_modules = _warm_up(cfg, local)
        return _train(cfg, local, started, on_progress, extra_tags, installed_modules)


def local_workers(cfg: Config) -> contextlib.AbstractContextManager[Executor]:
    """This machine's worker processes for `cfg`'s trainings (`ctloop.workers`): open them
    around a training before starting a thread, or around several trainings to share them."""
    return workers.local_workers(_n_jobs(cfg))


def _warm_up(cfg: Config, local: Executor) -> Future | None:
    """Start the workers' imports (seconds each, if spawned) now, while this process loads
    and logs the data, rather than on the search's clock; and matplotlib's, which the plots
    of the best trials would otherwise pay after the search. Returns MLflow's map of the
    installed packages being built, if this process has none yet (`tracking.installed_modules`)."""
    workers.warm_up(local, _n_jobs(cfg))
    modules = None if tracking.installed_modules_known() else local.submit(
        tracking.installed_modules)
    if cfg.training.plots:
        for _ in range(_n_jobs(cfg)):
            local.submit(plots.warm_up)
    return modules


def _train(cfg: Config, local: Executor, started: float, on_progress: ProgressCallback | None,
           extra_tags: dict[str, str] | None, installed_modules: Future | None) -> TrainResult:
    """`train` on this machine's `local` workers (the trials' too, unless on Dask)."""
    dataset = load_dataset(cfg.data)
    splits: Splits = split_dataset(dataset, cfg.split)
    task = dataset.task
    try:
        metric = task.primary_metric(cfg.training.primary_metric)
    except TaskError as exc:
        raise ConfigError(str(exc)) from None
    encoder = FeatureEncoder.fit(splits.train.frame, dataset.feature_columns, dataset.kinds,
                                 cfg.data.features.max_categories)
    y_fitted = np.concatenate([splits.train.y, splits.validation.y])
    rows_fitted = len(y_fitted)
    folds, folds_reason = cv_folds(cfg, dataset, y_fitted)
    arrays = (encoder.encode_frame(splits.train.frame), splits.train.y,
              encoder.encode_frame(splits.validation.frame), splits.validation.y,
              fold_ids(task, y_fitted, folds, cfg.training.seed) if folds
              else np.zeros(0, dtype=np.int8))
    example = splits.validation.X.head(3).reset_index(drop=True)
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
    training = cfg.training
    params = {"max_trials": training.trials, "time_budget": training.time_budget,
              "logged_models": training.logged_models, "primary_metric": metric,
              "cv_folds": folds, "ensemble": bool(folds and training.ensemble),
              "task": task.kind, "features": ",".join(dataset.feature_columns),
              "target": dataset.target, **{f"rows_{k}": v for k, v in rows.items()}}
    if task.kind == "binary":
        params["positive_label"] = task.positive_label
    result = TrainResult("", cfg.name, metric, task=task.describe(),
                         task_reason=dataset.task_reason, window=window, rows=rows,
                         excluded=dict(dataset.excluded), notes=dict(dataset.notes),
                         cv_folds=folds, cv_reason=folds_reason)
    with (
        tempfile.TemporaryDirectory(prefix="ctloop-train-") as workdir,
        tracking.training_run(cfg.name, f"train-{time.strftime('%Y%m%d-%H%M%S')}", params,
                              tags, installed_modules and installed_modules.result) as run,
        _worker_pool(cfg, local, encoder, arrays, workdir, task) as pool,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctloop-inputs") as logger,
    ):
        result.run_id = run.run_id
        kept = [*dataset.feature_columns, dataset.target]
        if dataset.time_column:
            kept.append(dataset.time_column)
        # Made before the inputs' logging thread starts: sharing the GIL with it, Optuna's
        # first import and study took 0.5 s instead of 40 ms while the workers waited.
        search = Search(training.searched_candidates(bool(folds)), seed=training.seed,
                        max_trials=training.trials, minimize=metric in task.lower_is_better,
                        lag=2 * pool.workers)
        # Logged while the first trials fit: the workers would otherwise wait for it.
        inputs = logger.submit(run.log_inputs, splits.train, "training", {
            tracking.REFERENCE_ARTIFACT: splits.train.frame[kept],
            tracking.HOLDOUT_ARTIFACT: splits.holdout.frame[kept]})
        result.phases["prepare"] = round(time.perf_counter() - started, 2)
        search_started = time.perf_counter()
        finished: dict[str, _Finished] = {}
        key = task.sort_key(metric)
        total = search.max_trials
        if on_progress:
            on_progress(0, total, None)
        best_models = _BestModels(run, pool, workdir, encoder, finished, _BestModels.Rows(
            y_fitted if folds else splits.validation.y, rows_fitted,
            rows_fitted if folds else rows["train"]), example, training.plots,
            training.logged_models, ensemble_to_come=bool(folds and training.ensemble))

        per_family = ensemble.PER_FAMILY if folds and training.ensemble else 0
        for outcome in _run_search(search, pool, metric, training.time_budget, result,
                                   bar=lambda: _model_bar(result.trials, key, metric,
                                                          training.logged_models, per_family),
                                   on_idle=lambda running: best_models.while_last_trials_run(
                                       _ranked(result.trials, key, metric), running)):
            record = outcome.record
            run_id = run.log_trial(record, tags)
            trial = TrialResult(record.name, record.family, run_id, dict(record.metrics),
                                dict(record.params))
            finished[trial.name] = outcome
            result.trials.append(trial)
            _forget_models(finished, result.trials, key, metric, training.logged_models,
                           per_family)
            if on_progress:
                on_progress(len(result.trials), total, trial)
        result.search_seconds = round(time.perf_counter() - search_started, 2)
        result.phases["search"] = result.search_seconds
        result.trials = _ranked(result.trials, key, metric)
        result.searched = len(result.trials)
        average = _ensemble(result.trials, finished, task, metric, y_fitted, training.seed,
                            encoder) if folds and training.ensemble else None
        if average is not None:  # it joins the ranking as a trial of its own
            record = average.record
            finished[record.name] = average
            result.trials = _ranked([*result.trials, TrialResult(
                record.name, record.family, run.log_trial(record, tags), dict(record.metrics),
                dict(record.params))], key, metric)
        logging_started = time.perf_counter()
        inputs.result()  # its error, if any, fails the run here
        if folds:
            run.log_out_of_fold(y_fitted, finished[result.best.name].scores)
        result.trials[:training.logged_models] = best_models.log(
            result.trials[:training.logged_models])
        result.phases["log_best_models"] = round(time.perf_counter() - logging_started, 2)
        run.mark_best(result.best.run_id, metric, result.best.metrics[metric])
        run.log_search(result.stopped_by, result.searched, result.search_seconds)
    result.seconds = time.perf_counter() - started
    return result


def _run_search(search: Search, pool: _Pool, metric: str, budget: float | None,
                result: TrainResult,
                on_idle: Callable[[int], None] | None = None,
                bar: Callable[[], tuple[str, float] | None] = lambda: None
                ) -> Iterator[_Finished]:
    """Keep every worker busy with the search's next trial until the trials or the time run
    out (`result.stopped_by` says which); yield trials as they finish. One trial more than
    there are workers is submitted, so a worker that finishes starts the next at once
    instead of waiting for this process to hear of it and ask the search (30 ms a trial).
    Trials already running when the budget runs out are finished, not thrown away; one
    still waiting then is not run. `on_idle(running)` is called once, when the search has
    stopped, a worker is free and `running` trials still run (after the trials that finished
    so far were yielded). `bar()`: what a trial submitted now must beat to bring its model
    back (`_run_trial`)."""
    started = time.perf_counter()
    deadline = time.time() + budget if budget is not None else None
    running: dict[Future, Trial] = {}
    stopping = False

    def start_trials() -> None:
        nonlocal stopping
        while not stopping and len(running) < pool.workers + 1:
            if search.exhausted:
                stopping, result.stopped_by = True, STOPPED_BY_TRIALS
            elif budget is not None and time.perf_counter() - started >= budget:
                stopping, result.stopped_by = True, STOPPED_BY_TIME
            elif search.can_ask():
                trial = search.ask()
                running[pool.submit_trial(trial, deadline, bar())] = trial
            else:
                return  # the next trial depends on one still running

    start_trials()
    while running:
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        outcomes = []
        for future in sorted(done, key=lambda f: running[f].number):
            trial, outcome = running.pop(future), future.result()
            if outcome is None:  # it waited past the budget: the search is over
                search.finished(trial, float("nan"))
                stopping, result.stopped_by = True, STOPPED_BY_TIME
                continue
            outcomes.append(outcome)
            search.finished(trial, outcome.record.metrics.get(metric, float("nan")))
        start_trials()  # keep the workers busy while the parent logs these
        yield from outcomes
        if on_idle is not None and stopping and 0 < len(running) < pool.workers:
            on_idle(len(running))
            on_idle = None


def _model_bar(trials: list[TrialResult], key: Callable[[float], float], metric: str,
               keep: int, per_family: int) -> tuple[str, float] | None:
    """The primary metric a trial must beat to still be among the best `keep` when the
    search ends, or None while any trial can (fewer than `keep` so far, or ensembles to
    come, which may pick any family's best). The best `keep` so far only get better, and a
    tie ranks the earlier trial first, so a trial that does not beat the `keep`-th best so
    far is not among them at the end: its model would only be let go of (`_forget_models`).
    """
    if per_family or len(trials) < keep:
        return None
    value = _ranked(trials, key, metric)[keep - 1].metrics.get(metric, float("nan"))
    return None if value != value else (metric, value)


def _forget_models(finished: dict[str, _Finished], trials: list[TrialResult],
                   key: Callable[[float], float], metric: str, keep: int,
                   per_family: int = 0) -> None:
    """Let go of the fitted models of trials outside the best `keep` so far and the best
    `per_family` of their family (those may join an ensemble): only those can still be
    logged, and a forest can weigh hundreds of MB."""
    seen: dict[str, int] = {}
    for rank, trial in enumerate(_ranked(trials, key, metric)):
        seen[trial.family] = seen.get(trial.family, 0) + 1
        if rank < keep or seen[trial.family] <= per_family:
            continue
        if finished[trial.name].model is not None:
            finished[trial.name] = dataclasses.replace(finished[trial.name], model=None)


def _ensemble(ranked: list[TrialResult], finished: dict[str, _Finished], task: Task,
              metric: str, y: np.ndarray, seed: int,
              encoder: FeatureEncoder) -> _Finished | None:
    """A weighted average of cross-validated trials (`ctloop.ensemble`), chosen on their
    out-of-fold scores among those whose models are kept, when it beats the best trial on
    the primary metric; None otherwise. Its members were fitted on every row already."""
    started = time.perf_counter()
    pool = [t for t in ranked if finished[t.name].model is not None
            and np.isfinite(t.metrics.get(metric, np.nan))]
    objective = task.bootstrap_metric(metric)  # the same metric, threshold-free
    sign = task.sort_key(objective)
    every_row = np.ones((1, len(y)))

    def loss(scores: np.ndarray) -> float:
        return sign(float(task.sampler(objective, y, scores)(every_row)[0]))

    chosen = ensemble.select([finished[t.name].scores for t in pool], loss)
    if chosen is None:
        return None
    members = [(pool[i], weight) for i, weight in chosen.weights.items()]
    scores = sum(weight * finished[t.name].scores for t, weight in members)
    fitted_task = task.fit_threshold(y, scores)
    metrics = fitted_task.metrics(y, scores)
    primary = task.sort_key(metric)
    if not primary(metrics[metric]) < primary(ranked[0].metrics[metric]):
        return None  # better on the threshold-free objective, not on the metric itself
    importance = np.zeros(encoder.n_features)
    for trial, weight in members:
        share = np.abs(finished[trial.name].importance)
        importance += weight * share / max(share.sum(), 1e-12)
    model_members = Members(tuple(finished[t.name].model for t, _ in members),
                            tuple(w for _, w in members), tuple(t.name for t, _ in members))
    model = TabularModel(encoder, model_members, ensemble.ENSEMBLE, fitted_task,
                         fast_path=False)
    params = {"members": ", ".join(f"{t.name}: {w:.3f}" for t, w in members),
              "n_members": len(members)}
    metrics["fit_seconds"] = time.perf_counter() - started
    trial = Trial(len(ranked), ensemble.ENSEMBLE, params, seed)
    record = tracking.TrialRecord(trial.name, trial.family, params, metrics)
    return _Finished(trial, record, fitted_task, scores, importance, model)


class _BestModels:
    """The pyfunc models and plots of the best `keep` trials, the very best refitted on
    training + validation rows first: it is the one `ctloop select` gates. Refitting the
    others too would cost a fit each for models that are only kept for comparison.
    Cross-validated trials were fitted on all those rows already (`train_rows ==
    fitted_rows`). Plots (of the validation scores) render in the workers.

    What is certain before the search ends is started while its last trials run, on the
    worker they leave free and in this process, which then only waits: the refit of the
    best so far, the plots of the trials sure to stay among the best `keep`, and the models
    of those among them sure not to be refitted (all of them when cross-validated, else
    those behind the best so far, which stays ahead of them)."""

    @dataclass(frozen=True)
    class Rows:
        y_val: np.ndarray  # the labels the plots show the scores against
        fitted_rows: int  # what the best model is fitted on (training + validation rows)
        train_rows: int  # what the others are fitted on

    def __init__(self, run: tracking.TrainingRun, pool: _Pool, workdir: str,
                 encoder: FeatureEncoder, finished: dict[str, _Finished], rows: Rows,
                 example: Any, plots: bool, keep: int, ensemble_to_come: bool) -> None:
        self._run, self._pool, self._workdir, self._encoder = run, pool, workdir, encoder
        self._finished, self._rows, self._example = finished, rows, example
        self._plots, self._keep, self._ensemble_to_come = plots, keep, ensemble_to_come
        self._refits: dict[str, Future] = {}  # trial name -> the folder of its refit model
        self._rendering: dict[str, Future] = {}  # trial name -> its plot folder
        self._uris: dict[str, str] = {}  # trial name -> its logged model
        self._importing: threading.Thread | None = None  # skops, for scikit-learn models

    def while_last_trials_run(self, ranked: list[TrialResult], running: int) -> None:
        """The search has stopped and `running` trials still run: each of them, and the
        ensemble of the trials if one is to come, can still push one trial down."""
        if not ranked:
            return
        if self._ensemble_to_come or any(  # its import would otherwise wait for the search
                t.family not in NATIVE_FAMILIES for t in ranked[:self._keep + running]):
            self._importing = threading.Thread(target=import_skops, name="ctloop-skops",
                                               daemon=True)
            self._importing.start()
        if self._refits_best:  # if it is still the best at the end, this refit is logged
            self._refits[ranked[0].name] = self._submit_refit(ranked[0].name)
        certain = ranked[:max(0, self._keep - running - self._ensemble_to_come)]
        for trial in certain:
            self._render(trial.name)
        # The best so far is logged at the end if refitted (it may stay the best); a
        # cross-validated one was fitted on every row already and is logged as it is.
        for trial in certain[1:] if self._refits_best else certain:
            self._log(trial, refitted=None)

    def log(self, best: list[TrialResult]) -> list[TrialResult]:
        """Log what is left for the final best trials; they come back with their model URI."""
        refit = None
        if self._refits_best:
            for name in self._refits:  # a later trial won: free their workers for what is left
                if name != best[0].name:
                    self._cancel_refit(name)
            refit = self._refits.get(best[0].name) or self._submit_refit(best[0].name)
        for trial in best:
            self._render(trial.name)
        for trial in [*best[1:], best[0]]:  # the others are logged while the best is refitted
            if trial.name not in self._uris:
                self._log(trial, refitted=refit if trial is best[0] else None)
        for trial in best:  # rendered while the models were logged
            if trial.name in self._rendering:
                self._run.log_trial_plots(trial.run_id,
                                          Path(self._rendering[trial.name].result()))
        wait(self._refits.values())  # the cancelled ones stop within a boosting round
        if self._importing is not None:
            self._importing.join()  # no thread is left behind the training (see workers)
        return [dataclasses.replace(trial, model_uri=self._uris[trial.name]) for trial in best]

    @property
    def _refits_best(self) -> bool:
        """Whether the best is refitted: trials ranked on the validation split were fitted
        on the training rows only (cross-validated ones on all of them already)."""
        return self._rows.train_rows < self._rows.fitted_rows

    def _submit_refit(self, name: str) -> Future:
        """`_refit` of a trial in a local worker; its model lands in a folder of its own."""
        chosen = self._finished[name]
        trial = refit_trial(chosen.trial, chosen.record.params.get("n_rounds"))
        folder = Path(self._workdir) / "refit" / name / tracking.MODEL_DATA_DIR
        return self._pool.submit_local(_refit, trial, self._encoder, self._pool.local_data,
                                       chosen.task, str(folder), str(self._cancel_file(name)))

    def _cancel_file(self, name: str) -> Path:
        """Made to stop the refit of trial `name` (`_refit`)."""
        return Path(self._workdir) / "refit" / f"{name}.cancelled"

    def _cancel_refit(self, name: str) -> None:
        flag = self._cancel_file(name)
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.touch()

    def _render(self, name: str) -> None:
        if not self._plots or name in self._rendering:
            return
        outcome = self._finished[name]
        folder = str(Path(self._pool.local_data) / name / "plots")
        self._rendering[name] = self._pool.submit_local(
            _render_plots, outcome.task, folder, self._rows.y_val, outcome.scores,
            list(self._encoder.feature_names), outcome.importance)

    def _log(self, trial: TrialResult, refitted: Future | None) -> None:
        if refitted is not None:
            model_dir, rows = Path(refitted.result()), self._rows.fitted_rows
        else:
            model = self._finished[trial.name].model
            assert model is not None, f"{trial.name}: its model was let go of"
            model_dir = Path(self._workdir) / trial.name / tracking.MODEL_DATA_DIR
            model.save(model_dir)
            rows = self._rows.train_rows
        self._uris[trial.name] = self._run.log_trial_model(
            trial.run_id, model_dir, self._encoder, self._finished[trial.name].task,
            self._example, rows)


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


def _ranked(trials: list[TrialResult], key: Callable[[float], float],
            metric: str) -> list[TrialResult]:  # fmt: skip
    """Best first by `metric` (the task's `sort_key`); undefined scores last, ties in order."""
    return sorted(trials, key=lambda t: _nan_last(key(t.metrics.get(metric, float("nan")))))


def _nan_last(key: float) -> float:
    return float("inf") if key != key else key


def _n_jobs(cfg: Config) -> int:
    cores = os.cpu_count() or 1
    return max(1, cores if cfg.training.n_jobs < 0 else cfg.training.n_jobs)


class _Pool:
    """Where trials run: `workers` at a time, on this machine's processes or a Dask cluster.

    Plots always render in local processes (their files must be where the parent logs them).
    """

    def __init__(self, executor: Executor, workers: int, encoder: Any, data: Any, workdir: str,
                 task: Task, local: Executor) -> None:
        self._executor, self.workers = executor, workers
        self._encoder, self._data, self._workdir = encoder, data, workdir
        self._task, self._local = task, local

    def submit_trial(self, trial: Trial, deadline: float | None,
                     bar: tuple[str, float] | None = None) -> Future:
        """The trial's outcome, its fitted model included (pickled back from the worker)
        if the trial beats `bar`."""
        return self._executor.submit(_run_trial, trial, self._encoder, self._data, self._task,
                                     deadline, bar)

    def submit_local(self, fn: Callable, *args: Any) -> Future:
        """Work on this machine's processes, with the encoded splits in the work folder."""
        return self._local.submit(fn, *args)

    @property
    def local_data(self) -> str:
        return self._workdir


@contextlib.contextmanager
def _worker_pool(cfg: Config, local: Executor, encoder: FeatureEncoder, arrays: tuple,
                 workdir: str, task: Task) -> Iterator[_Pool]:
    """The workers for the trials.

    `local`: this machine's worker processes (`local_workers`); the encoded splits are
    written once to the work folder and memory-mapped by each worker. `dask`: the cluster at
    `compute.scheduler_address`; encoder and arrays are scattered to every worker once
    instead of being pickled into each trial.
    """
    for name, array in zip(_ARRAY_NAMES, arrays, strict=True):  # also for the refits
        np.save(Path(workdir) / f"{name}.npy", np.ascontiguousarray(array))
    if cfg.compute.backend == "local":
        yield _Pool(local, _n_jobs(cfg), encoder, workdir, workdir, task, local)
        return
    from distributed import Client

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
        threads = sum(client.nthreads().values())
        log.info("trials on Dask at %s (%d worker threads)", address, threads)
        shared_encoder, shared_arrays = client.scatter([encoder, arrays], broadcast=True)
        yield _Pool(client.get_executor(pure=False), max(1, threads), shared_encoder,
                    shared_arrays, workdir, task, local)

