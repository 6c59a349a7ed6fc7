"""`ctloop predict` (batch scoring) and `loop.deploy_local` (background server) end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from ctloop import loop, tracking
from ctloop.config import load_config
from tests.integration.serve_support import free_port, serve_config

pytestmark = pytest.mark.slow


def _ctloop(*args: str, store: dict, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": store["uri"]}
    return subprocess.run([sys.executable, "-m", "ctloop", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.fixture
def champion_model(champion_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", champion_store["uri"])
    tracking.configure()
    return tracking.load_model(f"models:/{champion_store['name']}@champion")


@pytest.mark.parametrize(("source_kind", "target_kind"), [(".csv", ".csv"),
                                                          (".parquet", ".parquet"),
                                                          (".csv.gz", ".parquet"),
                                                          (".csv.zip", ".csv")])
def test_predict_scores_every_row_and_keeps_the_input_columns(
    champion_store, champion_model, tmp_path, source_kind, target_kind
):  # fmt: skip
    frame = pd.read_csv(champion_store["dir"] / "churn.csv")
    frame = pd.concat([frame] * 120, ignore_index=True)  # 72k rows: several chunks
    source = tmp_path / f"in{source_kind}"
    if source_kind == ".parquet":
        frame.to_parquet(source)
    else:
        frame.to_csv(source, index=False)  # compressed as the suffix says
    target = tmp_path / f"out{target_kind}"
    result = _ctloop("predict", "--input", str(source), "--output", str(target),
                     "--config", str(champion_store["config"]), store=champion_store,
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"scored {len(frame):,} rows" in result.stdout
    scored = pd.read_csv(target) if target_kind == ".csv" else pd.read_parquet(target)
    assert list(scored.columns) == [*frame.columns, "probability", "label"]
    assert len(scored) == len(frame)
    assert scored["customer_id"].tolist() == frame["customer_id"].tolist()
    expected = champion_model.predict(frame)
    assert scored["probability"].to_numpy() == pytest.approx(expected["probability"], abs=1e-12)
    assert scored["label"].tolist() == expected["label"].tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, target.name])


def test_predict_bad_input_fails_clearly_without_output(champion_store, tmp_path):
    frame = pd.read_csv(champion_store["dir"] / "churn.csv").drop(columns=["contract"])
    source = tmp_path / "missing.csv"
    frame.to_csv(source, index=False)
    bad_values = tmp_path / "bad.csv"
    broken = pd.read_csv(champion_store["dir"] / "churn.csv")
    broken["tenure"] = broken["tenure"].astype(object)
    broken.loc[500, "tenure"] = "about a year"  # deep in the file: fails mid-stream
    broken.to_csv(bad_values, index=False)
    truncated = tmp_path / "truncated.csv.gz"
    pd.read_csv(champion_store["dir"] / "churn.csv").to_csv(truncated, index=False)
    truncated.write_bytes(truncated.read_bytes()[:-200])  # cut short: fails mid-stream
    cases = [
        (source, tmp_path / "out.csv", "missing feature column 'contract'"),
        (tmp_path / "nope.csv", tmp_path / "out.csv", "not found"),
        (source, tmp_path / "out.json", ".csv or .parquet"),
        (bad_values, tmp_path / "out.csv", "about a year"),
        (truncated, tmp_path / "out.csv", "truncated.csv.gz: cannot read"),
    ]
    for input_path, output_path, message in cases:
        result = _ctloop("predict", "--input", str(input_path), "--output", str(output_path),
                         "--config", str(champion_store["config"]), store=champion_store,
                         cwd=tmp_path)  # fmt: skip
        assert result.returncode == 1, (message, result.stdout)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not output_path.exists()
    assert not list(tmp_path.glob(".*part"))


def test_deploy_local_starts_then_reloads_then_stops(champion_store, tmp_path, monkeypatch):
    config = serve_config(champion_store, tmp_path)
    body = yaml.safe_load(config.read_text())
    body["serve"]["port"] = free_port()
    config.write_text(yaml.safe_dump(body))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", champion_store["uri"])
    monkeypatch.chdir(tmp_path)
    cfg = load_config(config)
    started = loop.deploy_local(cfg)
    try:
        assert started["action"] == "started" and started["model"]["version"] == 1
        assert (tmp_path / ".ctloop" / f"serve-{cfg.name}.json").exists()
        assert httpx.get(f"{started['url']}/version").json()["version"] == 1
        again = loop.deploy_local(cfg)
        assert again["action"] == "reloaded" and again["pid"] == started["pid"]
        assert again["model"]["version"] == 1
    finally:
        assert loop.stop_local(cfg)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{started['url']}/ping", timeout=2)
    assert not loop.stop_local(cfg)
