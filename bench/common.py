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


def median_ms(fn, repeats: int) -> float:
    """Median wall time of `fn()` in milliseconds, after one untimed warm-up call."""
    import statistics
    import time

    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def peak_rss_mb() -> float:
    """The high-water mark of this process or its children, in MB."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def write_result(name: str, result: dict[str, Any]) -> Path:
    """bench/results/<name>.json, announced on stdout."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return out


TIME = "scheduled_departure"
TASK_TARGETS = {"binary": "arr_delayed", "multiclass": "delay_bucket",
                "regression": "arr_delay_minutes"}
FLIGHTS_WINDOW = {"start": "2013-01-01", "end": "2013-04-01"}


def flights_task_csv(task: str, folder: Path) -> Path:
    """The flights table (Jan-Mar 2013, ~54k rows) with a target for `task`, as a CSV a user
    would have: binary late (> 15 min) or not, multiclass on_time / late / very_late (> 30
    min), regression the arrival delay in minutes (clipped to -60..240)."""
    import numpy as np
    import pandas as pd

    from ctloop.data import FLIGHTS_FEATURES, FLIGHTS_TARGET, _flights_dir, load_flights

    path = folder / f"flights-{task}.csv"
    if path.exists():
        return path
    frame, _ = load_flights()
    # load_flights keeps only the label; recover the minutes the same way it orders rows
    # (arrivals known, left-joined weather, stable sort on the scheduled departure).
    raw = pd.read_csv(_flights_dir() / "flights.csv.zip")
    raw = raw[raw["arr_delay"].notna()].reset_index(drop=True)
    scheduled = pd.to_datetime(dict(year=raw["year"], month=raw["month"], day=raw["day"],
                                    hour=raw["hour"], minute=raw["minute"]))  # fmt: skip
    raw = raw.iloc[np.argsort(scheduled.to_numpy(), kind="stable")].reset_index(drop=True)
    aligned = (len(raw) == len(frame)
               and (raw["carrier"].to_numpy() == frame["carrier"].to_numpy()).all()
               and ((raw["arr_delay"] > 15).to_numpy() == frame[FLIGHTS_TARGET].astype(bool)
                    ).all())  # fmt: skip
    if not aligned:
        raise RuntimeError("could not align arrival delays with ctloop's flights table")
    minutes = raw["arr_delay"].to_numpy(dtype=float)
    targets = {
        "binary": frame[FLIGHTS_TARGET].to_numpy(),
        "multiclass": np.select([minutes <= 0, minutes <= 30], ["on_time", "late"],
                                "very_late"),
        "regression": np.clip(minutes, -60, 240),
    }
    out = frame[[TIME, *FLIGHTS_FEATURES]].copy()
    out[TASK_TARGETS[task]] = targets[task]
    out = out[(out[TIME] >= FLIGHTS_WINDOW["start"]) & (out[TIME] < FLIGHTS_WINDOW["end"])]
    folder.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False)
    return path


def flights_task_config(task: str, folder: Path, name: str) -> dict[str, Any]:
    """A user's config for `flights_task_csv(task)`: four lines plus the time column."""
    return {"name": name,
            "data": {"source": str(flights_task_csv(task, folder)),
                     "target": TASK_TARGETS[task], "time_column": TIME,
                     **({"positive_label": 1} if task == "binary" else {})}}
