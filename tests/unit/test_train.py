"""Which fitted models a search holds on to, and what a worker keeps between trials."""

from __future__ import annotations

import dataclasses
import pickle
import sys
import threading

import numpy as np
import pytest

from ctloop import tracking
from ctloop.candidates import Trial
from ctloop.tasks.binary import BinaryTask
from ctloop.train import (
    TrialResult,
    _binned,
    _Finished,
    _forget_models,
    _model_bar,
    _ranked,
    _run_trial,
)


def _finished(name: str, auc: float) -> tuple[TrialResult, _Finished]:
    record = tracking.TrialRecord(name, "linear", {}, {"roc_auc": auc})
    outcome = _Finished(Trial(0, "linear", {}, 0), record, BinaryTask("Yes", "No"), np.zeros(1),
                        np.zeros(1), model=object())  # any object stands for the model
    return TrialResult(name, "linear", "run", {"roc_auc": auc}), outcome


def test_only_the_best_few_trials_keep_their_fitted_model():
    trials, finished = [], {}
    for name, auc in [("a", 0.70), ("b", 0.80), ("c", float("nan")), ("d", 0.75),
                      ("e", 0.60)]:  # fmt: skip
        trial, outcome = _finished(name, auc)
        trials.append(trial)
        finished[name] = outcome
        _forget_models(finished, trials, BinaryTask("Yes", "No").sort_key("roc_auc"), "roc_auc", 2)

    kept = {name for name, outcome in finished.items() if outcome.model is not None}
    assert kept == {"b", "d"}  # the two best; an undefined score ranks last


@pytest.mark.parametrize("seed", range(5))
def test_trials_that_cannot_make_the_best_few_come_back_without_a_model(seed, monkeypatch):
    """A trial submitted while the best `keep` so far all beat it or tie with it (ties rank
    the earlier trial first) sends back no model: it could never be logged. Whatever the
    order trials finish in, every one of the final best `keep` still has its model."""
    from ctloop import train

    rng = np.random.default_rng(seed)
    aucs = np.round(rng.uniform(0.6, 0.8, 40), 2)  # ties included
    aucs[rng.integers(40)] = np.nan
    key = BinaryTask("Yes", "No").sort_key("roc_auc")
    monkeypatch.setattr(train, "_fit_and_score", lambda trial, *_: _finished(
        trial.name, float(aucs[trial.number]))[1])
    trials: list[TrialResult] = []
    finished: dict[str, _Finished] = {}
    pending: list[tuple[Trial, tuple[str, float] | None]] = []
    dropped = 0
    for number in range(40):
        pending.append((Trial(number, "linear", {}, 0), _model_bar(trials, key, "roc_auc", 3, 0)))
        while len(pending) > 3 or (number == 39 and pending):  # three trials in flight
            trial, bar = pending.pop(int(rng.integers(len(pending))))  # any may finish next
            outcome = _run_trial(trial, None, "", BinaryTask("Yes", "No"), None, bar)
            dropped += outcome.model is None
            finished[trial.name] = outcome
            trials.append(TrialResult(trial.name, "linear", "run", dict(outcome.record.metrics)))
    assert dropped > 20  # most of them
    assert all(finished[t.name].model is not None for t in _ranked(trials, key, "roc_auc")[:3])


def test_every_trial_brings_its_model_back_while_any_can_still_be_logged():
    key = BinaryTask("Yes", "No").sort_key("roc_auc")
    trials = [_finished(name, auc)[0] for name, auc in [("a", 0.7), ("b", float("nan"))]]
    assert _model_bar(trials, key, "roc_auc", 3, 0) is None  # fewer trials than kept models
    assert _model_bar(trials, key, "roc_auc", 2, 0) is None  # the second best has no score
    assert _model_bar(trials, key, "roc_auc", 1, 0) == ("roc_auc", 0.7)
    assert _model_bar(trials, key, "roc_auc", 1, per_family=1) is None  # an ensemble to come


class _OneSlowTrialPool:
    """Two workers (threads); the search's last trial takes far longer than the others."""

    workers = 2

    def __init__(self, last: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._executor, self._last = ThreadPoolExecutor(2), last

    def submit_trial(self, trial: Trial, deadline: float | None, bar=None):
        return self._executor.submit(self._fit, trial)

    def _fit(self, trial: Trial) -> _Finished:
        import time

        time.sleep(0.5 if trial.number == self._last else 0.01)
        return _finished(trial.name, 0.5 + trial.number / 100)[1]


def test_the_idle_worker_is_offered_once_while_the_last_trial_runs():
    """When the search has stopped and a worker is free, the trainer may refit the best so
    far there (instead of after the last trial): offered once, after every other trial."""
    from ctloop.config import CandidateConfig
    from ctloop.search import Search
    from ctloop.train import TrainResult, _run_search

    search = Search({"linear": CandidateConfig(trials=6, search={"C": {"low": 0.1, "high": 10}})},
                    seed=0, max_trials=6, minimize=False, lag=4)
    seen: list[str] = []
    offers: list[tuple[list[str], int]] = []
    result = TrainResult("", "x", "roc_auc")
    for outcome in _run_search(search, _OneSlowTrialPool(last=5), "roc_auc", None, result,
                               on_idle=lambda running: offers.append((list(seen), running))):
        seen.append(outcome.record.name)
    assert len(seen) == 6 and result.stopped_by == "trials"
    assert len(offers) == 1 and offers[0][1] == 1  # one trial still runs: the last
    assert len(offers[0][0]) == 5 and "linear-05" not in offers[0][0]


class _QueueingPool:
    """Two workers (threads) with a queue, like loky's: a trial waits there for a free worker,
    then runs unless the budget ran out meanwhile (as `_run_trial` does)."""

    workers = 2

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._executor = ThreadPoolExecutor(2)
        self.submitted: list[tuple[float, int]] = []  # (when, trials then unfinished)
        self.started: list[tuple[str, float]] = []
        self.deadline: float | None = None
        self._unfinished = 0

    def submit_trial(self, trial: Trial, deadline: float | None, bar=None):
        import time

        self._unfinished, self.deadline = self._unfinished + 1, deadline
        self.submitted.append((time.time(), self._unfinished))
        return self._executor.submit(self._fit, trial, deadline)

    def _fit(self, trial: Trial, deadline: float | None) -> _Finished | None:
        import time

        try:
            if deadline is not None and time.time() >= deadline:
                return None
            self.started.append((trial.name, time.time()))
            time.sleep(0.15)
            return _finished(trial.name, 0.5 + trial.number / 1000)[1]
        finally:
            self._unfinished -= 1


def test_a_trial_waits_for_each_free_worker_and_none_starts_after_the_budget():
    """One trial more than there are workers is submitted, so a worker that finishes does
    not wait for the parent to ask the search; when the budget runs out, the trial still
    waiting is not run and the search says the budget stopped it."""
    from ctloop.config import CandidateConfig
    from ctloop.search import Search
    from ctloop.train import TrainResult, _run_search

    search = Search({"linear": CandidateConfig(trials=100, search={"C": {"low": 0.1,
                                                                       "high": 10}})},
                    seed=0, max_trials=100, minimize=False, lag=4)
    pool, result = _QueueingPool(), TrainResult("", "x", "roc_auc")
    seen = [o.record.name for o in _run_search(search, pool, "roc_auc", 0.5, result)]
    assert result.stopped_by == "time_budget"
    assert max(unfinished for _, unfinished in pool.submitted) == 3
    assert all(when < pool.deadline for _, when in pool.started)
    assert 4 <= len(seen) == len(pool.started) < len(pool.submitted)


def test_with_an_ensemble_to_choose_the_best_of_each_family_keep_their_model_too():
    trials, finished = [], {}
    key = BinaryTask("Yes", "No").sort_key("roc_auc")
    for name, family, auc in [("x1", "xgboost", 0.80), ("x2", "xgboost", 0.79),
                              ("x3", "xgboost", 0.78), ("l1", "linear", 0.70),
                              ("l2", "linear", 0.69), ("x4", "xgboost", 0.77)]:  # fmt: skip
        trial, outcome = _finished(name, auc)
        trials.append(TrialResult(name, family, "run", trial.metrics))
        finished[name] = outcome
        _forget_models(finished, trials, key, "roc_auc", 2, per_family=1)

    kept = {name for name, outcome in finished.items() if outcome.model is not None}
    assert kept == {"x1", "x2", "l1"}  # the best two overall, and the best linear trial


def test_a_worker_bins_a_runs_rows_once_for_all_its_trials():
    """Each trial brings its own copy of the run's folder path (pickled per task): the rows it
    names are binned once per worker, and another run's rows replace them."""
    X, y = np.zeros((4, 2), dtype=np.float32), np.zeros(4)
    first, second = (pickle.loads(pickle.dumps("/tmp/ctloop-train-run1")) for _ in range(2))
    binned = _binned(first, "split", X, y, [])
    assert _binned(second, "split", X, y, []) is binned
    assert _binned(second, 0, X, y, []) is not binned  # a fold's rows are other rows
    assert _binned("/tmp/ctloop-train-run2", "split", X, y, []) is not binned
    assert _binned(first, "split", X, y, []) is not binned  # run 1's rows were let go


def test_a_trial_fits_and_scores_on_one_thread_and_leaves_the_pools_as_they_were(
        monkeypatch):
    """Each worker has a core of its own: a trial's OpenMP and BLAS pools (HGB's predict,
    numpy) must not spread onto the other worker's core, and nothing stays limited after."""
    from threadpoolctl import threadpool_info

    from ctloop import train, workers

    seen: list[dict[str, int]] = []
    monkeypatch.setattr(train, "_fit_and_score", lambda *args: seen.append(
        {pool["filepath"]: pool["num_threads"] for pool in threadpool_info()}))
    workers._import_fitting_libraries()  # as every worker has
    before = {pool["filepath"]: pool["num_threads"] for pool in threadpool_info()}
    for _ in range(2):  # the second trial reuses the worker's controller
        train._run_trial(Trial(0, "linear", {}, 0), None, "", None, None)
    assert len(seen) == 2 and all(set(s.values()) == {1} for s in seen)
    assert {p["filepath"]: p["num_threads"] for p in threadpool_info()} == before


class _SavedModel:
    def save(self, folder):
        folder.mkdir(parents=True)


class _RecordingRun:
    def __init__(self) -> None:
        self.models: list[tuple[str, int]] = []  # (trial run id, rows its model was fitted on)
        self.plots: list[str] = []

    def log_trial_model(self, run_id, model_dir, encoder, task, example, rows) -> str:
        self.models.append((run_id, rows))
        return f"runs:/{run_id}/model"

    def log_trial_plots(self, run_id, folder) -> None:
        self.plots.append(run_id)


class _LocalPool:
    """Runs local work at once and remembers it: refits and plot renders."""

    def __init__(self, folder) -> None:
        self.local_data, self.done = str(folder), []

    def submit_local(self, fn, *args):
        from concurrent.futures import Future

        self.done.append((fn.__name__, args[0].name if fn.__name__ == "_refit" else args[1]))
        future: Future = Future()
        future.set_result(args[4] if fn.__name__ == "_refit" else args[1])  # model_dir
        return future


def _four_trials_logged_by_three(tmp_path, train_rows: int, ensemble_to_come: bool):
    """Trials a, b, c and d (the best, last) and a `_BestModels` keeping three, its best
    fitted on 1000 rows (the others on `train_rows`), recording what it logs and runs."""
    from ctloop.train import _BestModels

    trials, finished = [], {}
    for number, (name, auc) in enumerate([("a", 0.80), ("b", 0.75), ("c", 0.70),
                                          ("d", 0.85)]):
        trial, outcome = _finished(name, auc)
        trials.append(TrialResult(name, "linear", f"run-{name}", trial.metrics))
        finished[name] = dataclasses.replace(outcome, trial=Trial(number, "linear", {}, 0),
                                             model=_SavedModel())
    run, pool = _RecordingRun(), _LocalPool(tmp_path)
    best = _BestModels(run, pool, str(tmp_path), _Encoder(), finished, _BestModels.Rows(
        np.zeros(1), fitted_rows=1000, train_rows=train_rows), example=None, plots=True,
        keep=3, ensemble_to_come=ensemble_to_come)
    return trials, run, pool, best


@pytest.mark.parametrize("ensemble_to_come", [False, True])
def test_what_is_certain_is_logged_while_the_last_trial_runs_and_only_the_best_carry_a_model(
        tmp_path, ensemble_to_come):
    """Three models are logged; one trial still runs. The best two so far are sure to stay
    among the best three (their plots render now), and the second is sure not to be the
    best (its model is logged now). The last trial then wins: it is refitted and logged,
    the former best is logged unrefitted, and nothing is logged twice or for the fourth.
    With an ensemble still to come, only the best so far is sure to stay: nothing is
    logged early."""
    trials, run, pool, best = _four_trials_logged_by_three(tmp_path, 800,
                                                           ensemble_to_come)
    key = BinaryTask("Yes", "No").sort_key("roc_auc")
    best.while_last_trials_run(_ranked(trials[:3], key, "roc_auc"), running=1)
    early_plots = [what for kind, what in pool.done if kind == "_render_plots"]
    if ensemble_to_come:
        assert run.models == [] and len(early_plots) == 1
    else:
        assert run.models == [("run-b", 800)] and len(early_plots) == 2
    assert [what for kind, what in pool.done if kind == "_refit"] == ["linear-00"]
    logged = best.log(_ranked(trials, key, "roc_auc")[:3])
    assert [t.name for t in logged] == ["d", "a", "b"] and all(t.model_uri for t in logged)
    assert sorted(run.models) == [("run-a", 800), ("run-b", 800), ("run-d", 1000)]
    # "a" was refitted while it led; "d" (trial 3) won, so its refit is the one logged, and
    # the refit of "a" is told to stop (its worker is needed for what is left)
    assert [what for kind, what in pool.done if kind == "_refit"] == ["linear-00", "linear-03"]
    assert [p.name for p in (tmp_path / "refit").glob("*.cancelled")] == ["a.cancelled"]
    assert sorted(run.plots) == ["run-a", "run-b", "run-d"]
    assert len([kind for kind, _ in pool.done if kind == "_render_plots"]) == 3
    # skops (these are scikit-learn models) was imported in a thread while the last trial
    # ran; it is gone after the training, so the next one may fork its workers again
    assert "skops.io" in sys.modules
    assert not [t for t in threading.enumerate() if t.name == "ctloop-skops"]


@pytest.mark.parametrize("ensemble_to_come", [False, True])
def test_cross_validated_models_sure_to_be_logged_are_logged_while_the_last_trial_runs(
        tmp_path, ensemble_to_come):
    """Cross-validated trials were fitted on every row: nothing is refitted, so each trial
    sure to stay among the best three, the best so far included, is logged while the last
    trial runs, and the end logs only the rest."""
    trials, run, pool, best = _four_trials_logged_by_three(tmp_path, 1000,
                                                           ensemble_to_come)
    key = BinaryTask("Yes", "No").sort_key("roc_auc")
    best.while_last_trials_run(_ranked(trials[:3], key, "roc_auc"), running=1)
    early = [("run-a", 1000)] if ensemble_to_come else [("run-a", 1000), ("run-b", 1000)]
    assert run.models == early
    logged = best.log(_ranked(trials, key, "roc_auc")[:3])
    assert [t.name for t in logged] == ["d", "a", "b"] and all(t.model_uri for t in logged)
    assert sorted(run.models) == [("run-a", 1000), ("run-b", 1000), ("run-d", 1000)]
    assert not [kind for kind, _ in pool.done if kind == "_refit"]


def test_a_cancelled_refit_stops_and_saves_nothing(tmp_path):
    """The refit of a best that a later trial beat: told to stop, it ends within a round
    and leaves no model behind to be logged by mistake."""
    import types

    from ctloop.train import _ARRAY_NAMES, _refit

    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    for name, array in zip(_ARRAY_NAMES, (X[:2500], y[:2500], X[2500:], y[2500:],
                                          np.zeros(0, dtype=np.int8)), strict=True):
        np.save(tmp_path / f"{name}.npy", array)
    flag, model_dir = tmp_path / "refit" / "x.cancelled", tmp_path / "refit" / "x" / "model"
    flag.parent.mkdir()
    flag.touch()
    trial = Trial(0, "xgboost", {"n_estimators": 500}, 0)
    encoder = types.SimpleNamespace(categorical_indices=[])
    assert _refit(trial, encoder, str(tmp_path), BinaryTask("Yes", "No"), str(model_dir),
                  str(flag)) is None
    assert not model_dir.exists()


class _Encoder:
    feature_names = ("x",)


def _engines(tmp_path, rare_rows: int, **training) -> tuple:
    """A four-line config on a multiclass table whose rarest class has `rare_rows` rows,
    loaded and split as `ctloop train` does; with the training + validation labels."""
    import pandas as pd

    from ctloop.config import load_config
    from ctloop.data import load_dataset, split_dataset
    from tests.conftest import write_config

    rng = np.random.default_rng(3)
    counts = {"turbo-fan": 300, "turbo-jet": 120, "reciprocating": rare_rows}
    engine = np.repeat(list(counts), list(counts.values()))
    pd.DataFrame({"seats": rng.integers(2, 400, len(engine)), "speed": rng.normal(size=len(
        engine)), "engine": engine}).to_csv(tmp_path / "planes.csv", index=False)
    cfg = load_config(write_config(tmp_path, {
        "name": "planes", "data": {"source": "planes.csv", "target": "engine"},
        **({"training": training} if training else {})}))
    dataset = load_dataset(cfg.data)
    splits = split_dataset(dataset, cfg.split)
    return cfg, dataset, np.concatenate([splits.train.y, splits.validation.y])


def test_a_rare_class_gets_as_many_folds_as_its_rows_and_the_output_says_why(tmp_path):
    """A class of 5 rows keeps 4 after the holdout: left to ctloop, 4 folds (each scores
    one of them), not an error about a setting the user never made."""
    from ctloop.train import cv_folds

    cfg, dataset, y = _engines(tmp_path, rare_rows=5)
    assert cv_folds(cfg, dataset, y) == (
        4, "at most 20,000 rows and no time column; 4 folds, as class 'reciprocating' has "
           "4 rows")
    cfg, dataset, y = _engines(tmp_path, rare_rows=40)
    assert cv_folds(cfg, dataset, y) == (5, "at most 20,000 rows and no time column")


def test_folds_the_user_asks_for_must_fit_the_rarest_class(tmp_path):
    from ctloop.config import ConfigError
    from ctloop.train import cv_folds

    cfg, dataset, y = _engines(tmp_path, rare_rows=5, cv_folds=5)
    with pytest.raises(ConfigError, match=r"training\.cv_folds: 5 folds need at least 5 rows "
                                          r"of every class .* \(the rarest has 4\)"):
        cv_folds(cfg, dataset, y)
    cfg, dataset, y = _engines(tmp_path, rare_rows=5, cv_folds=3)
    assert cv_folds(cfg, dataset, y) == (3, "training.cv_folds")


def test_a_class_with_few_rows_in_a_fold_is_fitted_not_stopped_on():
    """Every 10th row of a fold's share is its early-stopping set; a class whose rows there
    would all be stopping rows keeps them for the fit, so each fold's model knows it."""
    from ctloop.train import fold_rows

    folds = np.repeat(np.arange(2), 40).astype(np.int8)
    classes = np.zeros(80, dtype=np.int64)
    classes[[40, 50, 60]] = [2, 1, 1]  # fold 0 fits rows 40..79, stops on 40, 50, 60, 70
    (_, fit_rows, stop, _), _ = fold_rows(folds, "lightgbm", classes)
    assert {40, 50, 60} <= set(fit_rows) and list(stop) == [70]
    (_, plain_fit, plain_stop, _), _ = fold_rows(folds, "lightgbm")
    assert list(plain_stop) == [40, 50, 60, 70] and 40 not in plain_fit
