"""Each gate passes and fails on inputs where the right answer is known."""

import numpy as np
import pytest

from ctloop import select
from ctloop.candidates import Trial, fit_estimator
from ctloop.config import Config
from ctloop.features import FeatureEncoder
from ctloop.model import TabularModel
from ctloop.tasks import BinaryTask, RegressionTask
from tests.conftest import make_churn


def config(**gate) -> Config:
    return Config.model_validate({"name": "g", "data": {"source": "x.csv"},
                                  "gate": {"bootstrap_resamples": 200, **gate}})


@pytest.fixture(scope="module")
def churn_model():
    frame = make_churn(800)
    columns = ["tenure", "monthly_charges", "contract", "internet"]
    encoder = FeatureEncoder.fit(frame, columns, ["contract", "internet"])
    X, y = encoder.encode_frame(frame), (frame["churn"] == "Yes").to_numpy(int)
    estimator = fit_estimator(Trial(0, "linear", {}, 1), "binary", X, y,
                              encoder.categorical_indices)
    return TabularModel(encoder, estimator, "linear", BinaryTask("Yes", "No")), frame


BINARY = BinaryTask(1, 0)


def test_no_regression_passes_a_clearly_better_model_and_fails_an_equal_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 3000)
    strong = np.clip(0.5 * y + 0.5 * rng.random(3000), 0, 1)
    weak = np.clip(0.1 * y + 0.9 * rng.random(3000), 0, 1)
    cfg = config(min_delta=0.01)
    assert select._no_regression(cfg, BINARY, y, strong, weak).passed
    same = select._no_regression(cfg, BINARY, y, weak, weak)
    assert not same.passed and "needs >= +0.0100" in same.detail
    assert not select._no_regression(cfg, BINARY, y, weak, strong).passed


def test_no_regression_knows_lower_rmse_is_better():
    rng = np.random.default_rng(1)
    y = rng.normal(0, 1, 2000)
    close, far = y + rng.normal(0, 0.3, 2000), y + rng.normal(0, 1.0, 2000)
    cfg = Config.model_validate({"name": "g", "data": {"source": "x.csv"},
                                 "gate": {"bootstrap_resamples": 200}})
    better = select._no_regression(cfg, RegressionTask(), y, close, far)
    assert better.passed and better.evidence["metric"] == "rmse"
    assert "lower is better" in better.detail and better.evidence["improvement"] > 0.3
    assert not select._no_regression(cfg, RegressionTask(), y, far, close).passed


def test_guards_allow_small_losses_and_refuse_large_ones():
    cfg = config(guards={"log_loss": 0.02, "recall": 0.05})
    old = {"log_loss": 0.50, "recall": 0.60}
    assert select._guards(cfg, BINARY, {"log_loss": 0.51, "recall": 0.58}, old).passed
    failed = select._guards(cfg, BINARY, {"log_loss": 0.55, "recall": 0.50}, old)
    assert not failed.passed
    assert "log_loss worse by 0.0500" in failed.detail and "recall worse by 0.1000" in failed.detail
    with pytest.raises(select.SelectionError, match="'auc' is not a binary metric"):
        select._guards(config(guards={"auc": 0.1}), BINARY, {"log_loss": 1}, {"log_loss": 1})


def test_default_floors_and_guards_follow_the_task():
    cfg = config()
    assert select.gate_floors(cfg, RegressionTask()) == {"r2": 0.0}
    assert select.gate_guards(cfg, RegressionTask()) == {}
    assert select.gate_floors(cfg, BINARY) == {"roc_auc": 0.6}
    assert select.gate_guards(config(guards={}), BINARY) == {}


def test_invariance_detects_a_column_that_moves_predictions(churn_model):
    model, frame = churn_model
    strict = config(invariance=[{"column": "contract", "values": ["two-year"], "tolerance": 1e-6}])
    loose = config(invariance=[{"column": "contract", "values": ["two-year"], "tolerance": 1.0}])
    failed = select._invariance(strict, model, frame)
    assert not failed.passed and "contract='two-year' moves a prediction" in failed.detail
    assert select._invariance(loose, model, frame).passed
    with pytest.raises(select.SelectionError, match="'zip' is not a feature"):
        select._invariance(config(invariance=[{"column": "zip", "values": [1]}]), model, frame)


def test_signature_must_list_exactly_the_raw_columns_with_their_types(churn_model):
    model, _ = churn_model
    right = dict.fromkeys(["tenure", "monthly_charges", "contract", "internet"], "any")
    assert select._signature(right, model).passed
    # Older models typed their text categories `string`: still gated as right.
    assert select._signature({**right, "contract": "string", "internet": "string"}, model).passed
    wrong = {**right, "monthly_charges": "string", "extra": "any"}
    wrong.pop("tenure")
    gate = select._signature(wrong, model)
    assert not gate.passed and "['tenure']" in gate.detail and "['extra']" in gate.detail
    assert "wrong type ['monthly_charges']" in gate.detail


def test_latency_budget():
    assert select._latency(3.0, 20.0).passed
    assert not select._latency(25.0, 20.0).passed
