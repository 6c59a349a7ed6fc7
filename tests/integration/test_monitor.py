"""`ctloop monitor` against a real champion in a real MLflow store (the session churn model)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from ctloop import loop, tracking
from ctloop.config import Config, load_config
from ctloop.monitor.job import MonitorError
from tests.conftest import SMALL_TRAINING, make_churn, store_in, write_config
from tests.unit.monitor.support import T0, write_capture, write_ground_truth

FEATURES = ["tenure", "monthly_charges", "contract", "internet"]


@pytest.fixture
def store(champion_store: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", champion_store["uri"])
    monkeypatch.chdir(champion_store["dir"])
    tracking.configure()
    return {**champion_store, "cfg": load_config(champion_store["config"])}


def _with(cfg: Config, **monitor) -> Config:
    thresholds = monitor.pop("thresholds", {})
    section = cfg.monitor.model_copy(update={
        **monitor, "thresholds": cfg.monitor.thresholds.model_copy(update=thresholds)})
    return cfg.model_copy(update={"monitor": section})


def _csv(folder: Path, name: str, frame: pd.DataFrame) -> str:
    path = folder / name
    frame.to_csv(path, index=False)
    return str(path)


def _run(run_id: str):
    return MlflowClient().get_run(run_id)


def _unlabelled(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["churn"])


def _flipped(frame: pd.DataFrame, share: float, seed: int = 0) -> pd.DataFrame:
    """Concept shift: a share of the labels flipped, the features untouched."""
    out = frame.copy()
    flip = np.random.default_rng(seed).random(len(out)) < share
    out.loc[flip, "churn"] = np.where(out.loc[flip, "churn"] == "Yes", "No", "Yes")
    return out


def _champion_model(cfg: Config):
    from ctloop.monitor.reference import load_champion

    return load_champion(cfg)[1]


def test_calm_window_takes_no_action_and_logs_report(store: dict, tmp_path: Path) -> None:
    result = loop.monitor(store["cfg"], current=_csv(tmp_path, "same.csv", make_churn(600, 11)))
    assert result.decision == "no_action" and result.rule == "none", result.summary()
    assert result.summary().startswith("NO_ACTION | champion v1 | rows 600")
    assert set(result.feature_scores) == set(FEATURES)
    assert result.prediction_drift is not None and not result.prediction_drift["drifted"]
    assert result.prediction_drift["method"] == "wasserstein_normed"
    assert result.rows["current"] == 600 and result.rows["reference"] == 420
    assert result.rows["prediction_reference"] == 90  # the champion's holdout split
    assert 0.6 < result.quality["roc_auc"] < 1.0  # labels came with the file
    # the labels decided: the realised primary metric and the recall guard, with intervals
    realised = {c["metric"]: c for c in result.performance["realised"]}
    assert set(realised) == {"roc_auc", "recall"}
    assert realised["roc_auc"]["observed"] == pytest.approx(result.quality["roc_auc"])
    assert realised["roc_auc"]["lower"] < realised["roc_auc"]["drop"]
    assert not any(c["harmful"] for c in realised.values())
    assert any(r.startswith("roc_auc ") and "realised" in r for r in result.reasons)
    run = _run(result.monitor_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["ctloop.decision"] == "no_action"
    assert run.data.tags["ctloop.rule"] == "none"
    assert run.data.tags["ctloop.model_version"] == "1"
    assert run.data.metrics["drift_share"] == result.drift_share
    assert run.data.metrics["retrain_warranted"] == 0.0
    assert run.data.metrics["realised.roc_auc"] == pytest.approx(result.quality["roc_auc"])
    assert "expected.roc_auc" in run.data.metrics and "estimated.roc_auc" in run.data.metrics
    assert "drift_score.tenure" in run.data.metrics and "quality.roc_auc" in run.data.metrics
    experiment = MlflowClient().get_experiment(run.info.experiment_id)
    assert experiment.name == "churn-served-monitoring"
    files = {f.path for f in MlflowClient().list_artifacts(result.monitor_run_id, "report")}
    assert files == {f"report/{name}.{ext}" for name in ("data_report", "model_report")
                     for ext in ("html", "json")}  # fmt: skip
    html = Path(result.report_html.removeprefix("file://"))
    text = html.read_text()
    assert text.lstrip().lower().startswith("<!doctype html") and "monthly_charges" in text


def test_calm_window_without_labels_takes_no_action(store: dict, tmp_path: Path) -> None:
    frame = _unlabelled(make_churn(600, 21))
    result = loop.monitor(store["cfg"], current=_csv(tmp_path, "calm.csv", frame))
    assert result.decision == "no_action", result.summary()
    assert result.rows["labelled"] == 0 and not result.performance["realised"]
    estimated = {c["metric"]: c for c in result.performance["estimated"]}
    assert abs(estimated["roc_auc"]["drop"]) < 0.03, estimated


def test_flipped_labels_retrain_by_the_labelled_drop(store: dict, tmp_path: Path) -> None:
    """Concept shift: the features (and so the predictions and any estimate) look calm; only
    the labels show the harm, and they decide."""
    frame = _flipped(make_churn(600, 11), 0.35)
    result = loop.monitor(store["cfg"], current=_csv(tmp_path, "flip.csv", frame))
    assert result.decision == "retrain", result.summary()
    assert result.rule.startswith("labelled_drop")
    assert result.reasons[0].startswith("roc_auc ") and "> tolerance 0.03" in result.reasons[0]
    roc = next(c for c in result.performance["realised"] if c["metric"] == "roc_auc")
    assert roc["lower"] > 0.03 and roc["observed"] < roc["expected"] - 0.1
    assert not result.prediction_drift["drifted"]  # reported: the predictions did not move
    assert _run(result.monitor_run_id).data.tags["ctloop.rule"] == result.rule
    assert result.summary().startswith(f"RETRAIN ({result.rule}) | champion v1")


def test_drifted_features_alone_are_reported_not_acted_on(store: dict, tmp_path: Path) -> None:
    frame = make_churn(600, 12)
    # internet does not drive churn: its categories moving harms nothing
    frame["internet"] = np.where(np.arange(600) % 10 < 9, "none", frame["internet"])
    result = loop.monitor(store["cfg"], current=_csv(tmp_path, "shift.csv", frame))
    assert "internet" in result.drifted_columns
    assert result.decision == "no_action", result.summary()
    assert any("features drifted" in r and "internet" in r for r in result.reasons)
    assert "internet" in _run(result.monitor_run_id).data.tags["ctloop.drifted_columns"]
    # the feature-share policy, asked for explicitly
    cfg = _with(store["cfg"], thresholds={"drift_share": 0.25, "retrain_on_feature_drift": True})
    policy = loop.monitor(cfg, current=_csv(tmp_path, "shift.csv", frame))
    assert policy.decision == "retrain" and policy.rule == "feature_drift", policy.summary()
    assert "internet" in policy.reasons[0]


def test_estimated_drop_without_labels(store: dict, tmp_path: Path) -> None:
    """Covariate shift into the rows the champion is least sure of: no labels, yet the
    estimate from its calibrated probabilities sees the drop the labels would show."""
    pool = make_churn(6000, 31)
    p = _champion_model(store["cfg"]).scores(pool[FEATURES])
    hard = pool[(p > 0.3) & (p < 0.7)].head(600).reset_index(drop=True)
    assert len(hard) == 600
    result = loop.monitor(store["cfg"], current=_csv(tmp_path, "hard.csv", _unlabelled(hard)))
    assert result.decision == "retrain", result.summary()
    assert "estimated_drop" in result.rule.split("+")
    assert any(r.startswith("roc_auc ") and "estimated" in r for r in result.reasons)
    # the labels, once they arrive, confirm the harm the estimate saw
    labelled = loop.monitor(store["cfg"], current=_csv(tmp_path, "hardl.csv", hard))
    roc = next(c for c in labelled.performance["realised"] if c["metric"] == "roc_auc")
    est = next(c for c in result.performance["estimated"] if c["metric"] == "roc_auc")
    # within 0.12: on 600 rows the realised roc_auc itself has a standard error near 0.03
    assert roc["drop"] > 0.03 and abs(est["observed"] - roc["observed"]) < 0.12


def test_prediction_drift_by_effect_size_without_labels(store: dict, tmp_path: Path) -> None:
    frame = _unlabelled(make_churn(600, 13))
    frame["tenure"] = frame["tenure"] + 40  # long-tenure customers: the model's churn odds fall
    # tolerance out of reach: only the prediction's move can decide here
    cfg = _with(store["cfg"], thresholds={"tolerance": {"roc_auc": 1.0}})
    result = loop.monitor(cfg, current=_csv(tmp_path, "p.csv", frame))
    assert result.decision == "retrain" and result.rule == "prediction_drift", result.summary()
    assert result.prediction_drift["drifted"] and result.prediction_drift["score"] > 0.2
    assert result.reasons[0].startswith("prediction moved")
    quiet = _with(cfg, thresholds={"tolerance": {"roc_auc": 1.0}, "prediction_drift": False})
    assert loop.monitor(quiet, current=_csv(tmp_path, "p.csv", frame)).decision == "no_action"


def test_tolerance_must_name_a_metric_of_the_task(store: dict, tmp_path: Path) -> None:
    cfg = _with(store["cfg"], thresholds={"tolerance": {"rmse": 0.1}})
    with pytest.raises(MonitorError, match="tolerance: 'rmse' is not a binary metric"):
        loop.monitor(cfg, current=_csv(tmp_path, "t.csv", make_churn(300, 5)))


def test_quality_threshold_triggers(store: dict, tmp_path: Path) -> None:
    cfg = _with(store["cfg"], thresholds={"min_quality": {"roc_auc": 0.99}})
    result = loop.monitor(cfg, current=_csv(tmp_path, "q.csv", make_churn(600, 11)))
    assert result.decision == "retrain" and result.rule == "min_quality"
    assert result.reasons[0].startswith("roc_auc") and "below the minimum 0.99" in result.reasons[0]


def test_capture_folder_with_malformed_lines_and_ground_truth(store: dict, tmp_path: Path) -> None:
    frame = make_churn(400, 14)
    ids = write_capture(tmp_path / "cap", frame[FEATURES], T0, timedelta(seconds=30),
                        rows_per_request=2, malformed=["{broken", '{"captureData": 1}', "[]"])
    labels = frame["churn"].tolist()
    write_ground_truth(tmp_path / "gt", {eid: f"{labels[2 * i]},{labels[2 * i + 1]}"
                                         for i, eid in enumerate(ids)}, T0)  # fmt: skip
    result = loop.monitor(store["cfg"], current=str(tmp_path / "cap"), since="2026-03-01T10:00",
                          until="2026-03-01T12:00", ground_truth=str(tmp_path / "gt"))
    assert result.rows["current"] == 400 and result.rows["malformed_lines"] == 3
    assert result.rows["labelled"] == 400 and "roc_auc" in result.quality
    assert result.decision == "no_action", result.summary()
    assert {c["metric"] for c in result.performance["realised"]} == {"roc_auc", "recall"}
    tags = _run(result.monitor_run_id).data.tags
    assert tags["ctloop.malformed_lines"] == "3"
    assert tags["ctloop.window_start"] == "2026-03-01T10:00:00Z"
    # the report's classification section is there because labels were joined
    model_json = Path(result.model_report_html.removeprefix("file://")).with_suffix(".json")
    assert "RocAuc" in model_json.read_text() and "Accuracy" in model_json.read_text()


def test_data_quality_veto_and_min_rows(store: dict, tmp_path: Path) -> None:
    frame = make_churn(600, 15)
    frame.loc[frame.index[:480], "monthly_charges"] = np.nan
    frame["monthly_charges"] *= 2  # drifted too, but broken data must not retrain
    result = loop.monitor(store["cfg"], current=_csv(tmp_path, "m.csv", frame), retrain=True)
    assert result.decision == "alert"
    assert "above monitor.max_missing_share (50%): monthly_charges (8" in result.reasons[0]
    assert result.retrain == "vetoed: data-quality alert" and result.retrain_run_id is None
    assert _run(result.monitor_run_id).data.tags["ctloop.retrain"] == "vetoed"
    few = loop.monitor(store["cfg"], current=_csv(tmp_path, "few.csv", make_churn(50, 16)))
    assert few.decision == "alert" and few.reasons[0].startswith("only 50 current rows")


def test_daily_cap_blocks_retrain(store: dict, tmp_path: Path) -> None:
    frame = _flipped(make_churn(600, 12), 0.4)
    cfg = _with(store["cfg"], max_retrains_per_day=0)
    result = loop.monitor(cfg, current=_csv(tmp_path, "d.csv", frame), retrain=True)
    assert result.decision == "retrain" and result.retrain.startswith("skipped: cap reached")
    assert result.retrain_run_id is None
    assert _run(result.monitor_run_id).data.tags["ctloop.retrain"] == "skipped"


def test_bad_input(store: dict, tmp_path: Path) -> None:
    lacking = make_churn(300, 17).drop(columns=["internet"])
    with pytest.raises(MonitorError, match="lacks feature column 'internet'"):
        loop.monitor(store["cfg"], current=_csv(tmp_path, "s.csv", lacking))
    write_capture(tmp_path / "cap", make_churn(20, 18)[FEATURES], T0, timedelta(minutes=1))
    empty = loop.monitor(store["cfg"], current=str(tmp_path / "cap"), since="2027-01-01")
    assert empty.decision == "no_data" and empty.rows["current"] == 0
    assert empty.rows["outside_window"] == 0  # its hour folders were never opened
    with pytest.raises(MonitorError, match="not before"):
        loop.monitor(store["cfg"], current=str(tmp_path / "cap"), since="2026-03-02",
                     until="2026-03-01")  # fmt: skip
    with pytest.raises(MonitorError, match="not found"):
        loop.monitor(store["cfg"], current=str(tmp_path / "missing"))


def test_every_runs_on_a_schedule(store: dict, tmp_path: Path) -> None:
    path = _csv(tmp_path, "e.csv", make_churn(300, 19))
    seen, sleeps = [], []
    runs = loop.monitor_every(store["cfg"], 600, lambda r, e: seen.append((r, e)), current=path,
                              max_runs=2, sleep=sleeps.append)  # fmt: skip
    assert runs == 2 and [e for _, e in seen] == [None, None]
    assert len({r.monitor_run_id for r, _ in seen}) == 2 and len(sleeps) == 1
    assert 0 < sleeps[0] <= 600


@pytest.mark.slow
def test_cli_exit_codes_and_summary_line(store: dict, tmp_path: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": store["uri"]}
    ctloop = [sys.executable, "-m", "ctloop", "monitor", "--config", str(store["config"])]
    shifted = make_churn(600, 12)
    shifted["monthly_charges"] *= 1.6
    shifted["contract"] = "two-year"
    harmed = _flipped(shifted, 0.4)
    done = subprocess.run([*ctloop, "--current", _csv(tmp_path, "c.csv", harmed)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 4, done.stderr  # retrain warranted
    line = done.stdout.strip()
    assert line.count("\n") == 0 and line.startswith("RETRAIN (labelled_drop")
    assert "champion v1 | rows 600" in line and "roc_auc" in line
    assert "drifted: monthly_charges,contract" in line  # the explanation, named
    calm = subprocess.run([*ctloop, "--current", _csv(tmp_path, "k.csv", make_churn(600, 11))],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert calm.returncode == 0, calm.stdout  # no action
    assert calm.stdout.startswith("NO_ACTION | champion v1")
    bad = subprocess.run([*ctloop, "--current", _csv(tmp_path, "b.csv", shifted.drop(
        columns=["tenure"]))], env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("error:") and "'tenure'" in bad.stderr
    assert "Traceback" not in bad.stderr
    write_capture(tmp_path / "cap", make_churn(20, 18)[FEATURES], T0, timedelta(minutes=1))
    empty = subprocess.run([*ctloop, "--current", str(tmp_path / "cap"), "--since", "2027-01-01"],
                           env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert empty.returncode == 6 and empty.stdout.startswith("NO_DATA")


# --- multiclass (penguins) and regression (diabetes) champions ------------------------------

def _deliveries(rows: int, seed: int, west: float = 0.1) -> pd.DataFrame:
    """Delivery minutes: the mean follows distance, the noise is four times larger in the
    west (a share `west` of the rows). A champion is as good as the noise lets it be, so
    where the traffic lies decides its error, not what it learnt."""
    rng = np.random.default_rng(seed)
    region = np.where(rng.random(rows) < west, "west",
                      rng.choice(["north", "south", "east"], rows))
    distance = rng.uniform(1, 50, rows).round(1)
    noise = np.where(region == "west", 12.0, 3.0) * rng.standard_normal(rows)
    return pd.DataFrame({"distance": distance, "region": region,
                         "weekday": rng.integers(0, 7, rows),
                         "minutes": (10 + 2 * distance + noise).round(1)})


@pytest.fixture(scope="module")
def delivery_store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A regression champion with a holdout large enough (600 rows) to learn its loss from."""
    folder = tmp_path_factory.mktemp("deliveries")
    _deliveries(4000, 0).to_csv(folder / "deliveries.csv", index=False)
    config = write_config(folder, {"name": "deliveries", "training": SMALL_TRAINING,
                                   "data": {"source": "deliveries.csv", "target": "minutes"}})
    with store_in(folder) as uri:
        loop.run(load_config(config))
    return {"uri": uri, "dir": folder, "config": config}


def test_regression_estimated_drop_without_labels(delivery_store: dict, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Traffic moves to the region where the champion errs most: no labels, yet the loss
    model learnt on its holdout sees the rmse the labels would show; calm traffic does not."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", delivery_store["uri"])
    monkeypatch.chdir(delivery_store["dir"])
    tracking.configure()
    cfg = load_config(delivery_store["config"])
    calm = loop.monitor(cfg, current=_csv(tmp_path, "calm.csv",
                                          _deliveries(1000, 1).drop(columns="minutes")))
    assert calm.decision == "no_action", calm.summary()
    [rmse] = calm.performance["estimated"]
    assert rmse["metric"] == "rmse" and abs(rmse["drop"]) < 0.1
    west = _deliveries(1000, 2, west=0.8)
    shifted = loop.monitor(cfg, current=_csv(tmp_path, "west.csv", west.drop(columns="minutes")))
    assert shifted.decision == "retrain" and shifted.rule == "estimated_drop", shifted.summary()
    assert shifted.reasons[0].startswith("rmse ") and "(estimated)" in shifted.reasons[0]
    assert _run(shifted.monitor_run_id).data.metrics["estimated_drop.rmse"] > 0.5
    # the labels, once they arrive, confirm it
    labelled = loop.monitor(cfg, current=_csv(tmp_path, "westl.csv", west))
    [realised] = labelled.performance["realised"]
    assert labelled.rule == "labelled_drop" and realised["drop"] > 0.5
    [estimated] = shifted.performance["estimated"]
    assert estimated["observed"] == pytest.approx(realised["observed"], rel=0.15)


TASK_DATA = {
    # kind: (name, target, numeric columns to shift, categorical column to make dominant)
    "multiclass": ("penguins", "species", ["bill_length_mm", "flipper_length_mm"], "island"),
    "regression": ("diabetes", "target", ["bmi", "bp", "s5"], None),
}


@pytest.fixture(scope="module", params=list(TASK_DATA))
def task_champion(request: pytest.FixtureRequest, public_champion) -> dict:
    """A champion of the task trained on a whole small public table, in its own store
    (shared with the end-to-end tests)."""
    kind = request.param
    return {**public_champion(TASK_DATA[kind][0]), "kind": kind}


@pytest.fixture
def task_store(task_champion: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", task_champion["uri"])
    monkeypatch.chdir(task_champion["dir"])
    tracking.configure()
    cfg = load_config(task_champion["config"])
    from ctloop.monitor.reference import load_champion

    return {**task_champion, "cfg": cfg, "model": load_champion(cfg)[1]}


def _resampled(table: pd.DataFrame, seed: int, rows: int = 400) -> pd.DataFrame:
    """Rows drawn from the same table: the same distribution as the champion's training rows."""
    return table.sample(n=rows, replace=True, random_state=seed).reset_index(drop=True)


def _shifted(kind: str, frame: pd.DataFrame) -> pd.DataFrame:
    _, _, numeric, categorical = TASK_DATA[kind]
    out = frame.copy()
    for column in numeric:
        out[column] = out[column] + 1.5 * out[column].std()
    if categorical:
        out[categorical] = np.where(np.arange(len(out)) % 10 < 9, "Dream", out[categorical])
    return out


def _shifted_columns(kind: str) -> set[str]:
    _, _, numeric, categorical = TASK_DATA[kind]
    return {*numeric, *([categorical] if categorical else [])}


def test_task_same_distribution_no_drift_with_the_tasks_quality(task_store: dict,
                                                                tmp_path: Path) -> None:
    kind, model = task_store["kind"], task_store["model"]
    assert model.task.kind == kind
    result = loop.monitor(task_store["cfg"],
                          current=_csv(tmp_path, "same.csv", _resampled(task_store["table"], 1)))
    assert result.decision == "no_action", result.summary()
    assert result.task == kind and result.rows["current"] == 400
    assert not result.prediction_drift["drifted"]
    assert result.prediction_drift["method"] == ("jensenshannon" if kind == "multiclass"
                                                 else "wasserstein_normed")
    primary = "log_loss" if kind == "multiclass" else "rmse"
    assert {c["metric"] for c in result.performance["realised"]} >= {primary}
    # CBPE for classification; a regression loss model needs a larger holdout than diabetes'
    assert bool(result.performance["estimated"]) == (kind == "multiclass")
    assert set(result.quality) == set(model.task.metric_names)  # labels came with the file
    assert result.rows["labelled"] == 400
    if kind == "multiclass":
        assert result.quality["accuracy"] > 0.9
    else:
        assert result.quality["r2"] > 0.2 and result.quality["rmse"] > 0
    assert result.target_drift is not None and not result.target_drift["drifted"]
    assert "target ok" in result.summary()
    run = _run(result.monitor_run_id)
    assert run.data.tags["ctloop.task"] == kind
    metric = "quality.accuracy" if kind == "multiclass" else "quality.rmse"
    assert metric in run.data.metrics and "target_drift_score" in run.data.metrics
    model_json = Path(result.model_report_html.removeprefix("file://")).with_suffix(".json")
    text = model_json.read_text()
    if kind == "multiclass":  # ClassificationPreset on the predicted class and probabilities
        assert "Accuracy" in text and "F1ByLabel" in text and "LogLoss" in text
    else:  # RegressionPreset
        assert "RMSE" in text and "R2Score" in text and "MeanError" in text


def test_task_shifted_file_drifts_naming_the_columns(task_store: dict, tmp_path: Path) -> None:
    kind = task_store["kind"]
    frame = _shifted(kind, _resampled(task_store["table"], 1))
    result = loop.monitor(task_store["cfg"], current=_csv(tmp_path, "shift.csv", frame))
    # the labels did not move with the features: the champion is wrong there, and they say so
    assert result.decision == "retrain" and result.rule.startswith("labelled_drop"), \
        result.summary()
    assert set(result.drifted_columns) == _shifted_columns(kind)
    note = next(r for r in result.reasons if "features drifted" in r)
    assert all(c in note for c in _shifted_columns(kind))
    assert set(result.quality) == set(task_store["model"].task.metric_names)


def test_task_capture_uses_served_outputs_and_ground_truth(task_store: dict,
                                                           tmp_path: Path) -> None:
    """The capture's served outputs are what is judged: here they are skewed on purpose
    (same features), so only the prediction drifts; ground truth gives the task's quality."""
    kind, model, target = task_store["kind"], task_store["model"], task_store["target"]
    frame = _resampled(task_store["table"], 2, rows=300)
    features = list(model.feature_columns)
    scores = model.scores(frame[features])
    honest = model.task.output_records(scores)
    if kind == "multiclass":  # every row served as the first class
        skewed_scores = np.tile([0.98, 0.01, 0.01], (len(frame), 1))
    else:
        skewed_scores = scores + 3 * scores.std()
    skewed = model.task.output_records(skewed_scores)
    ids = write_capture(tmp_path / "honest", frame[features], T0, timedelta(seconds=30),
                        rows_per_request=3, records=honest)  # fmt: skip
    write_capture(tmp_path / "skewed", frame[features], T0, timedelta(seconds=30),
                  rows_per_request=3, records=skewed, malformed=["{broken"])  # fmt: skip
    labels = frame[target].astype(str).tolist()
    write_ground_truth(tmp_path / "gt", {eid: ",".join(labels[3 * i:3 * i + 3])
                                         for i, eid in enumerate(ids)}, T0)  # fmt: skip
    window = {"since": "2026-03-01T10:00", "until": "2026-03-02T00:00",
              "ground_truth": str(tmp_path / "gt")}
    fine = loop.monitor(task_store["cfg"], current=str(tmp_path / "honest"), **window)
    assert fine.decision == "no_action", fine.summary()
    assert fine.rows["labelled"] == 300 and set(fine.quality) == set(model.task.metric_names)
    skew = loop.monitor(task_store["cfg"], current=str(tmp_path / "skewed"), **window)
    assert skew.rows["malformed_lines"] == 1 and skew.rows["current"] == 300
    # the same features as the honest capture (so the same per-column verdicts, below the
    # share): the served outputs alone made the decision
    assert skew.drifted_columns == fine.drifted_columns and skew.drift_share < 0.3
    assert skew.decision == "retrain" and skew.rule.startswith("labelled_drop"), skew.summary()
    assert not fine.prediction_drift["drifted"] and skew.prediction_drift["drifted"]
    # quality is measured on the served outputs too
    if kind == "multiclass":
        assert skew.quality["accuracy"] < fine.quality["accuracy"]
    else:
        assert skew.quality["rmse"] > fine.quality["rmse"]


def test_task_min_quality_must_name_a_metric_of_the_task(task_store: dict,
                                                         tmp_path: Path) -> None:
    kind, task = task_store["kind"], task_store["model"].task
    path = _csv(tmp_path, "q.csv", _resampled(task_store["table"], 3))
    wrong = "f1" if kind == "multiclass" else "roc_auc"
    cfg = _with(task_store["cfg"], thresholds={"min_quality": {wrong: 0.5}})
    with pytest.raises(MonitorError, match=f"min_quality.{wrong}: '{wrong}' is not a {kind} "
                       f"metric .*choose from {', '.join(task.metric_names)}"):  # fmt: skip
        loop.monitor(cfg, current=path)
    # a ceiling for a lower-is-better metric of the task, a floor otherwise
    bound = {"log_loss": 0.0001} if kind == "multiclass" else {"rmse": 1.0, "r2": 0.99}
    result = loop.monitor(_with(task_store["cfg"], thresholds={"min_quality": bound}),
                          current=path)  # fmt: skip
    assert result.decision == "retrain" and result.rule == "min_quality", result.summary()
    name = next(iter(bound))
    assert result.reasons[0].startswith(name) and "above the maximum" in result.reasons[0]
    if kind == "regression":
        assert "r2" in result.reasons[1] and "below the minimum 0.99" in result.reasons[1]
