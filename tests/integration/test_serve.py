"""`ctloop serve` end to end: a real uvicorn process scoring the registered churn champion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.integration.serve_support import Server, serve_config
from tests.unit.serve.test_protocol import COLUMNS, MALFORMED, MALFORMED_CSV, PAYLOADS, ROWS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(champion_store: dict, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("serve")
    config = serve_config(champion_store, folder, max_body_bytes=64 * 1024)
    running = Server(config, champion_store["uri"], folder).wait_ready()
    running.folder = folder
    yield running
    running.stop()


def _champion_probabilities(store: dict) -> list[float]:
    """What the registered model itself says for ROWS (loaded straight from the registry)."""
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = store["uri"]
    try:
        from ctloop import tracking

        tracking.configure()
        model = tracking.load_model(f"models:/{store['name']}@champion")
        return model.predict(pd.DataFrame(ROWS, columns=COLUMNS))["probability"].tolist()
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old


def test_every_mlflow_payload_format_returns_the_models_predictions(server, champion_store):
    expected = _champion_probabilities(champion_store)
    for name, (mime, body) in PAYLOADS.items():
        response = httpx.post(f"{server.url}/invocations", content=body,
                              headers={"Content-Type": mime})  # fmt: skip
        assert response.status_code == 200, (name, response.text)
        predictions = response.json()["predictions"]
        assert [p["probability"] for p in predictions] == pytest.approx(expected, abs=1e-12), name
        assert all(p["label"] in ("Yes", "No") for p in predictions)
        assert response.headers["x-event-id"] and response.headers["x-model-version"] == "1"


def test_version_and_health_name_the_serving_model(server, champion_store):
    version = httpx.get(f"{server.url}/version").json()
    assert version["name"] == champion_store["name"] and version["version"] == 1
    assert version["run_id"] and version["loaded_at"].endswith("Z")
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["model"]["version"] == 1


def test_malformed_requests_get_4xx_and_the_server_stays_healthy(server):
    before = httpx.get(f"{server.url}/health").json()["scored_rows"]
    cases = [("POST", "/invocations", "application/json", body) for body, _ in MALFORMED]
    cases += [("POST", "/invocations", "text/csv", body) for body, _ in MALFORMED_CSV]
    valid = PAYLOADS["dataframe_split"][1]
    cases += [
        ("POST", "/invocations", "text/plain", valid),  # 415
        ("POST", "/invocations", "application/json; format=pandas-split", valid),  # 415
        ("POST", "/invocations", None, valid),  # 415
        ("POST", "/invocations", "application/json", b" " * (65 * 1024)),  # 413
        ("POST", "/invocations", "text/csv", b"a" * (200 * 1024)),  # 413
        ("GET", "/invocations", None, b""),  # 405
        ("PUT", "/ping", None, b""),  # 405
        ("GET", "/predict", None, b""),  # 404
        ("POST", "/", "application/json", valid),  # 404
        ("POST", "/invocations", "application/vnd.apache.parquet", b"PAR1garbage"),  # 400
    ]  # fmt: skip
    assert len(cases) >= 60
    with httpx.Client(base_url=server.url) as client:
        for method, path, mime, body in cases:
            headers = {"Content-Type": mime} if mime else {}
            response = client.request(method, path, content=body, headers=headers)
            assert 400 <= response.status_code < 500, (path, body[:80], response.status_code)
            error = response.json()
            assert error["error_code"] and len(error["message"]) > 10, error
    statuses = {httpx.request(m, f"{server.url}{p}", content=b, headers={"Content-Type": t}
                              if t else {}).status_code for m, p, t, b in cases[-10:]}  # fmt: skip
    assert statuses == {400, 404, 405, 413, 415}
    assert httpx.get(f"{server.url}/ping").status_code == 200
    assert httpx.get(f"{server.url}/health").json()["scored_rows"] == before
    response = httpx.post(f"{server.url}/invocations", content=valid,
                          headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 200


def _capture_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.rglob("*.jsonl"))
            for line in path.read_text().splitlines()]  # fmt: skip


def test_capture_holds_every_scored_row_with_its_event_id(server):
    sent: dict[str, int] = {}
    with httpx.Client(base_url=server.url) as client:
        for i in range(30):
            rows = ROWS * (i % 3 + 1)
            body = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": rows}})
            response = client.post("/invocations", content=body,
                                   headers={"Content-Type": "application/json"})  # fmt: skip
            sent[response.headers["x-event-id"]] = len(rows)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = {line["eventMetadata"]["eventId"]: line for line in
                 _capture_lines(server.folder / "capture")}  # fmt: skip
        if set(sent) <= set(lines):
            break
        time.sleep(0.2)
    assert set(sent) <= set(lines)
    for event_id, rows in sent.items():
        line = lines[event_id]
        request = json.loads(line["captureData"]["endpointInput"]["data"])
        response = json.loads(line["captureData"]["endpointOutput"]["data"])
        assert len(request["dataframe_split"]["data"]) == rows == len(response["predictions"])
        assert line["captureData"]["endpointInput"]["observedContentType"] == "application/json"
        assert line["eventMetadata"]["modelVersion"] == "1"
        assert line["eventMetadata"]["inferenceTime"].endswith("Z")
    # files sit in SageMaker's <endpoint>/<variant>/yyyy/mm/dd/hh/ layout
    path = next((server.folder / "capture").rglob("*.jsonl"))
    parts = path.relative_to(server.folder / "capture").parts
    assert parts[0] == "churn-served" and len(parts) == 7 and len(parts[2]) == 4


def test_capture_is_flushed_on_shutdown(champion_store, tmp_path):
    config = serve_config(champion_store, tmp_path, capture={"flush_seconds": 3600})
    server = Server(config, champion_store["uri"], tmp_path).wait_ready()
    ids = []
    for _ in range(25):
        response = httpx.post(f"{server.url}/invocations", content=PAYLOADS["csv"][1],
                              headers={"Content-Type": "text/csv"})  # fmt: skip
        ids.append(response.headers["x-event-id"])
    assert _capture_lines(tmp_path / "capture") == []  # nothing written yet: timer is 1 h
    assert server.stop() in (0, -15)  # uvicorn re-raises SIGTERM after a graceful shutdown
    lines = _capture_lines(tmp_path / "capture")
    assert [line["eventMetadata"]["eventId"] for line in lines] == ids
    assert all(line["captureData"]["endpointInput"]["encoding"] == "CSV" for line in lines)


def test_bearer_token_is_required_when_set(champion_store, tmp_path):
    config = serve_config(champion_store, tmp_path)
    server = Server(config, champion_store["uri"], tmp_path,
                    env={"CTLOOP_TOKEN": "s3cret"}).wait_ready()  # fmt: skip
    try:
        body, headers = PAYLOADS["dataframe_split"][1], {"Content-Type": "application/json"}
        assert httpx.get(f"{server.url}/ping").status_code == 200
        for path in ("/version", "/health"):
            assert httpx.get(f"{server.url}{path}").status_code == 401
        missing = httpx.post(f"{server.url}/invocations", content=body, headers=headers)
        wrong = httpx.post(f"{server.url}/invocations", content=body,
                           headers={**headers, "Authorization": "Bearer nope"})  # fmt: skip
        right = httpx.post(f"{server.url}/invocations", content=body,
                           headers={**headers, "Authorization": "Bearer s3cret"})  # fmt: skip
        assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
        assert missing.json()["error_code"] == "UNAUTHENTICATED"
    finally:
        server.stop()


def _ctloop(*args: str, cwd: Path, uri: str, env: dict | None = None):
    environment = {k: v for k, v in os.environ.items() if k != "CTLOOP_TOKEN"}
    environment.update({"MLFLOW_TRACKING_URI": uri, **(env or {})})
    return subprocess.run([sys.executable, "-m", "ctloop", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_refuses_a_public_bind_without_a_token(champion_store, tmp_path):
    config = serve_config(champion_store, tmp_path)
    result = _ctloop("serve", "--config", str(config), "--host", "0.0.0.0",
                     cwd=tmp_path, uri=champion_store["uri"])  # fmt: skip
    assert result.returncode == 1
    assert "CTLOOP_TOKEN" in result.stderr and "Traceback" not in result.stderr


def test_no_champion_is_a_clear_error(champion_store, tmp_path):
    config = serve_config(champion_store, tmp_path)
    body = config.read_text().replace("name: churn-served", "name: nobody-trained-me")
    config.write_text(body)
    result = _ctloop("serve", "--config", str(config), cwd=tmp_path, uri=champion_store["uri"])
    assert result.returncode == 1
    assert "no champion" in result.stderr and "Traceback" not in result.stderr
