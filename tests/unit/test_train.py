"""Which fitted models a search holds on to while it runs."""

from __future__ import annotations

import numpy as np

from ctloop import tracking
from ctloop.candidates import Trial
from ctloop.tasks.binary import BinaryTask
from ctloop.train import TrialResult, _Finished, _forget_models


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
