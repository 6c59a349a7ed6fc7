"""Reading back what training logged: models, the reference and holdout frames, signatures.

Why a module of its own: `select`, `serve` and `monitor` only read; they need a logged model
as a TabularModel (or its folder), a run's Parquet frames, and a model's declared inputs, from
runs:/ or models:/ URIs alike.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ctloop.model import TabularModel
from ctloop.tracking.layout import HOLDOUT_ARTIFACT, MODEL_DATA_DIR, REFERENCE_ARTIFACT


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


def signature_inputs(model_uri: str) -> dict[str, str]:
    """Input column -> declared type of a logged model's signature ({} when it has none)."""
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    if signature is None or signature.inputs is None:
        return {}
    specs = signature.inputs.inputs
    return {spec.name: getattr(spec.type, "name", str(spec.type).lower()) for spec in specs}
