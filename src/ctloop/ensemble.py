"""A weighted average of several trials, chosen greedily on their out-of-fold scores.

Why: trials of different families err on different rows, and on some tables their average
beats the best single trial by more than the whole search moved it (statsmodels' randhie:
r2 0.197 cross-validated for a forest and XGBoost averaged, 0.169 for either alone).
Cross-validated trials come with a score for every row from a model that never saw it, and
with a model fitted on all rows, so the ensemble costs no fit at all: only the selection (a
few hundred evaluations of the primary metric) and, when predicting, one model per member.

The selection is Caruana et al.'s "Ensemble selection from libraries of models" (ICML 2004),
the step AutoGluon and auto-sklearn end on: start from the best trial, add (with
replacement) whichever trial improves the average most, keep the best prefix. Weights are
how often a trial was added. Its cross-validated score is slightly optimistic (the weights
were chosen on those scores); `ctloop select` gates it on holdout rows it never saw.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

ENSEMBLE = "ensemble"  # the family name of an ensemble's trial, model and child run
ROUNDS = 25  # additions tried; the best prefix is kept
PER_FAMILY = 3  # the best trials of each family that may join (their models are kept)


@dataclass(frozen=True)
class Selection:
    """Which candidates (by index) and with what weight; weights sum to 1."""

    weights: dict[int, float]
    loss: float  # the objective of the weighted average (lower is better)


def select(candidates: Sequence[np.ndarray], loss: Callable[[np.ndarray], float],
           rounds: int = ROUNDS) -> Selection | None:
    """Greedy selection with replacement over candidate scores (all of the same shape, best
    candidate first: ties go to the earlier one). None unless an average of two or more
    candidates has a lower `loss` than the first candidate alone."""
    if len(candidates) < 2:
        return None
    counts: Counter[int] = Counter()
    total = np.zeros_like(np.asarray(candidates[0], dtype=np.float64))
    best: tuple[float, dict[int, int]] | None = None
    for size in range(1, rounds + 1):
        losses = [_finite(loss((total + s) / size)) for s in candidates]
        pick = int(np.argmin(losses))
        total += candidates[pick]
        counts[pick] += 1
        if best is None or losses[pick] < best[0]:
            best = (losses[pick], dict(counts))
    assert best is not None
    chosen_loss, chosen = best
    if len(chosen) < 2:
        return None
    size = sum(chosen.values())
    return Selection({k: n / size for k, n in sorted(chosen.items())}, chosen_loss)


def _finite(value: float) -> float:
    return value if np.isfinite(value) else float("inf")
