"""The champion to monitor and its reference data: training rows and holdout of its parent run."""

from __future__ import annotations

import logging

import pandas as pd

from ctloop import registry, tracking
from ctloop.config import Config
from ctloop.model import TabularModel
from ctloop.monitor.result import MonitorError

log = logging.getLogger(__name__)


def load_champion(cfg: Config) -> tuple[registry.ModelVersion, TabularModel, str]:
    """The champion version, its loaded model and the id of the training run it came from."""
    champion = registry.champion(cfg.name)
    if champion is None:
        raise MonitorError(f"registered model '{cfg.name}' has no champion to monitor; run "
                           "`ctloop run` first")  # fmt: skip
    model = tracking.load_model(champion.uri)
    parent = None
    if champion.run_id:
        info = tracking.run_info(champion.run_id)
        parent = info["tags"].get("ctloop.parent_run_id") or (
            champion.run_id if info["tags"].get(tracking.RUN_KIND_TAG) == tracking.TRAINING_KIND
            else None)  # fmt: skip
    parent = parent or champion.tags.get("ctloop.training_run_id")
    if not parent:
        raise MonitorError(f"champion v{champion.version} of '{cfg.name}' has no training run "
                           "to take reference data from")  # fmt: skip
    return champion, model, parent


def load_holdout(parent_run_id: str) -> pd.DataFrame | None:
    """The champion's holdout rows (out-of-sample reference for its predictions), if logged."""
    try:
        return tracking.load_holdout(parent_run_id)
    except Exception:  # older runs logged no holdout: fall back to the training rows
        log.info("training run %s has no holdout artifact; prediction reference = training "
                 "rows", parent_run_id)  # fmt: skip
        return None


def load_reference(parent_run_id: str, version: int) -> pd.DataFrame:
    """The rows the champion was trained on (MonitorError if the artifact is missing)."""
    try:
        return tracking.load_reference(parent_run_id)
    except Exception as exc:  # MLflow raises its own exception types for a missing artifact
        raise MonitorError(f"reference data of champion v{version} is missing: training run "
                           f"{parent_run_id} has no '{tracking.REFERENCE_ARTIFACT}' artifact "
                           f"({type(exc).__name__})") from None  # fmt: skip
