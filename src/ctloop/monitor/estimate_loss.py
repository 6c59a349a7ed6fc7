"""A regression champion's error on unlabelled rows, estimated by a model of its own loss.

Direct loss estimation (DLE), NannyML's method for regression
(https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html, "Direct
Loss Estimation"): a second model learns, on the champion's holdout (labelled rows it never
trained on), the champion's loss per row from the features and the champion's own prediction;
its mean prediction over a window estimates the champion's mean loss there (mae: the mean
absolute error; rmse: the square root of the mean squared error; mape: the mean absolute
percentage error). Like CBPE for classification (`estimate.py`) it holds under covariate
shift, when traffic moves to where the champion errs more (or less); a change of P(y | x)
needs labels.

Both sides come from the same loss models, cross-fitted: each holdout row is estimated by the
models that did not learn from it, each window row by all of them, so the holdout's estimate is
out-of-sample like the window's, and the comparison is not tilted by the loss model overfitting
its own rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection

import numpy as np

from ctloop.metrics import EPS

MIN_ROWS = 500  # holdout rows below which a loss model learns noise: no estimate
FOLDS = 3
CATEGORY_BINS = 254  # HistGradientBoosting bins at most 255 categories (one for missing)

# Per metric: the per-row loss the model learns, and how the window's mean loss reads as the
# metric.
_LOSSES: dict[str, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray],
                         Callable[[float], float]]] = {
    "mae": (lambda y, p: np.abs(p - y), lambda mean: mean),
    "rmse": (lambda y, p: (p - y) ** 2, lambda mean: math.sqrt(max(mean, 0.0))),
    "mape": (lambda y, p: np.abs(p - y) / np.maximum(np.abs(y), EPS), lambda mean: mean),
}


class LossEstimator:
    """Cross-fitted loss models of one champion, per estimated metric."""

    def __init__(self, models: dict[str, list], expected: dict[str, float]) -> None:
        self._models, self.expected = models, expected

    @classmethod
    def fit(cls, X: np.ndarray, predictions: np.ndarray, y: np.ndarray,
            categorical: Collection[int], metrics: Collection[str],
            seed: int = 0) -> LossEstimator | None:  # fmt: skip
        """Loss models for `metrics` (those DLE can estimate) on the holdout's encoded features,
        the champion's predictions there and the labels; None when there are too few rows or
        no metric to estimate. `expected`: the same estimate on the holdout itself."""
        wanted = [m for m in metrics if m in _LOSSES]
        if len(y) < MIN_ROWS or not wanted:
            return None
        inputs = _inputs(X, predictions)
        folds = np.random.default_rng(seed).permutation(len(y)) % FOLDS
        mask = _categorical_mask(inputs, categorical)
        y, predictions = np.asarray(y, np.float64), np.asarray(predictions, np.float64)
        models: dict[str, list] = {}
        expected: dict[str, float] = {}
        for metric in wanted:
            loss, read = _LOSSES[metric]
            target = loss(y, predictions)
            models[metric], out_of_fold = [], np.empty(len(y))
            for k in range(FOLDS):
                model = _loss_model(mask, seed, len(y)).fit(inputs[folds != k], target[folds != k])
                out_of_fold[folds == k] = model.predict(inputs[folds == k])
                models[metric].append(model)
            expected[metric] = read(float(np.mean(out_of_fold)))
        return cls(models, expected)

    def estimate(self, X: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        """The metrics expected on these rows, labels unknown."""
        inputs = _inputs(X, predictions)
        out = {}
        for metric, models in self._models.items():
            mean = float(np.mean([m.predict(inputs).mean() for m in models]))
            out[metric] = _LOSSES[metric][1](mean)
        return out


def _inputs(X: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """The champion's encoded features with its prediction as one more column: the loss
    depends on both (a large prediction often errs by more)."""
    return np.column_stack([np.asarray(X, dtype=np.float64),
                            np.asarray(predictions, dtype=np.float64)])


def _categorical_mask(inputs: np.ndarray, categorical: Collection[int]) -> np.ndarray:
    """Categorical codes as categories where HistGradientBoosting can bin them all."""
    mask = np.zeros(inputs.shape[1], dtype=bool)
    for i in categorical:
        mask[i] = np.nanmax(inputs[:, i], initial=0) < CATEGORY_BINS
    return mask


def _loss_model(categorical: np.ndarray, seed: int, rows: int):
    """Small trees with enough rows per leaf (0.5% of the holdout, at least 10, so that a
    segment a tenth of a 600-row holdout can still have leaves of its own): a loss is a noisy
    target (a squared error is heavy-tailed) and only its mean over a window is wanted.
    Trees do not extrapolate: traffic far beyond the holdout's range is estimated at the
    loss of the holdout's edge, so a shift there is seen, its size underestimated
    (tests/unit/monitor/test_estimate_loss.py)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(
        learning_rate=0.1, max_iter=300, max_leaf_nodes=15, min_samples_leaf=max(10, rows // 200),
        early_stopping=True, validation_fraction=0.2,
        n_iter_no_change=20, categorical_features=categorical, random_state=seed)
