"""Distributed trials on a real Dask cluster (LocalCluster with worker processes).

The Dask backend must be a drop-in for the local one: same seeded trials, same metrics,
every trial a child of the one parent run, and the trials really executed on the workers.
"""

from __future__ import annotations

from pathlib import Path

import dask
import pytest

from ctloop import tracking
from ctloop.config import ConfigError, load_config
from ctloop.train import train
from tests.conftest import SMALL_TRAINING, make_churn, write_config

pytestmark = pytest.mark.slow

TRAINING = {**SMALL_TRAINING, "plots": True,
            "candidates": {**SMALL_TRAINING["candidates"],
                           "hist_gradient_boosting": {"trials": 1,
                                                      "search": {"max_leaf_nodes": [15]}}}}


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with (LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                       dashboard_address=None) as local,
          Client(local, set_as_default=False) as client):
        yield local, client


def _config(folder: Path, compute: dict | None) -> Path:
    if not (folder / "churn.csv").exists():
        make_churn(rows=800, seed=3).to_csv(folder / "churn.csv", index=False)
    body = {"name": "churn-dask",
            "data": {"source": "churn.csv", "target": "churn", "positive_label": "Yes",
                     "features": {"exclude": ["customer_id"]}},
            "training": TRAINING}
    if compute:
        body["compute"] = compute
    return write_config(folder, body)


def _scores(result) -> dict[str, dict[str, float]]:
    return {t.name: {k: v for k, v in t.metrics.items() if k != "fit_seconds"}
            for t in result.trials}


def test_dask_trials_match_local_and_share_one_parent_run(mlflow_store, tmp_path, cluster):
    local_cluster, client = cluster
    local = train(load_config(_config(tmp_path, None)))
    dask_cfg = load_config(_config(tmp_path, {"backend": "dask",
                                              "scheduler_address":
                                                  local_cluster.scheduler_address}))
    distributed = train(dask_cfg)

    assert len(distributed.trials) == 3
    # Same seeded trials, one thread each: bit-for-bit the same scores on either backend.
    assert _scores(distributed) == _scores(local)
    assert distributed.best.name == local.best.name

    # The trials ran as tasks on the cluster's worker processes, not in this process.
    prefixes = client.run_on_scheduler(
        lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    assert any(p.endswith("run_trial") for p in prefixes), prefixes

    children = tracking.trial_runs(distributed.run_id)
    assert sorted(c["name"] for c in children) == sorted(t.name for t in distributed.trials)
    assert {c["tags"]["ctloop.parent_run_id"] for c in children} == {distributed.run_id}
    parent = tracking.run_info(distributed.run_id)
    assert parent["tags"]["ctloop.best_trial_run_id"] == distributed.best.run_id
    # Fitted models come back from the workers in memory, complete and loadable; plots logged.
    for child in children:
        model = tracking.load_model(f"runs:/{child['run_id']}/{tracking.MODEL_NAME_IN_RUN}")
        assert model.family == child["tags"]["ctloop.family"]
    from mlflow import MlflowClient  # test-side inspection of the store

    plots = MlflowClient().list_artifacts(distributed.best.run_id, "plots")
    assert plots, "plots made on a worker were not logged"


def test_dask_backend_needs_a_scheduler_address(mlflow_store, tmp_path):
    cfg = load_config(_config(tmp_path, {"backend": "dask"}))
    with pytest.raises(ConfigError, match=r"compute\.scheduler_address is required"):
        train(cfg)


def test_unreachable_scheduler_is_one_clear_error(mlflow_store, tmp_path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = load_config(_config(tmp_path, {"backend": "dask",
                                         "scheduler_address": f"tcp://127.0.0.1:{port}"}))
    with (dask.config.set({"distributed.comm.timeouts.connect": "2s"}),
          pytest.raises(ConfigError, match="cannot reach the Dask scheduler")):
        train(cfg)
