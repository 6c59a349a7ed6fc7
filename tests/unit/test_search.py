"""The search: seeded, inside the spaces, every family tried first at its defaults, caps
respected, and the same trials whatever order parallel trials finish in."""

import random

import pytest

from ctloop.candidates import DEFAULT_POINTS
from ctloop.config import CandidateConfig, ConfigError, TrainingConfig
from ctloop.search import FOREST_LAG, Search

SPACES = {
    "xgboost": CandidateConfig(trials=6, search={
        "max_depth": {"low": 3, "high": 6, "int": True},
        "learning_rate": {"low": 0.01, "high": 0.3, "log": True},
        "booster": ["gbtree"]}, fixed={"n_estimators": 20}),
    "linear": CandidateConfig(trials=2, search={"C": {"low": 0.01, "high": 10, "log": True}}),
    "lightgbm": CandidateConfig(trials=6, search={
        "num_leaves": {"low": 8, "high": 64, "int": True, "log": True},
        "subsample": [0.8, 1.0]}),
}


def _value(trial) -> float:
    """A made-up metric that prefers lightgbm with many leaves."""
    if trial.family == "lightgbm":
        return 0.8 + trial.params["num_leaves"] / 1000
    return {"xgboost": 0.75, "linear": 0.7, "random_forest": 0.72}[trial.family]


def _run(seed: int, workers: int, finish_order_seed: int | None = None, trials: int = 14,
         spaces=SPACES):
    """Drive a search as the trainer does: `workers` trials in flight, finishing in a
    shuffled order."""
    search = Search(spaces, seed=seed, max_trials=trials, minimize=False, lag=2 * workers)
    shuffle = random.Random(finish_order_seed)
    running, done = [], []
    while True:
        while len(running) < workers and not search.exhausted and search.can_ask():
            running.append(search.ask())
        if not running:
            return done
        trial = running.pop(shuffle.randrange(len(running)) if finish_order_seed else 0)
        search.finished(trial, _value(trial))
        done.append(trial)


def test_same_seed_same_trials_whatever_order_they_finish_in():
    first = sorted(_run(7, workers=2, finish_order_seed=1), key=lambda t: t.number)
    again = sorted(_run(7, workers=2, finish_order_seed=99), key=lambda t: t.number)
    assert first == again and len(first) == 14
    assert first != sorted(_run(8, workers=2, finish_order_seed=1), key=lambda t: t.number)


WITH_FOREST = {**{f: c.model_copy(update={"trials": 10}) for f, c in SPACES.items()},
               "random_forest": CandidateConfig(trials=2, search={"max_features": [0.5, 1.0]})}


def test_a_running_forest_holds_up_the_search_only_much_later():
    """A forest trial (no early stopping: it takes several boosting trials' time) is waited
    for `FOREST_LAG` times `lag` trials after a booster would be."""
    search = Search(WITH_FOREST, seed=0, max_trials=40, minimize=False, lag=4)
    asked = []
    while search.can_ask():
        trial = search.ask()
        asked.append(trial)
        if trial.family != "random_forest":  # the forests are still running
            search.finished(trial, _value(trial))
    forest = next(t for t in asked if t.family == "random_forest")
    assert forest.number == 3  # its defaults, after the other families'
    assert len(asked) == forest.number + 4 * (1 + FOREST_LAG) + 1
    search.finished(forest, _value(forest))
    assert search.can_ask()


def test_with_forests_too_the_same_seed_gives_the_same_trials_whatever_finishes_first():
    first = sorted(_run(5, 2, finish_order_seed=1, trials=30, spaces=WITH_FOREST),
                   key=lambda t: t.number)
    again = sorted(_run(5, 2, finish_order_seed=42, trials=30, spaces=WITH_FOREST),
                   key=lambda t: t.number)
    assert first == again and len(first) == 30
    assert {t.family for t in first} == set(WITH_FOREST)


def test_trials_stay_in_their_space_and_families_within_their_caps():
    trials = _run(3, workers=2, trials=100)
    assert len(trials) == 14  # 6 + 2 + 6: every family's cap reached
    families = [t.family for t in trials]
    assert families.count("linear") == 2 and families.count("xgboost") == 6
    for trial in trials:
        if trial.family == "xgboost":
            assert 3 <= trial.params["max_depth"] <= 6
            assert isinstance(trial.params["max_depth"], int)
            assert 0.01 <= trial.params["learning_rate"] <= 0.3
            assert trial.params["n_estimators"] == 20 and trial.params["booster"] == "gbtree"
        elif trial.family == "lightgbm":
            assert 8 <= trial.params["num_leaves"] <= 64
            assert trial.params["subsample"] in (0.8, 1.0)
    assert [t.name for t in sorted(trials, key=lambda t: t.number)][:3] == [
        "xgboost-00", "linear-01", "lightgbm-02"]


def test_each_family_starts_at_its_library_defaults():
    trials = {t.family: t for t in _run(0, workers=1, trials=3)}
    assert trials["xgboost"].params["max_depth"] == DEFAULT_POINTS["xgboost"]["max_depth"]
    assert trials["linear"].params["C"] == 1.0
    assert trials["lightgbm"].params["num_leaves"] == 31


def test_the_search_spends_trials_on_the_family_that_wins():
    spaces = {f: c.model_copy(update={"trials": 30}) for f, c in SPACES.items()}
    search = Search(spaces, seed=0, max_trials=30, minimize=False, lag=0)
    families = []
    for _ in range(30):
        assert search.can_ask()
        trial = search.ask()
        search.finished(trial, _value(trial))
        families.append(trial.family)
    assert families[15:].count("lightgbm") >= 10  # after the random start, mostly the winner


def test_the_trial_cap_is_the_smaller_of_the_total_and_the_families():
    assert Search(SPACES, seed=0, max_trials=5, minimize=True, lag=0).max_trials == 5
    assert Search(SPACES, seed=0, max_trials=50, minimize=True, lag=0).max_trials == 14


@pytest.mark.parametrize(("spec", "message"), [
    ({"low": 1, "high": 1}, "'C': low must be below high"),
    ({"low": 0, "high": 1, "log": True}, "'C': a log range needs low > 0"),
    ([], "'C': an empty list"),
])
def test_a_bad_space_is_rejected_naming_the_parameter(spec, message, tmp_path):
    from ctloop.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("name: a\ndata: {source: x.csv}\ntraining:\n  candidates:\n"
                    f"    linear: {{trials: 1, search: {{C: {spec!r}}}}}\n".replace("'", ""))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_defaults_search_every_default_family_under_a_time_budget():
    cfg = TrainingConfig()
    assert cfg.time_budget and cfg.trials >= 20
    assert {"lightgbm", "xgboost", "linear", "hist_gradient_boosting"} <= set(cfg.candidates)
