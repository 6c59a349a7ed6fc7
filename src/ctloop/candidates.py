"""Model families, their search spaces, and how one trial is fitted.

Trials are drawn with scikit-learn's `ParameterSampler` (seeded) from the config's spaces,
so the same config and seed always yield the same trials, whatever machine runs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import ParameterSampler
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ctloop.config import KNOWN_FAMILIES, CandidateConfig

XGBOOST = "xgboost"
FAMILIES = KNOWN_FAMILIES
HGB_MAX_CATEGORIES = 254  # HistGradientBoosting bins categories into at most 255 bins


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


def _distribution(name: str, spec: Any) -> Any:
    if isinstance(spec, list | tuple):
        return list(spec)
    if isinstance(spec, Mapping) and {"low", "high"} <= set(spec):
        low, high = spec["low"], spec["high"]
        if low >= high:
            raise ValueError(f"search space '{name}': low must be below high")
        if spec.get("int"):
            return stats.randint(int(low), int(high) + 1)
        if spec.get("log"):
            return stats.loguniform(low, high)
        return stats.uniform(low, high - low)
    return [spec]


def sample_trials(candidates: Mapping[str, CandidateConfig], seed: int) -> list[Trial]:
    """Every trial of every family, numbered in a fixed order."""
    trials: list[Trial] = []
    for offset, (family, cfg) in enumerate(sorted(candidates.items())):
        if cfg.trials == 0:
            continue
        space = {k: _distribution(k, v) for k, v in cfg.search.items()} or {"_": [None]}
        sampler = ParameterSampler(space, n_iter=cfg.trials, random_state=seed + offset)
        for params in sampler:
            params.pop("_", None)
            clean = {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}
            trials.append(Trial(len(trials), family, {**cfg.fixed, **clean}, seed))
    return trials


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
                    n_features: int) -> Any:
    """An unfitted estimator for the encoded float matrix (categories as codes, NaN missing)."""
    params = dict(trial.params)
    numeric_indices = [i for i in range(n_features) if i not in set(categorical_indices)]
    regression = kind == "regression"
    if trial.family == "xgboost":
        import xgboost as xgb

        cls = xgb.XGBRegressor if regression else xgb.XGBClassifier
        return cls(**{"tree_method": "hist", "n_jobs": 1, "random_state": trial.seed, **params})
    if trial.family == "linear":
        return _linear(kind, params, categorical_indices, numeric_indices)
    if trial.family == "hist_gradient_boosting":
        mask = np.zeros(n_features, dtype=bool)
        mask[categorical_indices] = True
        cls = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
        return cls(**{"categorical_features": mask, "random_state": trial.seed, **params})
    if trial.family == "random_forest":
        cls = RandomForestRegressor if regression else RandomForestClassifier
        forest = cls(**{"n_estimators": 200, "n_jobs": 1, "random_state": trial.seed, **params})
        return Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                         ("model", forest)])
    raise ValueError(f"unknown candidate family {trial.family!r}")


def fit_estimator(trial: Trial, kind: str, X: np.ndarray, y: np.ndarray,
                  categorical_indices: list[int]):
    """Fit one trial; categorical codes past HGB's bin limit are treated as numeric there."""
    if trial.family == "hist_gradient_boosting":
        categorical_indices = [
            i for i in categorical_indices if np.nanmax(X[:, i], initial=0) < HGB_MAX_CATEGORIES
        ]
    estimator = build_estimator(trial, kind, categorical_indices, X.shape[1])
    estimator.fit(X, y)
    return estimator


def feature_importance(estimator: Any, n_features: int) -> np.ndarray:
    """A per-input-column importance, whatever the family (absolute coefficients for linear)."""
    model = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    if hasattr(model, "feature_importances_"):
        return np.asarray(model.feature_importances_, dtype=float)[:n_features]
    if isinstance(estimator, Pipeline) and hasattr(model, "coef_"):
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
    return np.zeros(n_features)
