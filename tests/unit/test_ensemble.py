"""Greedy ensemble selection: when an average of trials is kept, and with which weights."""

from __future__ import annotations

import numpy as np

from ctloop.ensemble import select


def _mse(truth: np.ndarray):
    return lambda prediction: float(np.mean((prediction - truth) ** 2))


def test_two_trials_with_independent_errors_are_averaged_equally():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=5_000)
    first, second = truth + rng.normal(size=5_000), truth + rng.normal(size=5_000)
    chosen = select([first, second], _mse(truth))
    assert chosen is not None
    assert set(chosen.weights) == {0, 1} and abs(chosen.weights[0] - 0.5) <= 0.1
    assert sum(chosen.weights.values()) == 1.0
    assert chosen.loss < 0.6 * _mse(truth)(first)  # averaging halves independent noise


def test_a_trial_that_only_adds_noise_is_left_out():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=5_000)
    good = truth + 0.1 * rng.normal(size=5_000)
    chosen = select([good, truth + 3.0 * rng.normal(size=5_000), -good], _mse(truth))
    assert chosen is None  # nothing beats the best trial alone


def test_the_weights_follow_the_trials_quality():
    rng = np.random.default_rng(2)
    truth = rng.normal(size=5_000)
    sharp, blurred = truth + 0.5 * rng.normal(size=5_000), truth + 1.5 * rng.normal(size=5_000)
    chosen = select([sharp, blurred], _mse(truth))
    assert chosen is not None and chosen.weights[0] > 0.7 > chosen.weights[1] > 0


def test_undefined_scores_never_join_and_one_trial_is_no_ensemble():
    truth = np.arange(100.0)
    assert select([truth + 1.0], _mse(truth)) is None
    chosen = select([truth + 1.0, np.full(100, np.nan), truth - 1.0], _mse(truth))
    assert chosen is not None and set(chosen.weights) == {0, 2}
    assert chosen.loss == 0.0
