"""Reading back what training logged: models, the reference and holdout frames, signatures.

Why a module of its own: `select`, `serve` and `monitor` only read; they need a logged model
as a TabularModel (or its folder), a run's Parquet frames, and a model's declared inputs, from
runs:/ or models:/ URIs alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ctloop.model import TabularModel
from ctloop.tracking.layout import (
    HOLDOUT_ARTIFACT,
    MODEL_DATA_DIR,
    OUT_OF_FOLD_ARTIFACT,
    REFERENCE_ARTIFACT,
)


def download_model_dir(model_uri: str, dst: str | Path | None = None) -> Path:
    """Fetch a logged pyfunc model and return its ctloop data folder."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=(
        str(dst) if dst else None)))
    if not (local / "MLmodel").exists():
        # A models:/ version whose source is runs:/<id>/model lands in <dst>/model/ instead.
        nested = [p.parent for p in local.glob("*/MLmodel")]
        if len(nested) == 1:
            local = nested[0]
    return local / "data" / MODEL_DATA_DIR


def load_model(model_uri: str) -> TabularModel:
    """The TabularModel behind a logged model URI (runs:/, models:/ ...), without pyfunc glue."""
    return TabularModel.load(download_model_dir(model_uri))


def load_frame(run_id: str, artifact: str) -> pd.DataFrame:
    import mlflow

    return pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id,
                                                               artifact_path=artifact))


def load_reference(training_run_id: str) -> pd.DataFrame:
    return load_frame(training_run_id, REFERENCE_ARTIFACT)


def load_holdout(training_run_id: str) -> pd.DataFrame:
    return load_frame(training_run_id, HOLDOUT_ARTIFACT)


def load_out_of_fold(training_run_id: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Encoded labels and out-of-fold scores (1-D, or one column per class) of the best
    trial's cross-validation; None when the champion was not cross-validated."""
    from mlflow import MlflowClient

    folder, name = OUT_OF_FOLD_ARTIFACT.rsplit("/", 1)
    if name not in {Path(f.path).name for f in MlflowClient().list_artifacts(
            training_run_id, folder)}:  # fmt: skip
        return None
    frame = load_frame(training_run_id, OUT_OF_FOLD_ARTIFACT)
    scores = frame[[c for c in frame.columns if c.startswith("score")]].to_numpy(np.float64)
    return frame["label"].to_numpy(np.float64), scores[:, 0] if scores.shape[1] == 1 else scores


def signature_inputs(model_uri: str) -> dict[str, str]:
    """Input column -> declared type of a logged model's signature ({} when it has none)."""
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    if signature is None or signature.inputs is None:
        return {}
    specs = signature.inputs.inputs
    return {spec.name: getattr(spec.type, "name", str(spec.type).lower()) for spec in specs}
