"""Every benchmark, one after another, with the arguments the README quotes (`make bench`).

Each runs in its own process (the benchmarks set MLflow's tracking URI and the working
directory for themselves), prints its table and writes its JSON to bench/results/. A failing
benchmark is reported and the rest still run; the exit code says whether any failed.

    .venv/bin/python -m bench.run_all [--only quality,tasks]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from bench.common import ROOT

# name -> arguments, as in the README's Performance section
BENCHMARKS: dict[str, list[str]] = {
    "serve": ["--seconds", "5", "--repeats", "3"],
    "predict_batch": ["--repeats", "2"],
    "tasks": ["--repeats", "2"],
    "train": ["--repeats", "5", "--only", "training", "--fresh", "--config",
              "bench/configs/flights_defaults.yaml"],
    "select": ["--repeats", "3"],
    "monitor": ["--repeats", "3"],
    "team": [],
    "dask": [],
    "quality": [],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    names = [n.strip() for n in parser.parse_args().only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; known: {', '.join(BENCHMARKS)}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    failed = []
    for name in names:
        if name == "serve" and shutil.which("wrk") is None:
            print("skipping serve: needs wrk (apt-get install wrk)")
            continue
        print(f"== bench_{name} {' '.join(BENCHMARKS[name])}", flush=True)
        done = subprocess.run([sys.executable, "-m", f"bench.bench_{name}", *BENCHMARKS[name]],
                              cwd=ROOT, env=env, check=False)
        if done.returncode:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
