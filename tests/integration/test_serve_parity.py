"""Same payload, same answer: `ctloop serve` vs `mlflow models serve` on the champion."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.serve_support import Server, free_port, serve_config
from tests.unit.serve.test_protocol import PAYLOADS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_server(champion_store: dict):
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # mlflow serve execs `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": champion_store["uri"],
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    mlflow = str(Path(sys.executable).parent / "mlflow")
    log_path = Path(champion_store["dir"]) / f"mlflow-serve-{port}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen(
        [mlflow, "models", "serve", "-m", f"models:/{champion_store['name']}@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=champion_store["dir"], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited: {log_path.read_text()[-1500:]}")
        try:
            if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.5)
    else:
        raise RuntimeError(f"mlflow models serve did not start: {log_path.read_text()[-1500:]}")
    yield url
    os.killpg(process.pid, 15)  # its own session: mlflow serve runs uvicorn as a child
    process.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def ctloop_server(champion_store: dict, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("parity")
    server = Server(serve_config(champion_store, folder), champion_store["uri"], folder)
    yield server.wait_ready()
    server.stop()


# Not CSV: MLflow's CSV parser needs a DataType for every signature column, and ctloop declares
# numeric, boolean and date columns `Any` so that `pyfunc.predict(pd.read_csv(...))` takes int64
# columns (README: "mlflow models serve"); `ctloop serve` takes CSV (tests/unit/serve).
@pytest.mark.parametrize("name", ["dataframe_split", "dataframe_records", "inputs_columnar",
                                  "instances_records"])  # fmt: skip
def test_same_predictions_as_mlflow_models_serve(mlflow_server, ctloop_server, name):
    mime, body = PAYLOADS[name]
    theirs = httpx.post(f"{mlflow_server}/invocations", content=body,
                        headers={"Content-Type": mime}, timeout=30)  # fmt: skip
    ours = httpx.post(f"{ctloop_server.url}/invocations", content=body,
                      headers={"Content-Type": mime})  # fmt: skip
    assert theirs.status_code == 200, theirs.text
    assert ours.status_code == 200, ours.text
    theirs_rows, ours_rows = theirs.json()["predictions"], ours.json()["predictions"]
    assert [r["label"] for r in ours_rows] == [r["label"] for r in theirs_rows]
    assert [r["probability"] for r in ours_rows] == pytest.approx(
        [r["probability"] for r in theirs_rows], abs=1e-9)
    assert set(ours.json()) == set(theirs.json()) == {"predictions"}
