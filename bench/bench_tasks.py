"""Every task on a ~54k-row table: training wall time and single-row pyfunc latency.

The flights table of Jan-Mar 2013 as a user's CSV with three targets (binary late or not,
multiclass on-time / late / very late, regression delay in minutes), each with a four-line
config (plus the time column) and the default candidates. Per task: `ctloop train` wall time
(median of `--repeats`), the trials' summed fit time, the best trial, and the median single-row
`mlflow.pyfunc.load_model(...).predict` latency of an XGBoost model (the best XGBoost trial
with a logged model, or a one-trial XGBoost training when none is among the logged ones) and of
the best trial, next to ctloop's own `TabularModel.predict` (what `ctloop serve` calls).

    .venv/bin/python -m bench.bench_tasks [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from bench.common import flights_task_config, median_ms, peak_rss_mb, write_result

TASKS = ("binary", "multiclass", "regression")


def pyfunc_latency(uri: str, row) -> dict:
    import mlflow

    from ctloop import tracking

    pyfunc, model = mlflow.pyfunc.load_model(uri), tracking.load_model(uri)
    return {"pyfunc_ms": round(median_ms(lambda: pyfunc.predict(row), 500), 3),
            "tabular_model_ms": round(median_ms(lambda: model.predict(row), 500), 3)}


def measure(task: str, folder: Path, repeats: int) -> dict:
    from ctloop import loop, tracking
    from ctloop.config import Config

    cfg = Config.model_validate(flights_task_config(task, folder, f"bench-{task}"))
    walls, results = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        results.append(loop.train(cfg))
        walls.append(time.perf_counter() - start)
    result = results[-1]
    model = tracking.load_model(result.best.model_uri)
    row = tracking.load_holdout(result.run_id)[list(model.feature_columns)].head(1)
    # Only the best trials carry a model; an XGBoost one is trained on its own if none of
    # them is XGBoost, so that its latency is measured whichever family wins.
    xgb = next((t for t in result.trials if t.family == "xgboost" and t.model_uri), None)
    if xgb is None:
        body = flights_task_config(task, folder, f"bench-{task}-xgboost")
        body["training"] = {"candidates": {"xgboost": {"trials": 1}}, "plots": False}
        xgb = loop.train(Config.model_validate(body)).best
    latency = {"xgboost": pyfunc_latency(xgb.model_uri, row),
               f"best ({result.best.family})": pyfunc_latency(result.best.model_uri, row)}
    fit_sum = sum(t.metrics["fit_seconds"] for t in result.trials)
    return {"task": result.task, "rows": result.rows, "trials": len(result.trials),
            "primary_metric": result.primary_metric, "stopped_by": result.stopped_by,
            "best": {"trial": result.best.name,
                     result.primary_metric: round(result.best.metrics[result.primary_metric], 4)},
            "train_wall_s": round(statistics.median(walls), 2),
            "train_walls_s": [round(w, 2) for w in walls],
            "fit_seconds_sum": round(fit_sum, 2), "single_row_latency": latency,
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=TASKS, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    out = {"load_average": os.getloadavg(), "cores": os.cpu_count(), "tasks": {}}
    with tempfile.TemporaryDirectory(prefix="ctloop-bench-tasks-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.chdir(tmp)
        for task in [args.only] if args.only else TASKS:
            out["tasks"][task] = measure(task, Path(tmp), args.repeats)
    print(f"{'task':11} {'rows':>7} {'train s':>8} {'fits s':>7} {'best':28} "
          f"{'xgb pyfunc ms':>13} {'best pyfunc ms':>14}")
    for task, r in out["tasks"].items():
        lat = list(r["single_row_latency"].values())
        best = f"{r['best']['trial']} {r['primary_metric']} {r['best'][r['primary_metric']]}"
        print(f"{task:11} {r['rows']['train']:7,} {r['train_wall_s']:8.1f} "
              f"{r['fit_seconds_sum']:7.1f} {best:28} {lat[0]['pyfunc_ms']:13.3f} "
              f"{lat[1]['pyfunc_ms']:14.3f}")
    print(f"load average at start: {out['load_average']}")
    write_result("tasks", out)


if __name__ == "__main__":
    main()
