"""Gate runs: the child run of a training run that records one gate decision, and the floors.

Why a module of its own: `select` gates a challenger inside such a run, logs the comparison
and decision into it, and checks absolute metric floors through MLflow's own `evaluate` and
`validate_evaluation_results`; that MLflow evaluation glue lives here.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ctloop.tasks import Task
from ctloop.tracking.layout import GATE_KIND, RUN_KIND_TAG
from ctloop.tracking.store import _client, use_experiment


@contextlib.contextmanager
def gate_run(parent_run_id: str, tags: Mapping[str, str]) -> Iterator[str]:
    """A child run of the training run that holds one gate evaluation and its decision record."""
    import mlflow

    parent = _client().get_run(parent_run_id)
    use_experiment(parent.info.experiment_id)
    with mlflow.start_run(run_name=f"gate-{time.strftime('%Y%m%d-%H%M%S')}", nested=True,
                          parent_run_id=parent_run_id,
                          tags={**tags, RUN_KIND_TAG: GATE_KIND}) as run:
        yield run.info.run_id


def log_metrics(metrics: Mapping[str, float]) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})


def log_text(text: str, artifact_file: str) -> str:
    """Write text as an artifact of the active run; returns its artifact URI."""
    import mlflow

    mlflow.log_text(text, artifact_file)
    return f"{mlflow.get_artifact_uri()}/{artifact_file}"


def evaluate_floors(
    task: Task, y: Any, scores: Any, floors: Mapping[str, float]
) -> tuple[dict[str, float], list[str]]:
    """Absolute floors through MLflow's own evaluate + validate_evaluation_results.

    The scored holdout is evaluated as a static dataset with the task's `model_type`
    ("classifier" or "regressor"), so MLflow computes its built-in metrics (accuracy_score,
    f1_score, r2_score, root_mean_squared_error, ...) and a floor may name any of them; ctloop's
    own metrics of the task (which need the probabilities MLflow does not see) are added as
    custom metrics under their usual names. MLflow's MetricThreshold decides. Returns the
    evaluated metrics and one message per failed floor.
    """
    import mlflow
    from mlflow.models import MetricThreshold, make_metric
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    ours = task.metrics(np.asarray(y), np.asarray(scores))

    def metric_fn(name: str):
        def eval_fn(predictions, targets, metrics=None):
            return ours[name]

        return make_metric(eval_fn=eval_fn, greater_is_better=name not in task.lower_is_better,
                           name=name)

    truth, predicted, config = _evaluation_columns(task, np.asarray(y), np.asarray(scores))
    data = pd.DataFrame({"prediction": predicted, "target": truth})
    evaluation_log = logging.getLogger("mlflow.models.evaluation")
    level = evaluation_log.level
    evaluation_log.setLevel(logging.ERROR)  # its label-based type guess misfires on small sets
    try:
        result = mlflow.models.evaluate(
            data=data, predictions="prediction", targets="target",
            model_type=task.mlflow_model_type,
            extra_metrics=[metric_fn(n) for n in floors if n in ours],
            evaluator_config={"log_model_explainability": False, **config},
        )
    finally:
        evaluation_log.setLevel(level)
    unknown = [n for n in floors if n not in result.metrics]
    if unknown:
        raise ValueError(f"gate.floors: unknown metric '{unknown[0]}' for a {task.kind} model "
                         f"(available: {', '.join(sorted(result.metrics))})")
    thresholds = {
        name: MetricThreshold(threshold=value, greater_is_better=_higher_is_better(task, name))
        for name, value in floors.items()
    }
    failures: list[str] = []
    try:
        mlflow.validate_evaluation_results(thresholds, result)
    except ModelValidationFailedException as exc:
        failures = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return {k: float(v) for k, v in result.metrics.items()}, failures


def _evaluation_columns(task: Task, y: np.ndarray,
                        scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Targets and predictions as MLflow's evaluator wants them: class names for classifiers
    (so its per-class artifacts are readable), values for regressors."""
    if task.kind == "regression":
        return y, scores, {}
    if task.kind == "multiclass":
        names = np.array([str(c) for c in task.classes], dtype=object)
        return names[y.astype(int)], names[scores.argmax(axis=1)], {}
    positive, negative = str(task.positive_label), str(task.negative_label)
    predicted = np.where(scores >= task.threshold, positive, negative)
    return np.where(y == 1, positive, negative), predicted, {"pos_label": positive}


def _higher_is_better(task: Task, name: str) -> bool:
    if name in task.metric_names:
        return name not in task.lower_is_better
    return not any(word in name for word in ("error", "loss", "false_"))
