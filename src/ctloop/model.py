"""The deployable model: JSON encoder + estimator + threshold, saved without arbitrary pickle.

On disk (the pyfunc model's data folder):
  model.json    family, task (labels, threshold), file names (JSON)
  encoder.json  feature columns and category vocabularies     (JSON)
  booster.ubj   XGBoost's own format, for the xgboost family
  lightgbm.txt  LightGBM's own text format, for the lightgbm family
  estimator.skops   scikit-learn families, loaded with an explicit allowlist of types

MLflow loads it through `loader_module="ctloop.model"` (`_load_pyfunc`), so this module never
imports MLflow, and a single-row predict is one encode plus a few numpy calls on arrays built
at load time (ctloop.predictors), or one LightGBM booster call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctloop import predictors, tasks
from ctloop.config import FAMILY_ALIASES
from ctloop.features import FeatureEncoder
from ctloop.tasks import Task

MODEL_FILE = "model.json"
ENCODER_FILE = "encoder.json"
BOOSTER_FILE = "booster.ubj"
LIGHTGBM_FILE = "lightgbm.txt"
SKOPS_FILE = "estimator.skops"

# The only types a saved scikit-learn estimator may contain besides skops' defaults.
SKOPS_TRUSTED_TYPES = frozenset(
    {
        "sklearn.compose._column_transformer.ColumnTransformer",
        "sklearn.compose._column_transformer._RemainderColsList",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.Interval",
        "sklearn._loss._loss.CyHalfBinomialLoss",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.tree._classes.DecisionTreeClassifier",
        "sklearn.tree._tree.Tree",
        "sklearn.impute._base.SimpleImputer",
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._encoders.OneHotEncoder",
        "sklearn.utils.validation.check_array",
        "functools.partial",  # wraps check_array in HGB; skops checks the wrapped callable too
        "numpy.dtype",
        "builtins.slice",
        "builtins.float",
        "builtins.int",
        "builtins.bool",
    }
)


class ModelLoadError(RuntimeError):
    """A saved model that cannot be loaded safely (missing file, untrusted type)."""


@dataclass
class TabularModel:
    """Raw feature columns in, the task's output columns out."""

    encoder: FeatureEncoder
    estimator: Any  # xgboost.Booster, lightgbm.Booster or a fitted scikit-learn estimator
    family: str
    task: Task
    # False for a model only ever scored in bulk (a trial's validation rows, a fold): building
    # and checking the arrays costs more than it saves there.
    fast_path: bool = field(default=True, kw_only=True)
    # numpy arrays built from the estimator for small batches (ctloop.predictors), or None
    fast: predictors.Predictor | None = field(default=None, init=False, repr=False,
                                              compare=False)

    def __post_init__(self) -> None:
        if self.fast_path:
            self.fast = predictors.build(self.estimator, self.family, self.task)

    @property
    def feature_columns(self) -> tuple[str, ...]:
        return self.encoder.columns

    def scores_encoded(self, X: np.ndarray) -> np.ndarray:
        """Binary: positive-class probability; multiclass: n x k probabilities; regression:
        the prediction. Always float64."""
        if self.fast is not None and self.fast.accepts(X):
            return self.fast(X)
        if self.family == "lightgbm":
            return np.asarray(self.estimator.predict(X, num_threads=1), dtype=np.float64)
        return predictors.estimator_scores(self.estimator, self.task, X)

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        return self.encoder.encode_frame(frame)

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        return self.scores_encoded(self.encode(frame))

    def predict(self, model_input: Any, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """The pyfunc contract: a frame of raw columns in, the task's output frame out."""
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.task.output_frame(self.scores(frame))

    def input_example(self, frame: pd.DataFrame, rows: int = 3) -> pd.DataFrame:
        return frame[list(self.feature_columns)].head(rows).reset_index(drop=True)

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save(folder / ENCODER_FILE)
        if self.family == "xgboost":
            booster = getattr(self.estimator, "get_booster", lambda: self.estimator)()
            booster.save_model(str(folder / BOOSTER_FILE))
            estimator_file = BOOSTER_FILE
        elif self.family == "lightgbm":
            self.estimator.save_model(str(folder / LIGHTGBM_FILE))
            estimator_file = LIGHTGBM_FILE
        else:
            import skops.io

            skops.io.dump(self.estimator, folder / SKOPS_FILE)
            estimator_file = SKOPS_FILE
        meta = {
            "family": self.family,
            "task": self.task.to_json(),
            "estimator_file": estimator_file,
            "encoder_file": ENCODER_FILE,
        }
        (folder / MODEL_FILE).write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> TabularModel:
        folder = Path(folder)
        try:
            meta = json.loads((folder / MODEL_FILE).read_text())
            encoder = FeatureEncoder.load(folder / meta["encoder_file"])
            task = _task(meta)
        except (OSError, KeyError, ValueError) as exc:
            raise ModelLoadError(f"{folder}: not a ctloop model folder ({exc})") from None
        path = folder / meta["estimator_file"]
        if meta["family"] == "xgboost":
            import xgboost as xgb

            estimator = xgb.Booster()
            estimator.load_model(str(path))
            estimator.set_param({"nthread": 1})
        elif meta["family"] == "lightgbm":
            import lightgbm as lgb

            estimator = lgb.Booster(model_file=str(path))
        else:
            estimator = _load_skops(path)
        family = FAMILY_ALIASES.get(meta["family"], meta["family"])
        return cls(encoder, estimator, family, task)


def _task(meta: Mapping[str, Any]) -> Task:
    """The saved task; models saved before tasks existed were binary with labels inline."""
    if "task" in meta:
        return tasks.from_json(meta["task"])
    return tasks.BinaryTask(meta["positive_label"], meta["negative_label"],
                            float(meta["threshold"]))


def _load_skops(path: Path) -> Any:
    import skops.io

    untrusted = set(skops.io.get_untrusted_types(file=path))
    refused = sorted(untrusted - SKOPS_TRUSTED_TYPES)
    if refused:
        raise ModelLoadError(f"{path}: refusing to load untrusted type {refused[0]}")
    return skops.io.load(path, trusted=sorted(untrusted))


def _load_pyfunc(data_path: str) -> TabularModel:
    """Entry point MLflow calls for `loader_module="ctloop.model"`."""
    return TabularModel.load(data_path)
