"""Fast predictors give the logged estimator's scores, for every family and task.

Each family is fitted on one mixed table (numeric columns with missing values, categorical
columns with a missing level, a boolean) for each task, then scored by the fast path and by
the plain estimator on rows with missing values, unseen categories (NaN after encoding) and
out-of-vocabulary codes, one row and large batches. Tree ensembles must match exactly (they
add the same leaf values in the same order); linear models up to float rounding (a dense dot
product instead of scikit-learn's sparse one).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctloop import predictors
from ctloop.candidates import FAMILIES, Trial, fit_estimator, native_model
from ctloop.features import FeatureEncoder
from ctloop.model import TabularModel, _load_pyfunc
from ctloop.tasks import BinaryTask, MulticlassTask, RegressionTask

FAST_FAMILIES = [f for f in FAMILIES if f != "lightgbm"]  # LightGBM's own predict is fast
TASKS = ["binary", "multiclass", "regression"]
PARAMS = {"xgboost": {"n_estimators": 20, "max_depth": 3},
          "lightgbm": {"n_estimators": 20, "num_leaves": 7},
          "linear": {"C": 1.0},
          "hist_gradient_boosting": {"max_iter": 30, "max_leaf_nodes": 15},
          "random_forest": {"n_estimators": 25, "min_samples_leaf": 2}}
COLUMNS = ["x1", "x2", "x3", "city", "plan", "flag"]
KINDS = {"x1": "numeric", "x2": "numeric", "x3": "numeric", "city": "categorical",
         "plan": "categorical", "flag": "boolean"}


def make_table(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cities = np.array([f"city{i}" for i in range(12)])
    city = rng.choice(cities, rows)
    effect = {c: rng.normal(0, 1.5) for c in cities}
    frame = pd.DataFrame({
        "x1": rng.normal(0, 1, rows),
        "x2": rng.exponential(20, rows).round(1),
        "x3": rng.integers(0, 10, rows).astype(float),
        "city": city,
        "plan": rng.choice(["basic", "plus", "pro"], rows),
        "flag": rng.random(rows) < 0.3,
    })
    signal = (frame["x1"] + 0.03 * frame["x2"] + np.vectorize(effect.get)(city)
              + 0.8 * (frame["plan"] == "pro") - 0.5 * frame["flag"] + rng.normal(0, 1, rows))
    frame["y_regression"] = 10 * signal
    frame["y_multiclass"] = np.digitize(signal, np.quantile(signal, [0.33, 0.66]))
    frame["y_binary"] = (signal > np.median(signal)).astype(int)
    frame.loc[rng.random(rows) < 0.08, "x1"] = np.nan
    frame.loc[rng.random(rows) < 0.08, "x2"] = np.nan
    frame.loc[rng.random(rows) < 0.05, "city"] = None
    return frame


TASK_OBJECTS = {"binary": BinaryTask(1, 0, 0.5), "multiclass": MulticlassTask((0, 1, 2)),
                "regression": RegressionTask()}


@pytest.fixture(scope="module")
def table():
    train = make_table(1500, seed=0)
    encoder = FeatureEncoder.fit(train, COLUMNS, KINDS)
    return train, encoder, encoder.encode_frame(train)


@pytest.fixture(scope="module")
def fitted(table):
    train, encoder, X = table
    models = {}
    for task in TASKS:
        y = train[f"y_{task}"].to_numpy()
        for family in FAMILIES:
            estimator = fit_estimator(Trial(0, family, dict(PARAMS[family]), 1), task, X, y,
                                      encoder.categorical_indices)  # fmt: skip
            estimator = native_model(estimator, family)
            models[family, task] = TabularModel(encoder, estimator, family, TASK_OBJECTS[task])
    return models


def scoring_rows(encoder: FeatureEncoder, rows: int, seed: int) -> np.ndarray:
    """Fresh rows with missing values everywhere and unseen categories (NaN codes)."""
    frame = make_table(rows, seed)
    rng = np.random.default_rng(seed)
    frame.loc[rng.random(rows) < 0.1, "city"] = "never-seen-city"
    frame.loc[rng.random(rows) < 0.1, "plan"] = None
    frame.loc[rng.random(rows) < 0.05, "x3"] = np.nan
    X = encoder.encode_frame(frame)
    X[0] = np.nan  # a row with nothing known
    return X


def odd_codes(encoder: FeatureEncoder, X: np.ndarray) -> np.ndarray:
    """Codes no encoder emits (past the vocabulary, negative, fractional): the estimator
    treats them as unknown categories, and so must the fast path."""
    X = X.copy()
    for j, bad in zip(encoder.categorical_indices, (99.0, -1.0), strict=False):
        X[::3, j] = bad
    X[1::5, encoder.categorical_indices[0]] = 2.5
    return X


def assert_same(family: str, got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == np.float64 and got.shape == expected.shape
    if family == "linear":
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    else:
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAST_FAMILIES)
def test_fast_path_equals_the_estimator(fitted, table, family, task):
    model = fitted[family, task]
    assert model.fast is not None, "no fast predictor was built"
    encoder = table[1]
    X = scoring_rows(encoder, 600, seed=7)
    assert np.isnan(X[:, encoder.categorical_indices]).any()  # unseen categories present
    batches = (X[:1], X[1:2], X[:5], X[:predictors.TREE_MAX_ROWS], X, odd_codes(encoder, X),
               X[:7].astype(np.float64))  # float64 input: the pipeline then works in float64
    for batch in batches:
        expected = predictors.estimator_scores(model.estimator, model.task, batch)
        assert_same(family, model.fast(batch), expected)  # the fast path at every size
        assert_same(family, model.scores_encoded(batch), expected)  # whichever path serves


def test_hgb_fast_path_covers_categorical_splits(fitted):
    for task in TASKS:
        fast = fitted["hist_gradient_boosting", task].fast
        assert fast.split_col.size > 0  # the fixture's city effect is learnt as category sets


def test_large_tree_batches_go_to_the_estimator(fitted, table):
    fast = fitted["random_forest", "binary"].fast
    X = scoring_rows(table[1], predictors.TREE_MAX_ROWS + 1, seed=3)
    assert fast.accepts(X[:1]) and fast.accepts(X[:-1]) and not fast.accepts(X)
    assert fitted["linear", "binary"].fast.accepts(X)  # linear is fast at every size


def test_lightgbm_keeps_its_own_predict(fitted, table):
    X = scoring_rows(table[1], 5, seed=1)
    lgb = fitted["lightgbm", "binary"]
    assert lgb.fast is None
    np.testing.assert_array_equal(lgb.scores_encoded(X), lgb.estimator.predict(X))


@pytest.mark.parametrize("task", TASKS)
def test_xgboost_fast_path_equals_an_early_stopped_deep_booster(table, task):
    """Deeper trees, several hundred rounds cut at the best one, odd inputs: still exact."""
    train, encoder, X = table
    y = train[f"y_{task}"].to_numpy()
    params = {"max_depth": 8, "learning_rate": 0.05, "min_child_weight": 0.5}
    fitted = fit_estimator(Trial(0, "xgboost", params, 3), task, X[:1000], y[:1000],
                           encoder.categorical_indices, validation=(X[1000:], y[1000:]))
    model = TabularModel(encoder, native_model(fitted, "xgboost"), "xgboost",
                         TASK_OBJECTS[task])
    assert model.fast is not None and model.fast.n_trees > 20
    rows = scoring_rows(encoder, predictors.TREE_MAX_ROWS, seed=5)
    rows[2:9] *= np.float32(1e-3)  # values near the split points' float32 neighbours
    np.testing.assert_array_equal(model.fast(rows), predictors.estimator_scores(
        model.estimator, model.task, rows))


def test_xgboost_objectives_without_a_fast_path_fall_back(table):
    import xgboost as xgb

    train, encoder, X = table
    booster = xgb.train({"objective": "binary:logitraw", "max_depth": 3, "nthread": 1},
                        xgb.DMatrix(X, label=train["y_binary"]), num_boost_round=5)
    model = TabularModel(encoder, booster, "xgboost", TASK_OBJECTS["binary"])
    assert model.fast is None
    rows = scoring_rows(encoder, 4, seed=2)
    np.testing.assert_array_equal(model.scores_encoded(rows), booster.inplace_predict(rows))


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_pyfunc_round_trip_uses_the_fast_path(fitted, table, family, task, tmp_path):
    model = fitted[family, task]
    model.save(tmp_path / "m")
    loaded = _load_pyfunc(str(tmp_path / "m"))
    assert (loaded.fast is None) == (family == "lightgbm")
    raw = make_table(40, seed=11)[COLUMNS]
    raw.loc[0, "city"] = "never-seen-city"
    raw.loc[1, "x1"] = np.nan
    out = loaded.predict(raw)
    X = loaded.encode(raw)
    if family == "xgboost":
        expected = np.asarray(model.estimator.inplace_predict(X), dtype=np.float64)
    elif family == "lightgbm":
        expected = np.asarray(model.estimator.predict(X), dtype=np.float64)
    else:
        expected = predictors.estimator_scores(model.estimator, model.task, X)
    reference = model.task.output_frame(expected)
    assert list(out.columns) == list(reference.columns)
    for column in out.columns:
        if out[column].dtype == object:
            assert (out[column] == reference[column]).all()
        else:
            np.testing.assert_allclose(out[column], reference[column], rtol=1e-12, atol=1e-12)
    for rows in (raw.head(1), raw.head(1).astype(object)):  # a single row, as served
        np.testing.assert_allclose(loaded.scores(rows), expected[:1], rtol=1e-12, atol=1e-12)


def test_unrecognised_estimators_fall_back(fitted, table):
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    inner = clone(fitted["linear", "binary"].estimator)
    wrapped = make_pipeline(FunctionTransformer(), inner).fit(table[2], table[0]["y_binary"])
    model = TabularModel(table[1], wrapped, "linear", TASK_OBJECTS["binary"])
    assert model.fast is None
    X = scoring_rows(table[1], 3, seed=2)
    np.testing.assert_array_equal(model.scores_encoded(X), wrapped.predict_proba(X)[:, 1])


def test_a_disagreeing_predictor_is_not_used(fitted, monkeypatch, caplog):
    model = fitted["random_forest", "regression"]

    class Wrong(predictors.Predictor):
        def __call__(self, X):
            return np.zeros(X.shape[0])

    monkeypatch.setattr(predictors, "_build", lambda estimator, task: Wrong())
    assert predictors.build(model.estimator, "random_forest", model.task) is None
    assert "disagrees with the estimator" in caplog.text


ONE_KIND = [
    pytest.param(family, columns, id=f"{family}-{name}")
    for family in FAST_FAMILIES
    for name, columns in (("only-numeric", ["x1", "x2", "x3"]),
                          ("only-categorical", ["city", "plan"]))
]


@pytest.mark.parametrize(("family", "columns"), ONE_KIND)
def test_tables_with_one_kind_of_column_get_a_fast_path_too(family, columns):
    """A table with no text column (or no number) leaves one of the pipeline's transformers
    without columns; the fast path must still be built and agree."""
    train = make_table(800, seed=3)
    encoder = FeatureEncoder.fit(train, columns, {c: KINDS[c] for c in columns})
    X = encoder.encode_frame(train)
    estimator = fit_estimator(Trial(0, family, dict(PARAMS[family]), 1), "multiclass", X,
                              train["y_multiclass"].to_numpy(), encoder.categorical_indices)
    model = TabularModel(encoder, native_model(estimator, family), family,
                         TASK_OBJECTS["multiclass"])
    assert model.fast is not None, "no fast predictor was built"
    rows = encoder.encode_frame(make_table(50, seed=4))
    assert_same(family, model.fast(rows), predictors.estimator_scores(
        model.estimator, model.task, rows))
