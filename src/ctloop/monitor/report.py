"""The Evidently reports (HTML + JSON) that a person opens in the MLflow UI.

Two reports, because their honest references differ:
  data_report    feature drift per column and a data-quality summary; reference = the rows
                 the champion was trained on;
  model_report   prediction drift, and classification quality when labels are known;
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

import pandas as pd

from ctloop.monitor.drift import PREDICTION_COLUMN

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
) -> ReportFiles:
    """Write data_report.{html,json} and model_report.{html,json} into `out_dir`.

    `model_reference`/`model_current` carry `prediction` and, when labels are known on the
    current side, `target` (0/1) on both sides.
    """
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset, DataDriftPreset, DataSummaryPreset

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

    labelled = TARGET_COLUMN in model_current.columns and TARGET_COLUMN in model_reference.columns
    model_ref = sample(model_reference, sample_rows, seed + 2)
    model_cur = sample(model_current, sample_rows, seed + 3)
    classification = None
    metrics: list = [DataDriftPreset(columns=[PREDICTION_COLUMN], drift_share=1.0)]
    if labelled:
        for frame in (model_ref, model_cur):
            frame[TARGET_COLUMN] = frame[TARGET_COLUMN].astype(int)
        classification = [BinaryClassification(target=TARGET_COLUMN,
                                               prediction_probas=PREDICTION_COLUMN,
                                               pos_label=1)]  # fmt: skip
        metrics.append(ClassificationPreset())
    model_definition = DataDefinition(numerical_columns=[PREDICTION_COLUMN],
                                      classification=classification)  # fmt: skip
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
