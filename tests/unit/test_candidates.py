"""Trials are drawn reproducibly from the config's search spaces."""

import pytest

from ctloop.candidates import sample_trials
from ctloop.config import CandidateConfig


def test_same_seed_same_trials_and_spaces_are_respected():
    space = {"xgboost": CandidateConfig(trials=5, search={
        "max_depth": {"low": 3, "high": 6, "int": True},
        "learning_rate": {"low": 0.01, "high": 0.3, "log": True},
        "booster": ["gbtree"]}, fixed={"n_estimators": 20})}
    first, again = sample_trials(space, 7), sample_trials(space, 7)
    assert first == again and len(first) == 5
    assert first != sample_trials(space, 8)
    for trial in first:
        assert 3 <= trial.params["max_depth"] <= 6 and isinstance(trial.params["max_depth"], int)
        assert 0.01 <= trial.params["learning_rate"] <= 0.3
        assert trial.params["n_estimators"] == 20 and trial.params["booster"] == "gbtree"
    assert [t.name for t in first] == [f"xgboost-{i:02d}" for i in range(5)]


def test_an_empty_range_is_rejected():
    with pytest.raises(ValueError, match="'C': low must be below high"):
        sample_trials({"logistic_regression": CandidateConfig(
            trials=1, search={"C": {"low": 1, "high": 1}})}, 0)
