"""The deployable model: JSON encoder + estimator + threshold, saved without arbitrary pickle.

On disk (the pyfunc model's data folder):
  model.json    family, task (labels, threshold), file names (JSON)
  encoder.json  feature columns and category vocabularies     (JSON)
  booster.ubj   XGBoost's own format, for the xgboost family
  lightgbm.txt  LightGBM's own text format, for the lightgbm family
  estimator.skops   scikit-learn families, loaded with an explicit allowlist of types
  member-NN/    an ensemble's members, each a model folder of its own (weights in model.json)

MLflow loads it through `loader_module="ctloop.model"` (`_load_pyfunc`), so this module never
imports MLflow, and a single-row predict is one encode plus a few numpy calls on arrays built
at load time (ctloop.predictors), or one LightGBM booster call.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctloop import predictors, tasks
from ctloop.config import FAMILY_ALIASES
from ctloop.ensemble import ENSEMBLE
from ctloop.features import FeatureEncoder
from ctloop.tasks import Task

MODEL_FILE = "model.json"
ENCODER_FILE = "encoder.json"
BOOSTER_FILE = "booster.ubj"
NATIVE_FAMILIES = frozenset({"xgboost", "lightgbm"})  # saved by their library, the rest by skops
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


@dataclass(frozen=True)
class Members:
    """An ensemble's estimator: its member models (same encoder and task) and their weights.

    Each member keeps its own fast predictor, so a small batch costs one fast call per
    member; the scores are averaged (probabilities for classification)."""

    models: tuple[TabularModel, ...]
    weights: tuple[float, ...]
    names: tuple[str, ...]  # the trials the members came from

    def scores_encoded(self, X: np.ndarray) -> np.ndarray:
        total = self.weights[0] * self.models[0].scores_encoded(X)
        for weight, model in zip(self.weights[1:], self.models[1:], strict=True):
            total += weight * model.scores_encoded(X)
        return total


def import_skops() -> None:
    """Import what saves and loads the scikit-learn families: skops lists every
    scikit-learn estimator as it is imported, 0.5 s of CPU that a process would otherwise pay
    at its first such model (`ctloop.train` imports it in a thread while its last trials
    run)."""
    import skops.io  # noqa: F401


class ModelLoadError(RuntimeError):
    """A saved model that cannot be loaded safely (missing file, untrusted type)."""


@dataclass
class TabularModel:
    """Raw feature columns in, the task's output columns out."""

    encoder: FeatureEncoder
    # xgboost.Booster, lightgbm.Booster, a fitted scikit-learn estimator, or `Members`
    estimator: Any
    family: str
    task: Task
    # False for a model only ever scored in bulk (a trial's validation rows, a fold): building
    # and checking the arrays costs more than it saves there.
    fast_path: bool = field(default=True, kw_only=True)
    # numpy arrays built from the estimator for small batches (ctloop.predictors), or None
    fast: predictors.Predictor | None = field(default=None, init=False, repr=False,
                                              compare=False)
    # Where this very object was last saved: an ensemble copies its members' folders from
    # there instead of saving them again (skops takes 0.1-0.6 s for a scikit-learn model).
    saved_in: Path | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.fast_path and self.family != ENSEMBLE:
            self.fast = predictors.build(self.estimator, self.family, self.task)

    @property
    def feature_columns(self) -> tuple[str, ...]:
        return self.encoder.columns

    def scores_encoded(self, X: np.ndarray) -> np.ndarray:
        """Binary: positive-class probability; multiclass: n x k probabilities; regression:
        the prediction. Always float64."""
        if self.fast is not None and self.fast.accepts(X):
            return self.fast(X)
        if self.family == ENSEMBLE:
            return self.estimator.scores_encoded(X)
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
        extra: dict[str, Any] = {}
        if self.family == ENSEMBLE:
            members = self.estimator
            extra["members"] = []
            for number, (model, weight, name) in enumerate(zip(
                    members.models, members.weights, members.names, strict=True)):
                member_folder = f"member-{number:02d}"
                if model.saved_in is not None and (model.saved_in / MODEL_FILE).exists():
                    shutil.copytree(model.saved_in, folder / member_folder)
                else:
                    model.save(folder / member_folder)
                extra["members"].append({"folder": member_folder, "weight": weight,
                                         "trial": name})
            estimator_file = ""
        elif self.family == "xgboost":
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
            **extra,
        }
        (folder / MODEL_FILE).write_text(json.dumps(meta, indent=1))
        self.saved_in = folder
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
        if meta["family"] == ENSEMBLE:
            estimator = _load_members(folder, meta, encoder, task)
        elif meta["family"] == "xgboost":
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


def _load_members(folder: Path, meta: Mapping[str, Any], encoder: FeatureEncoder,
                  task: Task) -> Members:
    """An ensemble's members, sharing the ensemble's encoder and task."""
    try:
        listed = [(m["folder"], float(m["weight"]), str(m["trial"])) for m in meta["members"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{folder}: an ensemble without a valid member list ({exc})"
                             ) from None
    models = []
    for name, _, _ in listed:
        member = TabularModel.load(folder / name)
        if member.feature_columns != encoder.columns:
            differ = sorted(set(member.feature_columns) ^ set(encoder.columns)) or "their order"
            raise ModelLoadError(f"{folder / name}: the member's feature columns differ from "
                                 f"the ensemble's ({differ})")
        if member.task.kind != task.kind:
            raise ModelLoadError(f"{folder / name}: a {member.task.kind} member in a "
                                 f"{task.kind} ensemble")
        models.append(member)
    return Members(tuple(models), tuple(w for _, w, _ in listed),
                   tuple(t for _, _, t in listed))


def _load_skops(path: Path) -> Any:
    """The estimator, if it holds no type outside skops' defaults and the allowlist: skops
    audits the file as it loads it (auditing it first as well cost a third more, 0.1-0.2 s
    for a HistGradientBoosting model or an ensemble)."""
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        return skops.io.load(path, trusted=sorted(SKOPS_TRUSTED_TYPES))
    except UntrustedTypesFoundException:
        refused = sorted(set(skops.io.get_untrusted_types(file=path)) - SKOPS_TRUSTED_TYPES)
        raise ModelLoadError(f"{path}: refusing to load untrusted type "
                             f"{refused[0] if refused else '(unnamed)'}") from None


def _load_pyfunc(data_path: str) -> TabularModel:
    """Entry point MLflow calls for `loader_module="ctloop.model"`."""
    return TabularModel.load(data_path)
