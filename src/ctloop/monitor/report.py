"""The Evidently reports (HTML + JSON) that a person opens in the MLflow UI.

Two reports, because their honest references differ:
  data_report    feature drift per column and a data-quality summary; reference = the rows
                 the champion was trained on;
  model_report   prediction drift, and when labels are known target drift and the task's
                 quality (ClassificationPreset for binary and multiclass, RegressionPreset);
                 reference = the champion's predictions on its holdout split (out-of-sample:
                 in-sample predictions of a boosted model are more extreme than on any new
                 data, so comparing live predictions to them flags drift that is not there).
Both run on a seeded sample of at most `monitor.sample_rows` rows per side, because the
presets' cost grows faster than the rows (and has a fixed ~5 s of plotting); the decision uses
the verdicts of `drift.py` on all decoded rows, and any column where the sampled report
disagrees is tagged on the run (`ctloop.report_sample_disagreements`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ctloop.monitor.drift import PREDICTION_COLUMN
from ctloop.monitor.frames import label_names
from ctloop.tasks import Task

log = logging.getLogger(__name__)

TARGET_COLUMN = "target"
DATA_REPORT = "data_report"
MODEL_REPORT = "model_report"


@dataclass(frozen=True)
class ReportFiles:
    paths: tuple[Path, ...]
    sample_rows: dict[str, int]
    sample_verdicts: dict[str, bool]  # column -> drifted, as the sampled reports show it


def sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """A seeded uniform sample without replacement (the whole frame when it is small)."""
    if len(frame) <= rows:
        return frame.reset_index(drop=True)
    return frame.sample(n=rows, random_state=seed).reset_index(drop=True)


def _save(snapshot, out_dir: Path, name: str) -> tuple[Path, Path, dict]:
    html, js = out_dir / f"{name}.html", out_dir / f"{name}.json"
    snapshot.save_html(str(html))  # writes only when given a str
    js.write_text(snapshot.json())
    return html, js, snapshot.dict()


def build_reports(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    model_reference: pd.DataFrame,
    model_current: pd.DataFrame,
    out_dir: Path,
    sample_rows: int,
    seed: int,
    drift_share: float,
    task: Task,
) -> ReportFiles:
    """Write data_report.{html,json} and model_report.{html,json} into `out_dir`.

    `model_reference`/`model_current` are `model_frames`: `prediction` and, when labels are
    known on the current side, `target` on both sides.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    out_dir.mkdir(parents=True, exist_ok=True)
    columns = [*numeric, *categorical]
    ref = sample(reference[columns], sample_rows, seed)
    cur = sample(current[columns], sample_rows, seed + 1)
    definition = DataDefinition(numerical_columns=list(numeric),
                                categorical_columns=list(categorical))  # fmt: skip
    data_snapshot = Report([DataDriftPreset(columns=columns, drift_share=drift_share),
                            DataSummaryPreset()]).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )  # fmt: skip
    data_html, data_json, data_dict = _save(data_snapshot, out_dir, DATA_REPORT)

    model_ref = sample(model_reference, sample_rows, seed + 2)
    model_cur = sample(model_current, sample_rows, seed + 3)
    model_definition, metrics = _model_metrics(model_ref, model_cur, task)
    model_snapshot = Report(metrics).run(
        Dataset.from_pandas(model_cur, data_definition=model_definition),
        Dataset.from_pandas(model_ref, data_definition=model_definition),
    )
    model_html, model_json, model_dict = _save(model_snapshot, out_dir, MODEL_REPORT)
    verdicts = {**_sample_verdicts(data_dict), **_sample_verdicts(model_dict)}
    return ReportFiles((data_html, data_json, model_html, model_json),
                       {"reference": len(ref), "current": len(cur),
                        "model_reference": len(model_ref), "model_current": len(model_cur)},
                       verdicts)  # fmt: skip


def model_frames(task: Task, scores: np.ndarray, labels: np.ndarray | None) -> pd.DataFrame:
    """One side of the model report from the task's scores and label codes (None: unknown).

    binary      prediction = positive-class probability, target = 0/1;
    multiclass  prediction = predicted class, one probability column per class (named by
                the class), target = the class;
    regression  prediction and target as numbers.
    """
    values, _ = task.drift_signal(scores)
    frame = pd.DataFrame({PREDICTION_COLUMN: values})
    names = probability_columns(task)
    if names:
        frame = pd.concat([frame, pd.DataFrame(np.asarray(scores), columns=names)], axis=1)
    if labels is not None:
        if task.kind == "binary":
            frame[TARGET_COLUMN] = labels
        else:
            frame[TARGET_COLUMN] = label_names(labels, task).to_numpy()
        frame = frame[~np.isnan(np.asarray(labels, dtype=np.float64))].reset_index(drop=True)
        if task.kind == "binary":
            frame[TARGET_COLUMN] = frame[TARGET_COLUMN].astype(int)
    return frame


def probability_columns(task: Task) -> list[str]:
    """Multiclass: the per-class probability columns of the model report, named by the class
    as Evidently expects (none when a class name would collide with another column)."""
    if task.kind != "multiclass":
        return []
    names = [str(c) for c in task.classes]  # type: ignore[attr-defined]
    if len(set(names)) < len(names) or {PREDICTION_COLUMN, TARGET_COLUMN} & set(names):
        return []
    return names


def _model_metrics(model_ref: pd.DataFrame, model_cur: pd.DataFrame, task: Task) -> tuple:
    """The model report's data definition and metrics for the task: prediction (and target)
    drift, and with labels Evidently's ClassificationPreset (binary: the probability with
    pos_label=1; multiclass: the predicted class and per-class probabilities) or
    RegressionPreset."""
    from evidently import BinaryClassification, DataDefinition, MulticlassClassification, Regression
    from evidently.presets import ClassificationPreset, DataDriftPreset, RegressionPreset

    labelled = TARGET_COLUMN in model_cur.columns and TARGET_COLUMN in model_ref.columns
    labelled = labelled and len(model_cur) > 0 and len(model_ref) > 0
    drifting = [PREDICTION_COLUMN, *([TARGET_COLUMN] if labelled else [])]
    probas = [c for c in probability_columns(task) if c in model_cur.columns]
    numerical, categorical = list(probas), []
    (categorical if task.kind == "multiclass" else numerical).append(PREDICTION_COLUMN)
    if labelled:
        (numerical if task.kind == "regression" else categorical).append(TARGET_COLUMN)
    metrics: list = [DataDriftPreset(columns=drifting, drift_share=1.0)]
    kwargs: dict = {}
    if labelled and task.kind == "binary":
        kwargs["classification"] = [BinaryClassification(
            target=TARGET_COLUMN, prediction_probas=PREDICTION_COLUMN, pos_label=1)]
        metrics.append(ClassificationPreset())
    elif labelled and task.kind == "multiclass":
        kwargs["classification"] = [MulticlassClassification(
            target=TARGET_COLUMN, prediction_labels=PREDICTION_COLUMN,
            prediction_probas=probas or None)]
        metrics.append(ClassificationPreset())
    elif labelled:
        kwargs["regression"] = [Regression(target=TARGET_COLUMN, prediction=PREDICTION_COLUMN)]
        metrics.append(RegressionPreset())
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical,
                                **kwargs)  # fmt: skip
    return definition, metrics


def _sample_verdicts(payload: dict) -> dict[str, bool]:
    """column -> drifted from the report's ValueDrift results."""
    verdicts = {}
    for metric in payload.get("metrics", []):
        config = metric.get("config") or {}
        if str(config.get("type", "")).endswith("ValueDrift") and config.get("threshold"):
            value = metric.get("value")
            if isinstance(value, int | float):
                # p-value tests drift below the threshold, distances at or above it
                if "p_value" in str(config.get("method", "")):
                    drifted = value < config["threshold"]
                else:
                    drifted = value >= config["threshold"]
                verdicts[str(config.get("column"))] = bool(drifted)
    return verdicts
