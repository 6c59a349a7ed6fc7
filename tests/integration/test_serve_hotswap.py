"""The server follows the champion alias under load: no failed request, bad versions refused."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from ctloop import loop, registry, tracking
from ctloop.config import load_config
from tests.integration.serve_support import Server
from tests.unit.serve.test_protocol import PAYLOADS

pytestmark = pytest.mark.slow


def _register_folder(name: str, folder: Path) -> int:
    """A new version from a model folder we altered (logged as plain artifacts of a run)."""
    import mlflow

    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(folder), artifact_path="model")
    source = f"{run.info.artifact_uri}/model"
    mv = mlflow.MlflowClient().create_model_version(name, source, run_id=run.info.run_id)
    return int(mv.version)


def _broken_copies(name: str, good_version: int, tmp: Path) -> tuple[int, int]:
    """v(a): estimator file is garbage (cannot load); v(b): loads but fails its input example."""
    base = tmp / "good"
    data = tracking.download_model_dir(f"models:/{name}/{good_version}", base)
    model_root = data.parent.parent
    unloadable, unscorable = tmp / "unloadable", tmp / "unscorable"
    shutil.copytree(model_root, unloadable)
    shutil.copytree(model_root, unscorable)
    broken = unloadable / "data" / "ctloop_model"
    meta = json.loads((broken / "model.json").read_text())
    if meta.get("members"):  # an ensemble: one member's estimator is garbage
        broken /= meta["members"][0]["folder"]
        meta = json.loads((broken / "model.json").read_text())
    (broken / meta["estimator_file"]).write_bytes(b"\x00garbage")
    encoder_file = unscorable / "data" / "ctloop_model" / "encoder.json"
    encoder = json.loads(encoder_file.read_text())
    encoder["columns"].append("ghost_column")  # the logged input example does not have it
    encoder_file.write_text(json.dumps(encoder))
    return _register_folder(name, unloadable), _register_folder(name, unscorable)


class Load(threading.Thread):
    """Clients POSTing single-row requests back to back until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.ok, self.failed, self.versions = url, 0, [], set()
        self.halt = threading.Event()

    def run(self) -> None:
        mime, body = PAYLOADS["dataframe_records"]
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.halt.is_set():
                try:
                    response = client.post("/invocations", content=body,
                                           headers={"Content-Type": mime})  # fmt: skip
                except httpx.HTTPError as exc:
                    self.failed.append(repr(exc))
                    continue
                if response.status_code != 200:
                    self.failed.append(f"{response.status_code} {response.text[:200]}")
                else:
                    self.ok += 1
                    self.versions.add(response.headers["x-model-version"])


def _wait_version(url: str, version: int, timeout: float = 10.0) -> float:
    """Seconds until every worker answers /version with `version` (20 answers in a row)."""
    start = time.monotonic()
    streak = 0
    while time.monotonic() - start < timeout:
        streak = streak + 1 if httpx.get(f"{url}/version").json()["version"] == version else 0
        if streak >= 20:
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"/version did not become {version} within {timeout} s")


def test_alias_moves_under_load_swap_without_a_failed_request(mlflow_store, churn_config,
                                                               tmp_path):  # fmt: skip
    cfg = load_config(churn_config)
    result = loop.train(cfg)
    first, second = [registry.register(cfg.name, f"runs:/{t.run_id}/model", t.run_id, {}).version
                     for t in result.trials[:2]]  # fmt: skip
    registry.move_champion(cfg.name, first)
    unloadable, unscorable = _broken_copies(cfg.name, first, tmp_path)
    config = tmp_path / "serve.yaml"
    config.write_text(churn_config.read_text() + "serve:\n  poll_seconds: 0.5\n  capture:\n"
                      f"    directory: {tmp_path / 'capture'}\n")  # fmt: skip
    server = Server(config, mlflow_store, tmp_path, workers=2).wait_ready()
    load = Load(server.url)
    load.start()
    try:
        time.sleep(1)
        swaps = []
        for version in (second, first, second):  # three promotions while clients keep asking
            registry.move_champion(cfg.name, version)
            swaps.append(_wait_version(server.url, version))
        for broken in (unloadable, unscorable):  # promoted by mistake: must not be served
            registry.move_champion(cfg.name, broken)
            time.sleep(3)
            assert httpx.get(f"{server.url}/version").json()["version"] == second
        health = [httpx.get(f"{server.url}/health").json() for _ in range(6)]
        assert any(f"version {unscorable}" in (h["last_error"] or "") for h in health)
        assert "ghost_column" in json.dumps(health)
    finally:
        load.halt.set()
        load.join(timeout=15)
        server.stop()
    assert load.failed == [], load.failed[:5]
    assert load.ok > 50
    assert load.versions == {str(first), str(second)}
    assert max(swaps) < 10
