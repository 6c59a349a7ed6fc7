"""Credentials come from the environment and go nowhere else.

Known secret values are put in the environment of a real `ctloop run` (verbose logging, debug
tracebacks on), then everything it wrote is searched for them: every param, tag and metric
name in the store (through MLflow's client), the raw store file itself, every artifact file,
and the captured stdout/stderr. A canary that *should* be recorded (the `--trigger` text)
proves that the search sees what ctloop writes.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import SMALL_TRAINING, make_churn, write_config

pytestmark = pytest.mark.slow

SECRET_VARS = ("MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY", "CTLOOP_TOKEN",
               "AWS_SESSION_TOKEN")


def _everything_recorded(client: MlflowClient) -> list[str]:
    """Params (keys, values), tags, metric names of all runs; registry names, tags, texts."""
    texts: list[str] = []
    for experiment in client.search_experiments():
        texts += [experiment.name, *experiment.tags.keys(), *experiment.tags.values()]
        for run in client.search_runs([experiment.experiment_id], max_results=1000):
            data = run.data
            texts += [run.info.run_name or "", *data.params.keys(), *data.params.values(),
                      *data.tags.keys(), *data.tags.values(), *data.metrics.keys()]
    for model in client.search_registered_models():
        texts += [model.name, model.description or "", *model.tags.values()]
        for version in client.search_model_versions(f"name = '{model.name}'"):
            texts += [version.description or "", version.source or "",
                      *version.tags.keys(), *version.tags.values()]
    return texts


def test_secrets_in_the_environment_are_never_recorded(tmp_path: Path) -> None:
    values = {name: f"{name.lower()}-{secrets.token_hex(12)}" for name in SECRET_VARS}
    canary = f"canary-{secrets.token_hex(6)}"
    make_churn().to_csv(tmp_path / "churn.csv", index=False)
    config = write_config(tmp_path, {
        "name": "churn-secrets",
        "data": {"source": "churn.csv", "target": "churn", "positive_label": "Yes",
                 "features": {"exclude": ["customer_id"]}},
        "training": {**SMALL_TRAINING, "plots": True},
    })
    store = tmp_path / "mlflow.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env.update(values, MLFLOW_TRACKING_URI=f"sqlite:///{store}", MLFLOW_TRACKING_USERNAME="me",
               AWS_ACCESS_KEY_ID="AKIAEXAMPLEEXAMPLE")
    done = subprocess.run(
        [sys.executable, "-m", "ctloop", "--verbose", "run", "--config", str(config),
         "--trigger", canary],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    try:
        recorded = _everything_recorded(MlflowClient(tracking_uri=f"sqlite:///{store}"))
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "churn.csv"]
    artifacts = [p for p in files if "mlruns" in p.parts]
    assert any(p.name == "MLmodel" for p in artifacts), "no artifacts found to search"
    assert any(p.suffix == ".png" for p in artifacts), "plots were not written"
    blobs = {str(p): p.read_bytes() for p in files}  # the store, artifacts, config
    blobs["stdout"], blobs["stderr"] = done.stdout.encode(), done.stderr.encode()
    assert done.stderr, "verbose run logged nothing: nothing to search"

    # Positive control: the search finds what ctloop is meant to record.
    assert any(canary in text for text in recorded)
    assert canary.encode() in blobs[str(store)]

    for name, value in values.items():
        leaks = [text for text in recorded if value in text]
        assert not leaks, f"{name} recorded in MLflow: {leaks[:3]}"
        where = [path for path, blob in blobs.items() if value.encode() in blob]
        assert not where, f"{name} written to {where}"
