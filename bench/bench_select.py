"""Issue 3 figure: `ctloop select` on the flights data with a ~50k-row holdout, 1,000 resamples.

Trains on the whole of 2013 (holdout = the most recent 15%, about 49k rows) twice with one
quick XGBoost trial each, then times `select` for the first model (floors and model tests) and
for the second one against the first (adds the champion's scoring and the paired bootstrap),
split by step.

    .venv/bin/python -m bench.bench_select [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="ctloop-bench-select-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.chdir(tmp)
        from ctloop import loop
        from ctloop.config import load_config

        base = load_config(REPO / "configs/flights.yaml")
        training = base.training.model_copy(update={"plots": False, "candidates": {
            "xgboost": base.training.candidates["xgboost"].model_copy(update={
                "trials": 1, "search": {"n_estimators": [60], "max_depth": [6]}})}})
        cfg = base.model_copy(update={"training": training}).with_window("2013-01-01",
                                                                         "2014-01-01")
        runs = [loop.train(cfg) for _ in range(2)]
        first_start = time.perf_counter()
        first = loop.select(cfg, runs[0].run_id)
        first_total = time.perf_counter() - first_start
        totals, splits = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            decision = loop.select(cfg, runs[1].run_id)
            totals.append(time.perf_counter() - start)
            splits.append(decision.timings)
        holdout_rows = runs[1].rows["holdout"]
    median = statistics.median(totals)
    steps = {k: round(statistics.median(s.get(k, 0.0) for s in splits), 2) for k in splits[0]}
    print(f"holdout rows: {holdout_rows:,}; bootstrap resamples: {cfg.gate.bootstrap_resamples}")
    print(f"first model (no champion): {first_total:.1f} s ({first.promoted=})")
    print(f"challenger vs champion, median of {args.repeats}: {median:.1f} s")
    for step, seconds in steps.items():
        print(f"  {step:28} {seconds:6.2f} s")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "select.json").write_text(json.dumps({
        "holdout_rows": holdout_rows, "resamples": cfg.gate.bootstrap_resamples,
        "first_model_s": round(first_total, 2), "challenger_vs_champion_median_s":
        round(median, 2), "steps_median_s": steps, "repeats": args.repeats}, indent=1))


if __name__ == "__main__":
    main()
