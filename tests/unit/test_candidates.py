"""Each family fits on the encoded matrix; boosting families stop early on validation."""

import numpy as np
import pytest

from ctloop.candidates import (
    FAMILIES,
    MAX_ROUNDS,
    STOPPING_ROUNDS,
    BinnedRows,
    Deadline,
    Trial,
    feature_importance,
    fit_estimator,
    fitted_rounds,
    native_model,
)


def _table(rows: int, signal: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 5)).astype(np.float32)
    X[:, 4] = rng.integers(0, 4, rows)  # a categorical column (codes)
    X[rng.random(rows) < 0.1, 1] = np.nan
    logit = signal * (X[:, 0] + (X[:, 4] == 2))
    return X, (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)


@pytest.mark.parametrize("family", ["xgboost", "lightgbm", "hist_gradient_boosting"])
def test_early_stopping_keeps_few_rounds_when_there_is_little_to_learn(family):
    """Pure noise: the validation loss stops falling almost at once, far below the cap."""
    X, y = _table(1500, signal=0.0)
    X_val, y_val = _table(500, signal=0.0, seed=1)
    fitted = fit_estimator(Trial(0, family, {"learning_rate": 0.1}, 1), "binary", X, y, [4],
                           validation=(X_val, y_val))
    rounds = fitted_rounds(fitted, family)
    assert 1 <= rounds < 100 < MAX_ROUNDS


def _wrapper_scores(family: str, kind: str, params: dict, X, y, validation) -> np.ndarray:
    """The model the libraries' scikit-learn wrappers fit for the same trial."""
    import lightgbm as lgb
    import xgboost as xgb

    X_val = validation[0]
    regression = kind == "regression"
    if family == "xgboost":
        cls = xgb.XGBRegressor if regression else xgb.XGBClassifier
        fitted = cls(tree_method="hist", n_jobs=1, random_state=1, n_estimators=MAX_ROUNDS,
                     early_stopping_rounds=STOPPING_ROUNDS, **params).fit(
            X, y, eval_set=[validation], verbose=False)
        return fitted.get_booster()[: fitted.best_iteration + 1].inplace_predict(X_val)
    cls = lgb.LGBMRegressor if regression else lgb.LGBMClassifier
    fitted = cls(n_jobs=1, random_state=1, verbose=-1, n_estimators=MAX_ROUNDS, **params).fit(
        X, y, eval_set=[validation], categorical_feature=[4],
        callbacks=[lgb.early_stopping(STOPPING_ROUNDS, verbose=False)])
    return fitted.booster_.predict(X_val)


def _binned_table(kind: str):
    """A table of the task, its training rows (after the first 500, which are its
    validation rows), and those rows binned for the trials to share."""
    X, y = _table(2000, signal=2.0)
    if kind == "multiclass":
        y = y + (X[:, 0] > 1)
    elif kind == "regression":
        y = X[:, 0] * 2.0 + np.nan_to_num(X[:, 1])
    fit_rows, validation = slice(500, None), (X[:500], y[:500])
    return X, y, fit_rows, validation, BinnedRows(X[fit_rows], y[fit_rows], [4], validation)


@pytest.mark.parametrize("family", ["xgboost", "lightgbm"])
@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_boosters_fit_the_same_model_on_rows_binned_by_an_earlier_trial(family, kind):
    """Trials reuse the rows an earlier trial binned (another max_bin bins them again); the
    models are the very ones the libraries' scikit-learn wrappers fit."""
    X, y, fit_rows, validation, binned = _binned_table(kind)
    for params in ({"learning_rate": 0.3}, {"learning_rate": 0.1, "max_bin": 31},
                   {"learning_rate": 0.1, "subsample": 0.8}):
        fitted = fit_estimator(Trial(0, family, params, 1), kind, X[fit_rows], y[fit_rows],
                               [4], validation=validation, binned=binned)
        booster = native_model(fitted, family)
        scores = (booster.inplace_predict(X[:500]) if family == "xgboost"
                  else booster.predict(X[:500]))
        wrapper_params = {**params, **({"subsample_freq": 1} if family == "lightgbm"
                                       and "subsample" in params else {})}
        np.testing.assert_allclose(scores, _wrapper_scores(
            family, kind, wrapper_params, X[fit_rows], y[fit_rows], validation), rtol=1e-6)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_histogram_boosting_fits_the_same_model_on_rows_binned_by_an_earlier_trial(kind):
    """HGB trials reuse the bins an earlier trial made of the same rows (other bin settings
    or weighted rows are binned again); each model is the one a fit of its own gives, and
    it pickles as a plain estimator."""
    import pickle

    X, y, fit_rows, validation, binned = _binned_table(kind)
    trials = [{"learning_rate": 0.3}, {"learning_rate": 0.1, "max_leaf_nodes": 8},
              {"learning_rate": 0.1, "max_bins": 31}, {"learning_rate": 0.3}]
    if kind != "regression":
        trials.append({"learning_rate": 0.3, "class_weight": "balanced"})
    shared = []
    for params in trials:
        trial = Trial(0, "hist_gradient_boosting", params, 1)
        fitted = fit_estimator(trial, kind, X[fit_rows], y[fit_rows], [4],
                               validation=validation, binned=binned)
        alone = fit_estimator(trial, kind, X[fit_rows], y[fit_rows], [4],
                              validation=validation)
        assert fitted.n_iter_ == alone.n_iter_ and not {"_bin_data", "_should_stop"} & set(
            vars(fitted))
        np.testing.assert_array_equal(fitted.predict(X), alone.predict(X))
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(fitted)).predict(X),
                                      alone.predict(X))
        shared.append(fitted._bin_mapper)
    assert shared[1] is shared[0] and shared[3] is shared[0]  # binned once for these
    assert shared[2] is not shared[0]  # another bin count: binned again
    # A refit on the same rows with fixed rounds (no validation rows) reuses them too.
    refit = fit_estimator(Trial(0, "hist_gradient_boosting", {"max_iter": 20}, 1), kind,
                          X[fit_rows], y[fit_rows], [4], binned=binned)
    assert refit._bin_mapper is shared[0]
    np.testing.assert_array_equal(refit.predict(X), fit_estimator(
        Trial(0, "hist_gradient_boosting", {"max_iter": 20}, 1), kind, X[fit_rows],
        y[fit_rows], [4]).predict(X))


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("learning_rate, budget", [(0.3, None), (0.002, 0.3)])
def test_histogram_boosting_hands_over_the_validation_scores_it_kept_while_stopping(
        kind, learning_rate, budget):
    """A trial need not predict its validation rows again: the scores HistGradientBoosting
    kept up to date while it stopped early (by its loss, or at the search's deadline) are
    the model's predictions bit for bit, and watching them changes nothing of the model."""
    import time

    from ctloop.predictors import estimator_scores
    from ctloop.tasks import BinaryTask, MulticlassTask, RegressionTask

    X, y, fit_rows, validation, binned = _binned_table(kind)
    task = {"binary": BinaryTask(1, 0), "multiclass": MulticlassTask([0, 1, 2]),
            "regression": RegressionTask()}[kind]
    trial = Trial(0, "hist_gradient_boosting", {"learning_rate": learning_rate}, 1)
    seen: list[np.ndarray] = []
    fitted = fit_estimator(trial, kind, X[fit_rows], y[fit_rows], [4], validation=validation,
                           binned=binned, deadline=budget and time.time() + budget,
                           on_validation_scores=seen.append)
    assert len(seen) == 1 and fitted.n_iter_ < MAX_ROUNDS
    np.testing.assert_array_equal(seen[0], estimator_scores(fitted, task, validation[0]))
    assert not {"_bin_data", "_should_stop", "_check_early_stopping_loss"} & set(vars(fitted))
    if budget is None:  # a deadline cuts the rounds wherever the clock says
        plain = fit_estimator(trial, kind, X[fit_rows], y[fit_rows], [4], validation=validation)
        assert fitted.n_iter_ == plain.n_iter_
        np.testing.assert_array_equal(estimator_scores(fitted, task, X),
                                      estimator_scores(plain, task, X))


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("params, budget", [
    ({"learning_rate": 0.3}, None),  # stops 50 rounds after its best
    ({"learning_rate": 1.0, "n_estimators": 40}, None),  # runs out of rounds past its best
    ({"learning_rate": 0.002}, 0.3),  # cut by the search's deadline
])
def test_lightgbm_hands_over_the_validation_scores_of_its_best_round(kind, params, budget):
    """A LightGBM trial need not predict its validation rows again: the scores LightGBM kept
    while it stopped early, as of the round it keeps, are the model's predictions bit for
    bit; reading them changes nothing of the model."""
    import time

    X, y, fit_rows, validation, binned = _binned_table(kind)
    trial = Trial(0, "lightgbm", params, 1)
    seen: list[np.ndarray] = []
    fitted = fit_estimator(trial, kind, X[fit_rows], y[fit_rows], [4], validation=validation,
                           binned=binned, deadline=budget and time.time() + budget,
                           on_validation_scores=seen.append)
    model = native_model(fitted, "lightgbm")
    predicted = np.asarray(model.predict(validation[0], num_threads=1), dtype=np.float64)
    if budget is None:
        assert len(seen) == 1 and model.num_trees() < MAX_ROUNDS * max(1, int(y.max()) + 1)
        plain = fit_estimator(trial, kind, X[fit_rows], y[fit_rows], [4], validation=validation)
        assert plain.model_to_string() == fitted.model_to_string()
    assert len(seen) <= 1  # after a deadline, only if its last round was its best
    for scores in seen:  # the shape and values TabularModel.scores_encoded gives
        np.testing.assert_array_equal(scores, predicted, strict=True)


def test_a_lightgbm_refit_with_fixed_rounds_keeps_categorical_columns_as_categories():
    """The refit of a chosen trial (no validation rows, rounds fixed) must learn the trial's
    model: categorical codes split as categories, not as numbers (they once were)."""
    import lightgbm as lgb

    X, y = _table(2000, signal=2.0)
    refit = fit_estimator(Trial(0, "lightgbm", {"n_estimators": 30}, 1), "binary", X, y, [4])
    as_categories = lgb.LGBMClassifier(n_jobs=1, random_state=1, verbose=-1,
                                       n_estimators=30).fit(X, y, categorical_feature=[4])
    as_numbers = lgb.LGBMClassifier(n_jobs=1, random_state=1, verbose=-1,
                                    n_estimators=30).fit(X, y)
    scores = native_model(refit, "lightgbm").predict(X)
    np.testing.assert_allclose(scores, as_categories.booster_.predict(X), rtol=1e-6)
    assert not np.allclose(scores, as_numbers.booster_.predict(X))


def test_early_stopping_keeps_more_rounds_when_there_is_signal():
    X, y = _table(3000, signal=3.0)
    X_val, y_val = _table(1000, signal=3.0, seed=1)
    noise = fitted_rounds(fit_estimator(
        Trial(0, "lightgbm", {"learning_rate": 0.05}, 1), "binary", *_table(3000, 0.0),
        [4], validation=_table(1000, 0.0, seed=1)), "lightgbm")
    signal = fitted_rounds(fit_estimator(
        Trial(0, "lightgbm", {"learning_rate": 0.05}, 1), "binary", X, y, [4],
        validation=(X_val, y_val)), "lightgbm")
    assert signal > noise


def test_xgboost_serves_only_the_rounds_early_stopping_kept():
    X, y = _table(1500, signal=0.0)
    fitted = fit_estimator(Trial(0, "xgboost", {}, 1), "binary", X, y, [4],
                           validation=_table(500, signal=0.0, seed=1))
    booster = native_model(fitted, "xgboost")
    rounds = fitted_rounds(fitted, "xgboost")
    assert booster.num_boosted_rounds() == rounds
    np.testing.assert_allclose(booster.inplace_predict(X),
                               fitted.inplace_predict(X, iteration_range=(0, rounds)), rtol=1e-6)
    assert fitted.num_boosted_rounds() > rounds  # the rounds after the best are not served


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_every_family_fits_every_task_and_reports_importance(family, kind):
    X, y = _table(600, signal=2.0)
    if kind == "multiclass":
        y = (y + (X[:, 0] > 1)).astype(np.int64)  # 3 classes
    elif kind == "regression":
        y = X[:, 0] * 2.0 + np.nan_to_num(X[:, 1])
    fitted = fit_estimator(Trial(0, family, {}, 1), kind, X, y, [4],
                           validation=(X[:200], y[:200]))
    importance = feature_importance(native_model(fitted, family), family, X.shape[1])
    assert importance.shape == (5,)
    if family != "hist_gradient_boosting":  # scikit-learn's HGB exposes no importances
        assert importance[0] > 0


@pytest.mark.parametrize("family", ["xgboost", "lightgbm", "hist_gradient_boosting"])
def test_a_boosting_trial_stops_adding_rounds_at_the_search_deadline(family):
    """A slow-learning trial that would run to the round cap stops once the budget is over."""
    import time

    X, y = _table(20000, signal=1.0)
    X_val, y_val = _table(4000, signal=1.0, seed=1)
    fitted = fit_estimator(Trial(0, family, {"learning_rate": 0.002}, 1), "binary", X, y, [4],
                           validation=(X_val, y_val), deadline=time.time() + 0.5)
    rounds = fitted_rounds(fitted, family)
    assert 1 <= rounds < MAX_ROUNDS
    if family != "hist_gradient_boosting":
        booster = native_model(fitted, family)
        served = (booster.num_boosted_rounds() if family == "xgboost"
                  else booster.current_iteration())
        assert served <= rounds + 1


@pytest.mark.parametrize("family", ["xgboost", "lightgbm", "random_forest"])
def test_a_refit_stops_adding_rounds_once_its_cancel_file_appears(tmp_path, family):
    """A refit (every row, no validation) that a later trial made useless is stopped by a
    file: with it, one round (a forest: one chunk of trees); without it, every round."""
    X, y = _table(2000, signal=2.0)
    X = np.nan_to_num(X)
    trial = Trial(0, family, {"n_estimators": 120}, 1)
    flag = tmp_path / "refit.cancelled"
    whole = fit_estimator(trial, "binary", X, y, [4], deadline=Deadline(cancelled_by=str(flag)))
    flag.touch()
    stopped = fit_estimator(trial, "binary", X, y, [4], deadline=Deadline(cancelled_by=str(flag)))
    if family == "random_forest":
        grown = [len(m.named_steps["model"].estimators_) for m in (whole, stopped)]
        assert grown == [120, 50]
    else:
        rounds = [m.num_boosted_rounds() if family == "xgboost" else m.current_iteration()
                  for m in (whole, stopped)]
        assert rounds == [120, 1]


def test_histogram_boosting_under_a_far_deadline_is_the_same_model():
    """HGB checks the deadline in its early-stopping hook; far from it, the model must be the
    one a fit without a deadline gives, and it must pickle as a plain estimator."""
    import pickle
    import time

    X, y = _table(3000, signal=2.0)
    X_val, y_val = _table(1000, signal=2.0, seed=1)
    trial = Trial(0, "hist_gradient_boosting", {"learning_rate": 0.05}, 1)
    whole = fit_estimator(trial, "binary", X, y, [4], validation=(X_val, y_val))
    timed = fit_estimator(trial, "binary", X, y, [4], validation=(X_val, y_val),
                          deadline=time.time() + 600)
    assert timed.n_iter_ == whole.n_iter_ > 50
    np.testing.assert_array_equal(timed.predict_proba(X), whole.predict_proba(X))
    assert "_should_stop" not in vars(timed)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(timed)).predict_proba(X),
                                  whole.predict_proba(X))


def test_a_forest_grows_the_same_trees_under_a_deadline_and_stops_at_it():
    """A forest has no rounds: it grows in warm-started chunks of trees, the very trees a
    single fit grows, and stops adding chunks once the search's budget is over."""
    import time

    X, y = _table(2000, signal=2.0)
    X = np.nan_to_num(X)
    trial = Trial(0, "random_forest", {"max_features": 0.5, "min_samples_leaf": 2}, 1)
    whole = fit_estimator(trial, "binary", X, y, [4])
    chunked = fit_estimator(trial, "binary", X, y, [4], deadline=time.time() + 600)
    assert len(chunked.named_steps["model"].estimators_) == 200
    np.testing.assert_array_equal(chunked.predict_proba(X), whole.predict_proba(X))
    late = fit_estimator(trial, "binary", X, y, [4], deadline=time.time() - 1)
    assert len(late.named_steps["model"].estimators_) == 50
