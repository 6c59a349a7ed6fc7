"""ctloop against a real team tracking server: PostgreSQL rows, S3 objects, basic auth.

The stack is `scripts/team_server.py` (what deploy/docker-compose.yml runs, without Docker).
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import httpx
import pandas as pd
import psycopg2
import pytest

from ctloop.config import load_config
from ctloop.data import load_dataset
from tests.integration.serve_support import Server
from tests.integration.team.conftest import FLIGHTS, WINDOW, ctloop, user_env

pytestmark = pytest.mark.slow

NAME = "flights-delay"  # `name` in configs/flights.yaml


def _sql(stack, query: str, *args) -> list[tuple]:
    with psycopg2.connect(stack.libpq_dsn("mlflow")) as conn, conn.cursor() as cur:
        cur.execute(query, args)
        return cur.fetchall()


def _bucket_keys(stack, team_server, prefix: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name="us-east-1",
                      aws_access_key_id="moto-key", aws_secret_access_key="moto-secret")
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=team_server.BUCKET,
                                                             Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


def _experiment(stack, name: str) -> tuple[str, str]:
    rows = _sql(stack, "SELECT experiment_id, artifact_location FROM experiments WHERE name = %s",
                name)
    assert rows, f"experiment {name!r} is not in PostgreSQL"
    return str(rows[0][0]), rows[0][1]


def test_anonymous_and_wrong_credentials_are_refused(team_stack) -> None:
    api = f"{team_stack.tracking_uri}/api/2.0/mlflow"
    assert httpx.get(f"{api}/experiments/search", params={"max_results": 1}).status_code == 401
    created = httpx.post(f"{api}/experiments/create", json={"name": "anonymous-write"})
    assert created.status_code == 401
    wrong = httpx.post(f"{api}/experiments/create", json={"name": "wrong-password"},
                       auth=(team_stack.client_env()["MLFLOW_TRACKING_USERNAME"], "not-it"))
    assert wrong.status_code == 401
    assert not _sql(team_stack, "SELECT name FROM experiments WHERE name IN (%s, %s)",
                    "anonymous-write", "wrong-password")


def test_ctloop_without_credentials_fails_clearly(team_stack, tmp_path: Path) -> None:
    env = user_env(team_stack)
    env.pop("MLFLOW_TRACKING_PASSWORD")
    env.pop("MLFLOW_TRACKING_USERNAME")
    done = ctloop(["status", "--config", str(FLIGHTS)], env, tmp_path, timeout=300)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "401" in done.stderr or "nauthori" in done.stderr, done.stderr


def test_run_lands_in_postgres_and_the_bucket(team_stack, team_server, team_champion) -> None:
    experiment_id, location = _experiment(team_stack, NAME)
    assert location.startswith("mlflow-artifacts:"), location  # proxied through the server

    kinds = dict(_sql(team_stack, """
        SELECT t.value, count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid
        WHERE r.experiment_id = %s AND t.key = 'ctloop.kind' AND r.status = 'FINISHED'
        GROUP BY t.value""", int(experiment_id)))
    training = load_config(FLIGHTS).training
    assert kinds["training"] == 1 and kinds["gate"] == 1
    assert 1 <= kinds["trial"] <= training.trials  # the time budget may stop the search first
    window = dict(_sql(team_stack, """
        SELECT t.key, t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid
        WHERE r.experiment_id = %s AND t.key IN ('ctloop.window_start', 'ctloop.window_end')
          AND r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = 'ctloop.kind'
                             AND value = 'training')""", int(experiment_id)))
    assert window == {"ctloop.window_start": WINDOW[0], "ctloop.window_end": WINDOW[1]}

    assert _sql(team_stack, "SELECT name FROM registered_models WHERE name = %s", NAME)
    aliases = dict(_sql(team_stack, "SELECT alias, version FROM registered_model_aliases "
                                    "WHERE name = %s", NAME))
    assert aliases.get("champion") == 1
    stage = _sql(team_stack, "SELECT current_stage FROM model_versions WHERE name = %s AND "
                             "version = 1", NAME)
    assert stage == [("Production",)]

    keys = _bucket_keys(team_stack, team_server, f"mlflow/{experiment_id}/")
    assert any(k.endswith("reference/train.parquet") for k in keys), keys[:20]
    assert any(k.endswith("evaluation/holdout.parquet") for k in keys)
    # A pyfunc model for the best `logged_models` trials only (and the registered version).
    assert sum(k.endswith("/MLmodel") for k in keys) >= min(training.logged_models,
                                                             kinds["trial"])
    # Nothing fell back to a local artifact store in the working directory.
    assert not (team_champion["cwd"] / "mlruns").exists()
    assert not (team_champion["cwd"] / "mlartifacts").exists()


def test_a_reader_cannot_write_to_the_teams_experiment(team_stack, team_champion) -> None:
    api = f"{team_stack.tracking_uri}/api/2.0/mlflow"
    admin = (team_stack.client_env()["MLFLOW_TRACKING_USERNAME"],
             team_stack.client_env()["MLFLOW_TRACKING_PASSWORD"])
    created = httpx.post(f"{api}/users/create", auth=admin,
                         json={"username": "reader", "password": "reader-password-1"})
    assert created.status_code == 200, created.text
    reader = ("reader", "reader-password-1")
    experiment_id, _ = _experiment(team_stack, NAME)
    # default_permission = READ: the reader sees the team's runs ...
    seen = httpx.post(f"{api}/runs/search", auth=reader,
                      json={"experiment_ids": [experiment_id], "max_results": 1})
    assert seen.status_code == 200 and seen.json()["runs"]
    # ... but cannot add one, nor move the champion alias.
    write = httpx.post(f"{api}/runs/create", auth=reader, json={"experiment_id": experiment_id})
    assert write.status_code == 403
    alias = httpx.post(f"{api}/registered-models/alias", auth=reader,
                       json={"name": NAME, "alias": "champion", "version": "1"})
    assert alias.status_code == 403


def _rows(start: str, end: str, n: int) -> pd.DataFrame:
    cfg = load_config(FLIGHTS).with_window(start, end)
    dataset = load_dataset(cfg.data)
    return dataset.frame[list(dataset.feature_columns)].head(n)


def test_serve_loads_the_champion_through_the_server(team_stack, team_champion,
                                                     tmp_path: Path) -> None:
    env = user_env(team_stack, CTLOOP_TOKEN="team-token-123")
    server = Server(FLIGHTS, team_stack.tracking_uri, tmp_path, workers=1, env=env)
    try:
        server.wait_ready(timeout=240)
        frame = _rows("2013-01-22", "2013-01-29", 25)
        body = {"dataframe_split": frame.to_dict(orient="split")}
        body["dataframe_split"].pop("index")
        payload = json.dumps(body, default=str)
        headers = {"Content-Type": "application/json"}
        anonymous = httpx.post(f"{server.url}/invocations", content=payload, headers=headers)
        assert anonymous.status_code == 401
        scored = httpx.post(f"{server.url}/invocations", content=payload, timeout=60,
                            headers={**headers, "Authorization": "Bearer team-token-123"})
        assert scored.status_code == 200, scored.text
        predictions = scored.json()["predictions"]
        assert len(predictions) == len(frame)
        assert all(0.0 <= p["probability"] <= 1.0 for p in predictions)
    finally:
        server.stop()


def test_monitor_logs_to_the_team_server(team_stack, team_server, team_champion,
                                         tmp_path: Path) -> None:
    current = tmp_path / "february.parquet"
    cfg = load_config(FLIGHTS).with_window("2013-02-01", "2013-02-08")
    dataset = load_dataset(cfg.data)
    dataset.frame.to_parquet(current, index=False)
    done = ctloop(["monitor", "--config", str(FLIGHTS), "--current", str(current)],
                  user_env(team_stack), tmp_path)
    assert done.returncode in (0, 4), done.stderr[-3000:]  # no drift / drift, not an error
    experiment_id, _ = _experiment(team_stack, f"{NAME}-monitoring")
    runs = _sql(team_stack, "SELECT run_uuid, status FROM runs WHERE experiment_id = %s",
                int(experiment_id))
    assert len(runs) == 1 and runs[0][1] == "FINISHED"
    keys = _bucket_keys(team_stack, team_server, f"mlflow/{experiment_id}/{runs[0][0]}/")
    assert keys, "the monitor run logged no artifacts to the bucket"


def test_the_team_password_is_recorded_nowhere(team_stack, team_server, team_champion) -> None:
    """The password authenticates every request but lands in no row, object or output."""
    password = team_stack.client_env()["MLFLOW_TRACKING_PASSWORD"]
    text_columns = _sql(team_stack, """
        SELECT table_name, column_name FROM information_schema.columns
        WHERE table_schema = 'public' AND data_type IN ('text', 'character varying')""")
    assert ("params", "value") in text_columns and ("tags", "value") in text_columns
    for table, column in text_columns:
        hits = _sql(team_stack, f'SELECT count(*) FROM "{table}" WHERE "{column}" LIKE %s',
                    f"%{password}%")
        assert hits == [(0,)], f"password found in {table}.{column}"
    s3 = boto3.client("s3", endpoint_url=team_stack.s3_endpoint, region_name="us-east-1",
                      aws_access_key_id="moto-key", aws_secret_access_key="moto-secret")
    keys = _bucket_keys(team_stack, team_server, "")
    assert keys
    for key in keys:
        body = s3.get_object(Bucket=team_server.BUCKET, Key=key)["Body"].read()
        assert password.encode() not in body, f"password in s3://{team_server.BUCKET}/{key}"
    assert password not in team_champion["stdout"] + team_champion["stderr"]
