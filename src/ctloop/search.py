"""Which trial to run next: Optuna's TPE sampler across all families, seeded.

Why Optuna: it is MLflow's usual companion for tuning, and its ask-and-tell interface lets
ctloop keep its own worker pool (local processes or a Dask cluster), its own budget, and its
own MLflow logging. One study spans the families: the family is the first parameter, each
family's parameters are conditional on it (`multivariate=True, group=True` lets TPE model
them per family), so the search spends its trials on the family that is winning.

How a search starts: the first trial of every family uses the library's own defaults where
they lie in the search space (`candidates.DEFAULT_POINTS`); then TPE takes over (its first
`STARTUP_TRIALS` draws are seeded random ones).

Reproducibility with parallel workers: trial k is asked only after exactly the trials
0 .. k - lag - 1 have been told, whatever order they finished in (`lag` is twice the number
of workers, so a worker rarely waits), except that a random forest's result is needed only
`FOREST_LAG` times `lag` trials later still. A forest has no early stopping: its trial takes
as long as its trees, five to ten boosting trials' time on a 20,000-row table, and holding
up every trial after the next `lag` until it ends left a worker idle for a fifth of the
search. Which results the sampler has seen at each ask depends on the trial numbers and
their families only, so the sequence of trials depends on the seed, the config and the
number of workers, never on timing; a time budget only cuts that sequence short. Optuna's
own `n_jobs` gives no such guarantee.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from typing import Any

from ctloop.candidates import DEFAULT_POINTS, Trial
from ctloop.config import CandidateConfig

STARTUP_TRIALS = 10  # random draws before TPE models the results
FOREST_LAG = 3  # a forest's result is told this many times `lag` trials after a booster's
FAMILY = "family"


class Search:
    """Ask for the next trial, tell each finished trial's primary metric."""

    def __init__(self, candidates: Mapping[str, CandidateConfig], *, seed: int,
                 max_trials: int, minimize: bool, lag: int) -> None:
        import optuna

        optuna.logging.set_verbosity(logging.WARNING)
        self._candidates = {f: c for f, c in candidates.items() if c.trials > 0}
        self._families = list(self._candidates)
        self._max_trials = min(max_trials, sum(c.trials for c in self._candidates.values()))
        self._lag = max(0, lag)
        self._seed = seed
        with warnings.catch_warnings():  # multivariate/group are flagged experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=False,
                n_startup_trials=STARTUP_TRIALS)
        self._study = optuna.create_study(direction="minimize" if minimize else "maximize",
                                          sampler=sampler)
        for family in self._families:
            self._study.enqueue_trial({FAMILY: family, **_default_point(family, self._candidates[
                family])})
        self._asked: list[Trial] = []
        self._optuna_numbers: list[int] = []
        self._finished: dict[int, float] = {}
        self._untold: set[int] = set()  # asked, not yet told to the sampler
        self._per_family = dict.fromkeys(self._families, 0)

    @property
    def max_trials(self) -> int:
        """The trial cap: `training.trials`, or fewer when the families' caps add up to less."""
        return self._max_trials

    @property
    def exhausted(self) -> bool:
        """No trial is left to ask: the trial cap is reached, or every family's cap."""
        return len(self._asked) >= self._max_trials

    def can_ask(self) -> bool:
        """Whether the next trial's inputs are all known (the trials it must wait for are
        done), telling those results to the sampler in trial order."""
        needed = sorted(j for j in self._untold if j + self._wait(j) < len(self._asked))
        if any(j not in self._finished for j in needed):
            return False
        for j in needed:
            self._tell(j, self._finished.pop(j))
            self._untold.remove(j)
        return True

    def _wait(self, number: int) -> int:
        """How many trials later than itself trial `number`'s result is needed."""
        forest = self._asked[number].family == "random_forest"
        return self._lag * (1 + FOREST_LAG) if forest else self._lag

    def ask(self) -> Trial:
        """The next trial; call only when `can_ask()` and not `exhausted`."""
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            trial = self._study.ask()
            family = trial.suggest_categorical(FAMILY, self._families)
            if self._per_family[family] >= self._candidates[family].trials:
                # That family has had all its trials: spend this one on the next family
                # (in config order) that has some left.
                self._study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                family = self._next_open_family(family)
                self._study.enqueue_trial({FAMILY: family})
                trial = self._study.ask()
                trial.suggest_categorical(FAMILY, self._families)
            params = _suggest(trial, family, self._candidates[family])
        self._per_family[family] += 1
        chosen = Trial(len(self._asked), family, params, self._seed)
        self._asked.append(chosen)
        self._untold.add(chosen.number)
        self._optuna_numbers.append(trial.number)
        return chosen

    def finished(self, trial: Trial, value: float) -> None:
        """Record a finished trial; the sampler hears of it when `can_ask` reaches it."""
        self._finished[trial.number] = value

    def _tell(self, number: int, value: float) -> None:
        import optuna

        optuna_number = self._optuna_numbers[number]
        if math.isfinite(value):
            self._study.tell(optuna_number, value)
        else:  # e.g. roc_auc undefined on a degenerate split: no information for TPE
            self._study.tell(optuna_number, state=optuna.trial.TrialState.FAIL)

    def _next_open_family(self, full: str) -> str:
        start = self._families.index(full)
        for step in range(1, len(self._families) + 1):
            family = self._families[(start + step) % len(self._families)]
            if self._per_family[family] < self._candidates[family].trials:
                return family
        raise RuntimeError("no family has trials left")  # exhausted is checked before ask


def _suggest(trial: Any, family: str, cfg: CandidateConfig) -> dict[str, Any]:
    """This family's parameters for an Optuna trial; names are prefixed by the family so
    that one study can hold every family's space."""
    params: dict[str, Any] = {}
    for name, spec in cfg.search.items():
        key = f"{family}:{name}"
        if isinstance(spec, list | tuple):
            params[name] = spec[0] if len(spec) == 1 else trial.suggest_categorical(
                key, list(spec))
        elif isinstance(spec, Mapping):
            low, high, log = spec["low"], spec["high"], bool(spec.get("log"))
            if spec.get("int"):
                params[name] = trial.suggest_int(key, int(low), int(high), log=log)
            else:
                params[name] = trial.suggest_float(key, float(low), float(high), log=log)
        else:
            params[name] = spec
    return {**cfg.fixed, **params}


def _default_point(family: str, cfg: CandidateConfig) -> dict[str, Any]:
    """The library defaults that lie inside this family's search space, as Optuna params."""
    point = {}
    for name, value in DEFAULT_POINTS.get(family, {}).items():
        spec = cfg.search.get(name)
        if isinstance(spec, Mapping) and spec["low"] <= value <= spec["high"]:
            point[f"{family}:{name}"] = int(value) if spec.get("int") else float(value)
        elif isinstance(spec, list | tuple) and len(spec) > 1 and value in spec:
            point[f"{family}:{name}"] = value
    return point
