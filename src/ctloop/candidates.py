"""Model families: how one trial of each is built, fitted (with early stopping) and read.

What to try is decided elsewhere (`ctloop.search`); this module only knows, per family, the
estimator, its library defaults inside the search space (the first trial of every family),
and how a boosting family stops on the validation split (its rounds chosen by the data).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ctloop.config import KNOWN_FAMILIES

XGBOOST, LIGHTGBM = "xgboost", "lightgbm"
FAMILIES = KNOWN_FAMILIES
BOOSTED = frozenset({XGBOOST, LIGHTGBM, "hist_gradient_boosting"})  # stop early on validation
HGB_MAX_CATEGORIES = 254  # HistGradientBoosting bins categories into at most 255 bins
MAX_ROUNDS = 1000  # a boosting trial's cap when the space does not set one; early stopping
STOPPING_ROUNDS = 50  # rounds without a better validation loss before a booster stops
HGB_STOPPING_ROUNDS = 20  # HistGradientBoosting's own n_iter_no_change, counted per iteration
FOREST_CHUNK = 50  # trees between a forest's deadline checks

# Each family's library defaults: the first trial of a family uses these where they lie in
# its search space, so the search starts from the point the libraries' authors tuned for.
DEFAULT_POINTS: dict[str, dict[str, Any]] = {
    XGBOOST: {"learning_rate": 0.1, "max_depth": 6, "min_child_weight": 1.0, "subsample": 1.0,
              "colsample_bytree": 1.0, "reg_lambda": 1.0},
    LIGHTGBM: {"learning_rate": 0.1, "num_leaves": 31, "min_child_samples": 20,
               "subsample": 1.0, "colsample_bytree": 1.0, "reg_lambda": 1e-3},
    "hist_gradient_boosting": {"learning_rate": 0.1, "max_leaf_nodes": 31,
                               "min_samples_leaf": 20, "l2_regularization": 1e-4},
    "linear": {"C": 1.0},
    "random_forest": {"max_features": "sqrt", "min_samples_leaf": 1},
}


@dataclass(frozen=True)
class Deadline:
    """When a fit stops adding rounds: at `at` (a `time.time()` value: the end of the
    search's time budget), or as soon as the file `cancelled_by` exists: the refit of a trial
    that a later one has beaten is stopped so, instead of holding a worker for seconds."""

    at: float = math.inf
    cancelled_by: str | None = None

    def passed(self) -> bool:
        return time.time() >= self.at or (
            self.cancelled_by is not None and os.path.exists(self.cancelled_by))


@dataclass(frozen=True)
class Trial:
    """One point of the search: a family, its parameters, and a seed."""

    number: int
    family: str
    params: dict[str, Any]
    seed: int

    @property
    def name(self) -> str:
        return f"{self.family}-{self.number:02d}"


def _linear(kind: str, params: dict[str, Any], categorical: list[int], numeric: list[int]):
    """Logistic regression for classes, ridge for quantities; one `C` (inverse strength)."""
    pre = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median",
                                                           keep_empty_features=True)),
                                  ("scale", StandardScaler())]), numeric),
        ]
    )
    if kind == "regression":
        strength = params.pop("C", 1.0)
        model = Ridge(**{"alpha": 1.0 / strength, **params})
    else:
        model = LogisticRegression(**{"max_iter": 500, **params})
    return Pipeline([("preprocess", pre), ("model", model)])


def build_estimator(trial: Trial, kind: str, categorical_indices: list[int],
                    n_features: int, early_stopping: bool = False) -> Any:
    """An unfitted estimator for the encoded float matrix (categories as codes, NaN missing)."""
    params = dict(trial.params)
    numeric_indices = [i for i in range(n_features) if i not in set(categorical_indices)]
    regression = kind == "regression"
    if trial.family == XGBOOST:
        import xgboost as xgb

        cls = xgb.XGBRegressor if regression else xgb.XGBClassifier
        stop = {"early_stopping_rounds": STOPPING_ROUNDS} if early_stopping else {}
        return cls(**{"tree_method": "hist", "n_jobs": 1, "random_state": trial.seed,
                      "n_estimators": MAX_ROUNDS if early_stopping else 100, **stop, **params})
    if trial.family == LIGHTGBM:
        import lightgbm as lgb

        cls = lgb.LGBMRegressor if regression else lgb.LGBMClassifier
        bagging = {"subsample_freq": 1} if params.get("subsample", 1.0) < 1.0 else {}
        return cls(**{"n_jobs": 1, "random_state": trial.seed, "verbose": -1,
                      "n_estimators": MAX_ROUNDS if early_stopping else 100, **bagging,
                      **params})
    if trial.family == "linear":
        return _linear(kind, params, categorical_indices, numeric_indices)
    if trial.family == "hist_gradient_boosting":
        mask = np.zeros(n_features, dtype=bool)
        mask[categorical_indices] = True
        cls = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
        stop = ({"early_stopping": True, "n_iter_no_change": HGB_STOPPING_ROUNDS,
                 "max_iter": MAX_ROUNDS} if early_stopping else {"early_stopping": False})
        return cls(**{"categorical_features": mask, "random_state": trial.seed, **stop,
                      **params})
    if trial.family == "random_forest":
        cls = RandomForestRegressor if regression else RandomForestClassifier
        forest = cls(**{"n_estimators": 200, "n_jobs": 1, "random_state": trial.seed, **params})
        return Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                         ("model", forest)])
    raise ValueError(f"unknown candidate family {trial.family!r}")


class BinnedRows:
    """One set of training rows, and the rows their boosting stops on, as XGBoost, LightGBM
    and HistGradientBoosting bin them: built by the first trial that needs them and reused
    by the later trials on the same rows. The bins depend on the rows and on a few dataset
    parameters (`max_bin`), not on the rest of a trial's parameters; binning (with the
    scikit-learn wrappers' checks, which the libraries' own training calls skip) is 7-16% of
    a trial on the flights table.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, categorical_indices: list[int],
                 validation: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.X, self.y, self.validation = X, y, validation
        self.categorical_indices = list(categorical_indices)
        self._xgboost: tuple[Any, Any, Any] | None = None  # (max_bin, train, validation)
        self._lightgbm: tuple[Any, Any, Any] | None = None  # (dataset params, train, val.)
        self._hgb: dict[tuple, tuple[Any, np.ndarray]] = {}  # bin settings -> (mapper, bins)

    def xgboost(self, max_bin: int | None) -> tuple[Any, Any]:
        import xgboost as xgb

        if self._xgboost is None or self._xgboost[0] != max_bin:
            train = xgb.QuantileDMatrix(self.X, self.y, max_bin=max_bin, nthread=1)
            # Raw values, not bins: the same predictions, and scoring them every round costs
            # a third as much (15-30% of an XGBoost trial on the flights table).
            validation = None if self.validation is None else xgb.DMatrix(
                *self.validation, nthread=1)
            self._xgboost = (max_bin, train, validation)
        return self._xgboost[1], self._xgboost[2]

    def lightgbm(self, params: dict[str, Any]) -> tuple[Any, Any]:
        """Binned with those of the trial's `params` that LightGBM applies to a dataset."""
        import lightgbm as lgb

        binning = lgb.Dataset(None, params=params).get_params()
        if self._lightgbm is None or self._lightgbm[0] != binning:
            kept = {"verbose": -1, "num_threads": 1, "feature_pre_filter": False, **binning}
            train = lgb.Dataset(self.X, self.y, params=kept, free_raw_data=False,
                                categorical_feature=self.categorical_indices)
            validation = None if self.validation is None else lgb.Dataset(
                *self.validation, reference=train, params=kept, free_raw_data=False,
                categorical_feature=self.categorical_indices)
            self._lightgbm = (binning, train, validation)
        return self._lightgbm[1], self._lightgbm[2]

    def hgb_bin_data(self, estimator: Any) -> Callable[..., np.ndarray]:
        """A stand-in for HistGradientBoosting's `_bin_data` during one fit of these rows:
        the bins (and the fitted bin mapper) of the first fit with the same bin settings
        are reused. They depend on the rows, the bin count, which features are categories
        and their categories, not on the rest of the trial; binning is about a sixth of a
        HistGradientBoosting trial on the flights table. Weighted rows (`class_weight`)
        are binned by the library every time: their bins depend on the weights."""
        library_bin_data = estimator._bin_data

        def bin_data(X: np.ndarray, sample_weight: Any, is_training_data: bool) -> np.ndarray:
            mapper = estimator._bin_mapper
            if sample_weight is not None:
                return library_bin_data(X, sample_weight, is_training_data)
            if is_training_data:
                key: tuple = ("train", mapper.n_bins, mapper.subsample, mapper.random_state,
                              _array_key(mapper.is_categorical),
                              tuple(_array_key(c) for c in mapper.known_categories or ()))
            else:  # the validation rows, binned by the (reused) mapper of this fit
                key = ("validation", id(mapper))
            if key not in self._hgb:
                binned = library_bin_data(X, sample_weight, is_training_data)
                binned.flags.writeable = False  # shared by later fits: none may change it
                self._hgb[key] = (estimator._bin_mapper, binned)
            estimator._bin_mapper = self._hgb[key][0]
            return self._hgb[key][1]

        return bin_data


def _array_key(values: np.ndarray | None) -> bytes | None:
    return None if values is None else np.asarray(values).tobytes()


def fit_estimator(trial: Trial, kind: str, X: np.ndarray, y: np.ndarray,
                  categorical_indices: list[int],
                  validation: tuple[np.ndarray, np.ndarray] | None = None,
                  deadline: float | Deadline | None = None,
                  binned: BinnedRows | None = None,
                  on_validation_scores: Callable[[np.ndarray], None] | None = None):
    """Fit one trial; with `validation`, boosting families stop when its loss stops falling.

    `deadline` (a `time.time()` value, the end of the search's time budget, or a `Deadline`):
    the boosting families stop adding rounds then, so a trial running when the budget ends
    finishes soon after it (XGBoost keeps its best round so far, LightGBM and
    HistGradientBoosting the rounds they have; HistGradientBoosting checks only while it
    stops early, a forest between chunks of trees). Categorical codes past HGB's bin limit
    are treated as numeric there.
    `binned`: these same rows (and validation rows), binned by earlier trials (the boosting
    families reuse those bins). XGBoost and LightGBM return their native booster.
    `on_validation_scores`: called with the fitted model's scores of the validation rows when
    the fit kept them up to date anyway (HistGradientBoosting and LightGBM, as they stop
    early), equal to predicting them.
    """
    if deadline is not None and not isinstance(deadline, Deadline):
        deadline = Deadline(at=deadline)
    if trial.family == "hist_gradient_boosting":
        categorical_indices = [
            i for i in categorical_indices if np.nanmax(X[:, i], initial=0) < HGB_MAX_CATEGORIES
        ]
    stopping = validation is not None and trial.family in BOOSTED
    estimator = build_estimator(trial, kind, categorical_indices, X.shape[1], stopping)
    if trial.family in (XGBOOST, LIGHTGBM):
        binned = binned or BinnedRows(X, y, categorical_indices,
                                      validation if stopping else None)
        if trial.family == XGBOOST:
            return _fit_xgboost(estimator, trial, kind, binned, stopping, deadline)
        return _fit_lightgbm(estimator, trial, kind, binned, stopping, deadline,
                             on_validation_scores)
    if trial.family == "random_forest" and deadline is not None:
        _fit_forest_until(estimator, X, y, deadline)
        return estimator
    if trial.family == "hist_gradient_boosting":
        _fit_hgb(estimator, X, y, validation if stopping else None, deadline, binned,
                 on_validation_scores)
        return estimator
    estimator.fit(X, y)
    return estimator


def _n_classes(kind: str, y: np.ndarray) -> int:
    """Classes of a multiclass target (labels are codes 0 .. n-1), else 0."""
    return int(np.max(y)) + 1 if kind == "multiclass" else 0


def _fit_xgboost(wrapper: Any, trial: Trial, kind: str, rows: BinnedRows, stopping: bool,
                 deadline: Deadline | None) -> Any:
    """`xgboost.train` with the parameters the scikit-learn wrapper would pass it (the same
    model, tested) on the binned rows."""
    import xgboost as xgb

    params = {k: v for k, v in wrapper.get_xgb_params().items() if v is not None}
    classes = _n_classes(kind, rows.y)
    if classes and "objective" not in trial.params:
        params.update(objective="multi:softprob", num_class=classes)
    train, validation = rows.xgboost(params.get("max_bin"))
    return xgb.train(params, train, num_boost_round=wrapper.n_estimators,
                     evals=[(validation, "validation")] if stopping else (),
                     early_stopping_rounds=wrapper.early_stopping_rounds if stopping else None,
                     callbacks=[_xgboost_deadline(deadline)] if deadline else None,
                     verbose_eval=False)


_LIGHTGBM_WRAPPER_ONLY = frozenset({"n_estimators", "importance_type", "class_weight",
                                    "objective"})


def _fit_lightgbm(wrapper: Any, trial: Trial, kind: str, rows: BinnedRows, stopping: bool,
                  deadline: Deadline | None,
                  on_validation_scores: Callable[[np.ndarray], None] | None = None) -> Any:
    """`lightgbm.train` with the parameters the scikit-learn wrapper would pass it (the same
    model, tested) on the binned rows."""
    import lightgbm as lgb

    params = {k: v for k, v in wrapper.get_params().items()
              if k not in _LIGHTGBM_WRAPPER_ONLY and v is not None}
    classes = _n_classes(kind, rows.y)
    params["objective"] = trial.params.get("objective") or (
        "regression" if kind == "regression" else "multiclass" if classes else "binary")
    if classes:
        params["num_class"] = classes
    train, validation = rows.lightgbm(params)
    callbacks = [lgb.early_stopping(STOPPING_ROUNDS, verbose=False)] if stopping else []
    if deadline is not None:
        callbacks.append(_lightgbm_deadline(deadline))
    kept = None
    if stopping and on_validation_scores is not None:
        kept = _BestValidationScores(len(rows.validation[1]), max(classes, 1))
        callbacks.append(kept)
    booster = lgb.train(params, train, num_boost_round=wrapper.n_estimators,
                        valid_sets=[validation] if stopping else None, callbacks=callbacks)
    scores = None if kept is None else kept.of(booster)
    if scores is not None:
        on_validation_scores(scores)  # type: ignore[misc]  # set whenever `kept` is
    return booster


class _BestValidationScores:
    """A LightGBM callback keeping the validation rows' scores as of the best round so far:
    LightGBM updates them tree by tree to compute the loss it stops on, and reading them
    (on rounds that beat the best) costs less than half of predicting those rows again with
    the kept rounds (35 ms against 80 ms for 243 rounds on the flights table's 11,678
    validation rows); they equal that prediction bit for bit (tested). The best round is
    the early-stopping callback's: the first round, then every round whose first metric is
    strictly better."""

    order = 20  # before lightgbm's early stopping (order 30) ends training in its round

    def __init__(self, rows: int, classes: int) -> None:
        self.rows, self.classes = rows, classes
        self.best_round = -1
        self.best_loss = math.inf
        self.scores = np.empty(rows * classes, dtype=np.float64)

    def __call__(self, env: Any) -> None:
        import ctypes

        from lightgbm.basic import _LIB, _safe_call

        first = env.evaluation_result_list[0]
        loss = -first.metric_value if first.maximize else first.metric_value
        if self.best_round >= 0 and not loss < self.best_loss:
            return
        self.best_round, self.best_loss = env.iteration, loss
        written = ctypes.c_int64(0)
        # LGBM_BoosterGetPredict (public C API): data index 1 is the first validation set.
        _safe_call(_LIB.LGBM_BoosterGetPredict(
            env.model._handle, ctypes.c_int(1), ctypes.byref(written),
            self.scores.ctypes.data_as(ctypes.POINTER(ctypes.c_double))))

    def of(self, booster: Any) -> np.ndarray | None:
        """The fitted booster's validation scores, or None when it kept other rounds than
        the best (stopped by the deadline after a worse round)."""
        if self.best_round + 1 != booster.best_iteration:
            return None
        if self.classes == 1:
            return self.scores
        return np.ascontiguousarray(self.scores.reshape(self.rows, self.classes, order="F"))


def _fit_hgb(estimator: Any, X: np.ndarray, y: np.ndarray,
             validation: tuple[np.ndarray, np.ndarray] | None, deadline: Deadline | None,
             binned: BinnedRows | None,
             on_validation_scores: Callable[[np.ndarray], None] | None = None) -> None:
    """HistGradientBoosting has no callbacks. Some of its methods are replaced on the
    instance for the fit: `_bin_data`, to reuse `binned`'s bins of the same rows; the
    early-stopping check it makes after every iteration (`_should_stop`, given the
    validation scores so far), to also stop once the deadline has passed; and the loss
    check before it (`_check_early_stopping_loss`), which is handed the validation rows' raw
    predictions, updated in place tree by tree: after the fit they are the model's (it keeps
    every tree), and the trial need not predict those rows again (60-140 ms a trial).

    Growing the model in warm-started chunks instead costs a quarter more: every chunk bins
    the data again and predicts the trees so far. The overrides live on the instance only
    for the fit, so the fitted model is a plain scikit-learn estimator (it pickles, skops
    saves it).
    """
    overrides: dict[str, Callable] = {}
    if binned is not None:
        overrides["_bin_data"] = binned.hgb_bin_data(estimator)
    if validation is not None and deadline is not None:
        library_check = estimator._should_stop
        overrides["_should_stop"] = (
            lambda scores: library_check(scores) or deadline.passed())
    raw_validation: list[np.ndarray] = []
    if validation is not None and on_validation_scores is not None:
        library_loss = estimator._check_early_stopping_loss

        def keep_raw_predictions(**arguments: Any) -> bool:
            raw_validation[:] = [arguments["raw_predictions_val"]]
            return library_loss(**arguments)

        overrides["_check_early_stopping_loss"] = keep_raw_predictions
    vars(estimator).update(overrides)
    try:
        if validation is None:
            estimator.fit(X, y)
        else:
            estimator.fit(X, y, X_val=validation[0], y_val=validation[1])
    finally:
        for name in overrides:
            delattr(estimator, name)
    if raw_validation:
        on_validation_scores(_hgb_scores(estimator, raw_validation[0]))  # type: ignore[misc]


def _hgb_scores(estimator: Any, raw: np.ndarray) -> np.ndarray:
    """What `predictors.estimator_scores` gives from HistGradientBoosting's raw predictions:
    the positive class's probability, every class's, or the prediction."""
    if not hasattr(estimator, "classes_"):
        return np.asarray(estimator._loss.link.inverse(raw.ravel()), dtype=np.float64)
    probabilities = np.asarray(estimator._loss.predict_proba(raw), dtype=np.float64)
    return probabilities[:, 1] if len(estimator.classes_) == 2 else probabilities


def _fit_forest_until(pipeline: Pipeline, X: np.ndarray, y: np.ndarray,
                      deadline: Deadline) -> None:
    """A forest has no rounds to stop: grow its trees in warm-started chunks until all are
    grown or the deadline passes (at least one chunk). With an integer `random_state` the
    trees are the very ones a single fit grows: scikit-learn draws the seeds of the trees
    it adds after those of the trees it has."""
    forest = pipeline.named_steps["model"]
    total = forest.n_estimators
    pipeline.set_params(model__warm_start=True, model__n_estimators=min(total, FOREST_CHUNK))
    while True:
        pipeline.fit(X, y)
        if forest.n_estimators >= total or deadline.passed():
            break
        pipeline.set_params(model__n_estimators=min(total, forest.n_estimators + FOREST_CHUNK))
    pipeline.set_params(model__warm_start=False)


def _xgboost_deadline(deadline: Deadline) -> Any:
    import xgboost as xgb

    class StopAtDeadline(xgb.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            return deadline.passed()  # True stops training

    return StopAtDeadline()


def _lightgbm_deadline(deadline: Deadline) -> Any:
    import lightgbm as lgb

    def stop_at_deadline(env: Any) -> None:
        if deadline.passed():
            raise lgb.callback.EarlyStopException(env.iteration, env.evaluation_result_list)

    stop_at_deadline.order = 40  # after lightgbm's own early stopping (order 30)
    return stop_at_deadline


def refit_trial(trial: Trial, rounds: int | None) -> Trial:
    """The same trial with its boosting rounds fixed to those early stopping kept: what is
    refitted on the training and validation rows together, with nothing left to stop on."""
    if rounds is None:
        return trial
    key = "max_iter" if trial.family == "hist_gradient_boosting" else "n_estimators"
    return Trial(trial.number, trial.family, {**trial.params, key: rounds}, trial.seed)


def fitted_rounds(estimator: Any, family: str) -> int | None:
    """Boosting rounds the fitted model keeps (chosen by early stopping), else None."""
    if family == XGBOOST:
        best = getattr(estimator, "best_iteration", None)
        return int(best) + 1 if best is not None else estimator.num_boosted_rounds()
    if family == LIGHTGBM:
        return int(estimator.best_iteration or estimator.current_iteration())
    if family == "hist_gradient_boosting":
        return int(estimator.n_iter_)
    return None


def native_model(estimator: Any, family: str) -> Any:
    """What gets saved and served: the fitted estimator; for XGBoost, its booster cut at the
    best round (it would otherwise predict with every round it fitted; LightGBM's training
    call cuts its own)."""
    if family == XGBOOST:
        best = getattr(estimator, "best_iteration", None)
        return estimator[: best + 1] if best is not None else estimator
    return estimator


def feature_importance(estimator: Any, family: str, n_features: int) -> np.ndarray:
    """A per-input-column importance, whatever the family (absolute coefficients for linear).

    `estimator` is what `native_model` returns: boosters report their gain per feature.
    """
    if family == XGBOOST:
        gains = estimator.get_score(importance_type="gain")
        return np.array([gains.get(f"f{i}", 0.0) for i in range(n_features)])
    if family == LIGHTGBM:
        return np.asarray(estimator.feature_importance(importance_type="gain"),
                          dtype=float)[:n_features]
    model = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    if hasattr(model, "feature_importances_"):
        return np.asarray(model.feature_importances_, dtype=float)[:n_features]
    if isinstance(estimator, Pipeline) and hasattr(model, "coef_"):
        return _linear_importance(estimator, model, n_features)
    return np.zeros(n_features)


def _linear_importance(estimator: Pipeline, model: Any, n_features: int) -> np.ndarray:
    pre: ColumnTransformer = estimator.named_steps["preprocess"]
    coef = np.abs(np.atleast_2d(model.coef_)).sum(axis=0)  # summed over classes
    out = np.zeros(n_features)
    start = 0
    for _, transformer, idx in pre.transformers_:
        if transformer == "drop" or not len(idx):
            continue
        width = (
            sum(len(c) for c in transformer.categories_)
            if isinstance(transformer, OneHotEncoder) else len(idx)
        )
        chunk = coef[start:start + width]
        if isinstance(transformer, OneHotEncoder):
            pos = 0
            for col, cats in zip(idx, transformer.categories_, strict=True):
                out[col] = chunk[pos:pos + len(cats)].sum()
                pos += len(cats)
        else:
            out[list(idx)] = chunk
        start += width
    return out
