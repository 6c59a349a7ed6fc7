"""What the benchmarks share: where results go, and the flights champion they measure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def flights_xgboost_config(name: str) -> dict[str, Any]:
    """configs/flights.yaml (Jan-Mar 2013) with one fixed XGBoost trial and no plots."""
    body = yaml.safe_load((ROOT / "configs" / "flights.yaml").read_text())
    body["name"] = name
    body["training"]["plots"] = False
    body["training"]["candidates"] = {"xgboost": {"trials": 1, "search": {
        "n_estimators": [200], "max_depth": [6], "learning_rate": [0.1]}}}
    return body


def write_result(name: str, result: dict[str, Any]) -> Path:
    """bench/results/<name>.json, announced on stdout."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return out
