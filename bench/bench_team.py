"""`ctloop run` against the team tracking server vs the embedded SQLite store.

Same data (configs/flights.yaml, a `--start/--end` window), same trials, same machine. Each
repeat uses a fresh experiment / registered model name (a copy of the config with only `name`
changed) so every run takes the same path (first model: floors and model tests, no champion to
beat). Team server = scripts/team_server.py: PostgreSQL, moto S3 with proxied artifacts, `mlflow
server --app-name basic-auth` with 2 workers, all on loopback. The server's REST calls per run
are counted from its access log when it writes one.

    .venv/bin/python -m bench.bench_team [--repeats 3] [--start 2013-01-01] [--end 2013-01-22]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _team_server():
    spec = importlib.util.spec_from_file_location("team_server",
                                                  ROOT / "scripts" / "team_server.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["team_server"] = module
    spec.loader.exec_module(module)
    return module


def _run(config: Path, env: dict[str, str], cwd: Path, start: str, end: str) -> float:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ctloop", "run", "--config", str(config),
                           "--start", start, "--end", end], env=env, cwd=cwd,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode not in (0, 3):  # 3 = the gate refused it: same work was done
        raise SystemExit(f"ctloop run failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--start", default="2013-01-01")
    parser.add_argument("--end", default="2013-01-22")
    args = parser.parse_args()
    base = yaml.safe_load((ROOT / "configs" / "flights.yaml").read_text())
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("MLFLOW_", "AWS_")) and k != "CTLOOP_TOKEN"}
    times: dict[str, list[float]] = {"sqlite": [], "team": []}
    requests: list[int] = []
    with tempfile.TemporaryDirectory(prefix="ctloop-bench-team-") as tmp:
        root = Path(tmp)
        team = _team_server()
        with team.running(root / "stack") as stack:
            log = stack.root / "mlflow-server.log"
            for i in range(args.repeats):
                for mode in ("sqlite", "team"):  # interleaved: load drifts hit both alike
                    work = root / f"{mode}-{i}"
                    work.mkdir()
                    config = work / "flights.yaml"
                    config.write_text(yaml.safe_dump({**base, "name": f"bench-{mode}-{i}"}))
                    if mode == "sqlite":
                        env = {**clean, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
                    else:
                        env = {**clean, **stack.client_env()}
                    before = log.read_text(errors="replace").count("/api/")
                    times[mode].append(_run(config, env, work, args.start, args.end))
                    if mode == "team":
                        requests.append(log.read_text(errors="replace").count("/api/") - before)
                    print(f"{mode} run {i + 1}: {times[mode][-1]:.1f} s", flush=True)
    sqlite, team_s = statistics.median(times["sqlite"]), statistics.median(times["team"])
    result = {
        "benchmark": "ctloop run: team server vs embedded SQLite",
        "window": [args.start, args.end], "repeats": args.repeats,
        "seconds": times, "median_seconds": {"sqlite": sqlite, "team": team_s},
        "ratio_team_over_sqlite": team_s / sqlite, "goal_ratio": 1.3,
        "server_api_requests_per_run": requests or None,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_end": os.getloadavg(),
                    "note": "shared machine: other jobs ran concurrently"},
    }
    print(f"\n{'store':<8}{'median s':>10}{'runs':>30}")
    for mode in ("sqlite", "team"):
        print(f"{mode:<8}{statistics.median(times[mode]):>10.1f}"
              f"{' '.join(f'{t:.1f}' for t in times[mode]):>30}")
    print(f"ratio team/sqlite: {result['ratio_team_over_sqlite']:.2f} (goal <= 1.3)")
    if requests:
        print(f"server REST requests per run: {requests}")
    write_result("team", result)


if __name__ == "__main__":
    main()
