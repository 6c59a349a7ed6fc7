"""Every task through the whole loop, on real public tables, as a new user would try it.

A four-line config (name, source, target; a positive label where the labels need one) on
tables that ship with Python packages: penguin species (multiclass, `palmerpenguins`), the
diabetes progression score (regression, scikit-learn), and NYC flights as they come in the raw
CSV (binary, with integer, boolean, date and ID columns). Each goes through `ctloop run`,
`ctloop serve` (the same predictions as `mlflow models serve`), `ctloop predict`, `ctloop
monitor` on a same-distribution and a shifted file, and `ctloop status`; and the plain MLflow
call `pyfunc.load_model(...).predict(pd.read_csv(...))` works with no casting, whatever dtypes
pandas gave the frame.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest

from ctloop import loop
from ctloop.config import load_config
from tests.conftest import store_in
from tests.integration.serve_support import Server, free_port

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    name: str  # a table of tests/support/public_tables.py
    target: str
    shifted_column: str
    outputs: tuple[str, ...]


CASES = [
    Case("penguins", "species", "bill_length_mm",
         ("probability_Adelie", "probability_Chinstrap", "probability_Gentoo", "label")),
    Case("diabetes", "target", "bmi", ("prediction",)),
    Case("flights-raw", "late", "distance", ("probability", "label")),
]


def shift(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """The same rows with one column moved by two standard deviations."""
    values = frame[column]
    return frame.assign(**{column: values + 2 * values.std()})


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def trained(request, public_champion):
    case: Case = request.param
    champion = public_champion(case.name)
    with store_in(champion["dir"]):
        yield {"case": case, "folder": champion["dir"], **champion}


def test_training_says_which_task_and_what_it_did_with_each_column(trained):
    case, result = trained["case"], trained["result"]
    expected = {"penguins": "multiclass", "diabetes": "regression", "flights-raw": "binary"}
    assert result.task.startswith(expected[case.name]) and "inferred" in result.task_reason
    run = mlflow.get_run(result.run_id)
    assert run.data.tags["ctloop.task"] == expected[case.name]
    assert run.data.params["task"] == expected[case.name]
    # The MLflow UI opens on model development (not its GenAI overview), and the version page
    # starts with the decision.
    experiment = mlflow.get_experiment_by_name(case.name)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    version = mlflow.MlflowClient().get_model_version(case.name, "1")
    assert version.description.startswith(f"# {case.name} v1: PROMOTED")
    if case.name == "flights-raw":
        kinds = dict(pair.split(":") for pair in run.data.tags["ctloop.feature_kinds"].split(", "))
        assert kinds["time_hour"] == "datetime" and kinds["overnight"] == "boolean"
        assert kinds["flight"] == "numeric" and kinds["carrier"] == "categorical"
        assert "row_id" in result.excluded and "row_id" in run.data.tags[
            "ctloop.excluded_columns"]


def test_pyfunc_predicts_a_csv_as_read_with_no_casting(trained):
    case, folder = trained["case"], trained["folder"]
    frame = pd.read_csv(folder / "table.csv").drop(columns=[case.target])
    assert (frame.dtypes == "int64").any()  # the case MLflow's double signature refused
    with store_in(folder):
        model = mlflow.pyfunc.load_model(f"models:/{case.name}@champion")
        out = model.predict(frame)
    assert tuple(out.columns) == case.outputs and len(out) == len(frame)
    if "label" in out:
        assert set(out["label"]) <= set(trained["table"][case.target].unique())



def test_pyfunc_takes_the_frame_however_pandas_typed_it(trained, tmp_path):
    """Category columns, pyarrow-backed and nullable dtypes give the same predictions; a text
    column that is empty in a small file (read as float64) is missing, not refused."""
    case, folder = trained["case"], trained["folder"]
    csv = folder / "table.csv"
    frame = pd.read_csv(csv).drop(columns=[case.target]).head(200)
    text = [c for c in frame.columns if frame[c].dtype == object]
    blank = text[0] if text else None  # no text column in diabetes: the other variants hold
    as_objects = frame.astype(object).where(frame.notna(), None)
    few = frame.head(5).assign(**({blank: None} if blank else {}))
    few.to_csv(tmp_path / "few.csv", index=False)
    with store_in(folder):
        model = mlflow.pyfunc.load_model(f"models:/{case.name}@champion")
        expected = model.predict(as_objects)
        variants = {
            "category": frame.astype(dict.fromkeys(text, "category")),
            "pyarrow": pd.read_csv(csv, dtype_backend="pyarrow").drop(
                columns=[case.target]).head(200),
            "nullable": frame.convert_dtypes(),
        }
        for name, variant in variants.items():
            pd.testing.assert_frame_equal(model.predict(variant), expected, obj=name)
        empty_text = pd.read_csv(tmp_path / "few.csv")
        if blank:
            assert empty_text[blank].dtype == "float64"
        pd.testing.assert_frame_equal(model.predict(empty_text),
                                      model.predict(few.astype(object).where(few.notna(), None)))

def test_ctloop_serve_answers_like_mlflow_models_serve(trained):
    case, folder = trained["case"], trained["folder"]
    rows = pd.read_csv(folder / "table.csv").drop(columns=[case.target]).head(20)
    rows = rows.astype(object).where(rows.notna(), None)
    body = json.dumps({"dataframe_split": {"columns": list(rows.columns),
                                           "data": rows.values.tolist()}}).encode()
    server = Server(trained["config"], trained["uri"], folder).wait_ready()
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    mlflow_serve = subprocess.Popen(
        [str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", f"models:/{case.name}@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=folder, env={**os.environ, "MLFLOW_TRACKING_URI": trained["uri"],
                         "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        ours = httpx.post(f"{server.url}/invocations", content=body,
                          headers={"Content-Type": "application/json"}).json()
        theirs = _post_when_up(f"http://127.0.0.1:{port}", body)
    finally:
        server.stop()
        os.killpg(mlflow_serve.pid, 15)
        mlflow_serve.wait(timeout=30)
    ours_frame, theirs_frame = (pd.DataFrame(x["predictions"]) for x in (ours, theirs))
    assert tuple(ours_frame.columns) == case.outputs
    pd.testing.assert_frame_equal(ours_frame, theirs_frame[list(ours_frame.columns)],
                                  check_dtype=False, rtol=1e-6)


def _post_when_up(url: str, body: bytes, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                answer = httpx.post(f"{url}/invocations", content=body, timeout=30,
                                    headers={"Content-Type": "application/json"})
                assert answer.status_code == 200, answer.text
                return answer.json()
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError("mlflow models serve did not start")


def test_predict_monitor_and_status(trained):
    case, folder = trained["case"], trained["folder"]
    cfg = load_config(trained["config"])
    table = pd.read_csv(folder / "table.csv")
    table.drop(columns=[case.target]).to_csv(folder / "new.csv", index=False)
    shift(table, case.shifted_column).to_csv(folder / "shifted.csv", index=False)
    with store_in(folder):
        scored = loop.predict_file(cfg, str(folder / "new.csv"), str(folder / "scored.csv"))
        out = pd.read_csv(folder / "scored.csv")
        assert scored["rows"] == len(table) and set(case.outputs) <= set(out.columns)

        calm = loop.monitor(cfg, current=str(folder / "table.csv"))
        moved = loop.monitor(cfg, current=str(folder / "shifted.csv"))
        report = loop.status(cfg)
    assert calm.decision == "no_action", calm.summary()
    assert calm.quality  # labels are in the file: the task's own metrics
    # the moved column is named; the decision follows the labels' verdict on harm
    assert case.shifted_column in moved.drifted_columns
    assert any(case.shifted_column in r for r in moved.reasons)
    harmed = any(c["harmful"] for c in moved.performance["realised"])
    assert (moved.decision == "retrain") == harmed, moved.summary()
    assert report["champion"]["version"] == 1
    assert report["champion"]["task"] == mlflow.get_run(
        trained["result"].run_id).data.tags["ctloop.task"]
    assert report["last_monitor"]["run_id"] == moved.monitor_run_id
