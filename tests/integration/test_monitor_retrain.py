"""`--retrain` reruns the MLflow project (a tracked project run) and registers a new version;
the next monitor on the same kind of traffic takes no action (the loop settles), the cooldown
blocks a second retrain, and a champion without reference data is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from ctloop import loop, registry, tracking
from ctloop.config import load_config
from ctloop.monitor.job import MonitorError
from tests.conftest import SMALL_TRAINING, make_churn, store_in, write_config


@pytest.fixture(scope="module")
def fresh_store(tmp_path_factory: pytest.TempPathFactory):
    """Its own store: these tests add versions and delete artifacts."""
    folder = tmp_path_factory.mktemp("retrain")
    make_churn(800, seed=3).to_csv(folder / "churn.csv", index=False)
    config = write_config(folder, {
        "name": "churn-retrain",
        "data": {"source": "churn.csv", "target": "churn", "positive_label": "Yes",
                 "features": {"exclude": ["customer_id"]}},
        "training": {**SMALL_TRAINING, "n_jobs": 1},
        "monitor": {"cooldown_minutes": 60},
    })  # fmt: skip
    with store_in(folder):
        cfg = load_config(config)
        loop.run(cfg)
        yield {"cfg": cfg, "dir": folder}


def _new_world(rows: int, seed: int) -> pd.DataFrame:
    """Concept shift: month-to-month customers now behave the other way round. A retrained
    model can learn it (the contract is a feature); the first champion cannot know it."""
    frame = make_churn(rows, seed=seed)
    turned = frame["contract"] == "month-to-month"
    frame.loc[turned, "churn"] = np.where(frame.loc[turned, "churn"] == "Yes", "No", "Yes")
    return frame


def _csv(folder: Path, name: str, frame: pd.DataFrame) -> str:
    path = folder / name
    frame.to_csv(path, index=False)
    return str(path)


@pytest.mark.slow
def test_retrain_launches_a_tracked_project_run_and_the_loop_settles(fresh_store: dict) -> None:
    cfg, folder = fresh_store["cfg"], fresh_store["dir"]
    assert [v.version for v in registry.versions(cfg.name)] == [1]
    # the labelled rows of the new world have arrived in the configured source
    _new_world(800, seed=4).to_csv(folder / "churn.csv", index=False)
    result = loop.monitor(cfg, current=_csv(folder, "now.csv", _new_world(600, 21)),
                          retrain=True)  # fmt: skip
    assert result.decision == "retrain" and result.rule.startswith("labelled_drop"), \
        result.summary()
    assert result.retrain_run_id, result.retrain
    assert result.new_versions == [2], result.retrain
    assert result.retrain.endswith("v2 promoted"), result.retrain
    assert result.retrain_window == ("", "")  # no time column: the whole configured source
    client = MlflowClient()
    project_run = client.get_run(result.retrain_run_id)
    assert project_run.info.status == "FINISHED"
    tags = project_run.data.tags
    assert tags["ctloop.trigger_monitor_run_id"] == result.monitor_run_id
    assert tags["mlflow.source.type"] == "PROJECT" and tags["mlflow.project.entryPoint"] == "main"
    assert client.get_experiment(project_run.info.experiment_id).name == cfg.name
    assert project_run.data.params["trigger"] == f"monitor:{result.monitor_run_id}"
    version = registry.get_version(cfg.name, 2)
    assert version.run_id and tracking.run_info(version.run_id)["tags"][
        "ctloop.parent_run_id"] == result.retrain_run_id  # the project run trained it
    monitor_tags = client.get_run(result.monitor_run_id).data.tags
    assert monitor_tags["ctloop.retrain"] == "launched"
    assert monitor_tags["ctloop.retrain_run_id"] == result.retrain_run_id
    assert client.get_run(result.monitor_run_id).info.status == "FINISHED"

    # The loop settles: the same kind of traffic, judged against v2's own expected level,
    # needs nothing. v2 was cross-validated: its level rests on the out-of-fold scores of the
    # rows it learnt from as well as its small holdout.
    settled = loop.monitor(cfg, current=_csv(folder, "later.csv", _new_world(600, 22)),
                           retrain=True)  # fmt: skip
    assert settled.model_version == 2
    assert settled.decision == "no_action", settled.summary()
    assert settled.performance["expected_from"] == "holdout+out_of_fold"
    assert settled.performance["expected_rows"] > settled.rows["prediction_reference"]
    assert settled.retrain == "not needed (no_action)" and settled.retrain_run_id is None
    assert not any(c["harmful"] for c in settled.performance["realised"])
    before = next(c for c in result.performance["realised"] if c["metric"] == "roc_auc")
    after = next(c for c in settled.performance["realised"] if c["metric"] == "roc_auc")
    assert after["observed"] > before["observed"] + 0.1  # v2 learnt the new world

    # v2 underperforming (a further concept shift) is harm again, but the cooldown holds.
    worse = _new_world(600, 23)
    worse["churn"] = np.where(worse["churn"] == "Yes", "No", "Yes")
    again = loop.monitor(cfg, current=_csv(folder, "worse.csv", worse), retrain=True)
    assert again.decision == "retrain" and again.retrain.startswith("skipped: cooldown")
    assert again.retrain_run_id is None
    assert [v.version for v in registry.versions(cfg.name)] == [2, 1]


@pytest.mark.slow
def test_missing_reference_is_a_clear_error(fresh_store: dict) -> None:
    cfg = fresh_store["cfg"]
    champion = registry.champion(cfg.name)
    parent = tracking.run_info(champion.run_id)["tags"]["ctloop.parent_run_id"]
    uri = MlflowClient().get_run(parent).info.artifact_uri
    Path(uri.removeprefix("file://"), tracking.REFERENCE_ARTIFACT).unlink()
    with pytest.raises(MonitorError, match=f"reference data of champion v{champion.version} is "
                       f"missing: training run {parent}"):  # fmt: skip
        loop.monitor(cfg, current=_csv(fresh_store["dir"], "any.csv", make_churn(300, 5)))
