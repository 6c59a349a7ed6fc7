"""Candidate trials: local (loky) backend vs a Dask LocalCluster with 1 and 2 worker processes.

`train()` only (no gate), configs/flights.yaml's trials on a `--start/--end` window, each
backend `--repeats` times, interleaved; embedded SQLite store per run. The Dask cluster runs
on this machine (1 thread per worker): this measures the backend's overhead and scaling, not
the gain of more machines.

    .venv/bin/python -m bench.bench_dask [--repeats 3] [--start 2013-01-01] [--end 2013-01-15]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--start", default="2013-01-01")
    parser.add_argument("--end", default="2013-01-15")
    args = parser.parse_args()
    from distributed import LocalCluster

    from ctloop import tracking
    from ctloop.config import ComputeConfig, load_config
    from ctloop.train import train

    base = load_config(ROOT / "configs" / "flights.yaml").with_window(args.start, args.end)
    clusters = {n: LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                dashboard_address=None) for n in (1, 2)}
    backends = {"local": ComputeConfig()}
    backends.update({f"dask-{n}w": ComputeConfig(backend="dask",
                                                 scheduler_address=c.scheduler_address)
                     for n, c in clusters.items()})
    times: dict[str, list[float]] = {name: [] for name in backends}
    scores: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="ctloop-bench-dask-") as tmp:
            os.chdir(tmp)
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
            tracking.configure()
            for compute in backends.values():  # warm-up, untimed: data cache, imports, workers
                train(base.model_copy(update={"compute": compute}))
            for i in range(args.repeats):
                for name, compute in backends.items():
                    cfg = base.model_copy(update={"compute": compute})
                    began = time.perf_counter()
                    result = train(cfg)
                    times[name].append(time.perf_counter() - began)
                    scores[name] = {t.name: t.metrics[result.primary_metric]
                                    for t in result.trials}
                    print(f"{name} run {i + 1}: {times[name][-1]:.1f} s", flush=True)
    finally:
        for cluster in clusters.values():
            cluster.close()
    same = all(s == scores["local"] for s in scores.values())
    local = statistics.median(times["local"])
    result = {
        "benchmark": "train(): local loky vs Dask LocalCluster (processes, 1 thread/worker)",
        "window": [args.start, args.end], "repeats": args.repeats,
        "trials": len(scores["local"]), "seconds": times,
        "median_seconds": {k: statistics.median(v) for k, v in times.items()},
        "same_scores_on_every_backend": same,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_end": os.getloadavg(),
                    "note": "shared machine: other jobs ran concurrently"},
    }
    print(f"\n{'backend':<10}{'median s':>10}{'vs local':>10}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<10}{median:>10.1f}{median / local:>10.2f}")
    print(f"same scores on every backend: {same}")
    write_result("dask", result)


if __name__ == "__main__":
    main()
