"""Batch scoring of the whole flights table: `ctloop predict` streaming vs one big predict.

Same XGBoost champion as bench_serve. Each variant runs in a fresh process (median of
`--repeats`), which reports its wall time and peak RSS (ru_maxrss):
  - stream csv->csv / parquet->parquet: `serve.batch.predict_file` (pyarrow, 64k-row chunks)
  - pandas one frame: read the whole CSV with pandas, `model.predict(frame)`, write CSV
  - model.predict only: the model's own predict on the whole frame already in memory
Writes bench/results/predict_batch.json.

    .venv/bin/python -m bench.bench_predict_batch [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from bench.bench_serve import RESULTS, champion_store, model_name

NAME = model_name("binary", "xgboost")  # the flights XGBoost champion bench_serve trains


def _model():
    from ctloop import tracking

    tracking.configure()
    return tracking.load_model(f"models:/{NAME}@champion")


def _variant(kind: str, work: str, queue: mp.Queue) -> None:
    import pandas as pd

    from ctloop.serve import batch

    model = _model()
    folder = Path(work)
    start = time.perf_counter()
    if kind == "stream csv->csv":
        rows = batch.predict_file(model, folder / "flights.csv", folder / "out.csv")
    elif kind == "stream parquet->parquet":
        rows = batch.predict_file(model, folder / "flights.parquet", folder / "out.parquet")
    elif kind == "pandas one frame csv->csv":
        frame = pd.read_csv(folder / "flights.csv")
        out = pd.concat([frame, model.predict(frame)], axis=1)
        out.to_csv(folder / "out-pandas.csv", index=False)
        rows = len(out)
    else:  # model.predict only, frame already in memory
        frame = pd.read_parquet(folder / "flights.parquet")
        start = time.perf_counter()
        rows = len(model.predict(frame))
    seconds = time.perf_counter() - start
    queue.put({"rows": rows, "seconds": seconds,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    champion_store([("binary", "xgboost")])
    from ctloop.data import FLIGHTS_FEATURES, load_flights

    work = tempfile.mkdtemp(prefix="bench-batch-")
    frame, _ = load_flights()
    table = frame[list(FLIGHTS_FEATURES)]
    table.to_csv(Path(work) / "flights.csv", index=False)
    table.to_parquet(Path(work) / "flights.parquet", index=False)
    context = mp.get_context("spawn")
    results = {}
    kinds = ["stream csv->csv", "stream parquet->parquet", "pandas one frame csv->csv",
             "model.predict only (in memory)"]  # fmt: skip
    for kind in kinds:
        runs = []
        for _ in range(args.repeats):
            queue = context.Queue()
            process = context.Process(target=_variant, args=(kind, work, queue))
            process.start()
            runs.append(queue.get(timeout=900))
            process.join()
        seconds = statistics.median(r["seconds"] for r in runs)
        results[kind] = {"rows": runs[0]["rows"], "seconds": seconds,
                         "rows_per_s": runs[0]["rows"] / seconds,
                         "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}  # fmt: skip
    baseline = results[kinds[-1]]["rows_per_s"]
    print(f"\nbatch scoring, {results[kinds[0]]['rows']:,} flights rows, median of "
          f"{args.repeats}, {os.cpu_count()} shared cores")  # fmt: skip
    print(f"{'variant':<34} {'seconds':>8} {'rows/s':>10} {'vs predict':>10} {'peak RSS':>9}")
    for kind, r in results.items():
        print(f"{kind:<34} {r['seconds']:>8.2f} {r['rows_per_s']:>10,.0f} "
              f"{r['rows_per_s'] / baseline:>10.2f} {r['peak_rss_mb']:>6.0f} MB")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "predict_batch.json").write_text(json.dumps(
        {"repeats": args.repeats, "results": results,
         "note": "taken on a shared 2-core machine under load from other jobs"}, indent=1))
    print(f"wrote {RESULTS / 'predict_batch.json'}")


if __name__ == "__main__":
    main()
