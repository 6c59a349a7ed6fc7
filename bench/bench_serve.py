"""Scoring-server throughput: `ctloop serve` vs `mlflow models serve` on the same champion.

One XGBoost champion trained on the flights data (Jan-Mar 2013, one xgboost trial) is served
by each server in turn on a free loopback port and loaded by the same generator, `wrk` (C, so
it takes little CPU from the servers), with 8 connections POSTing a fixed body. Each cell is
the median of `--repeats` runs; peak RSS is the whole server process tree, sampled every
100 ms. Writes bench/results/serve.json.

    .venv/bin/python -m bench.bench_serve [--seconds 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import yaml

from bench.common import flights_xgboost_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
STORE = RESULTS / ".serve-store"  # the trained champion is reused across bench runs
NAME = "flights-bench"


def champion_store() -> tuple[Path, str, Path]:
    """(folder, tracking URI, config): an XGBoost flights champion, trained once and cached."""
    STORE.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{STORE / 'mlflow.db'}"
    config = STORE / "config.yaml"
    body = flights_xgboost_config(NAME)
    config.write_text(yaml.safe_dump(body, sort_keys=False))
    os.environ["MLFLOW_TRACKING_URI"] = uri
    cwd = os.getcwd()
    os.chdir(STORE)
    try:
        from ctloop import loop, registry, tracking
        from ctloop.config import load_config

        tracking.configure()
        if registry.champion(NAME) is None:
            best = loop.train(load_config(config)).best
            # the logged model's own URI (models:/m-...), as `ctloop select` registers it
            uri_tag = tracking.run_info(best.run_id)["tags"]["ctloop.model_uri"]
            mv = registry.register(NAME, uri_tag, best.run_id, {})
            registry.move_champion(NAME, mv.version)
    finally:
        os.chdir(cwd)
    return STORE, uri, config


def payloads(rows: int) -> bytes:
    from ctloop.config import load_config
    from ctloop.data import load_dataset

    dataset = load_dataset(load_config(STORE / "config.yaml").data)
    frame = dataset.X.iloc[1000 : 1000 + rows].astype(object)
    frame = frame.where(frame.notna(), None)
    return json.dumps({"dataframe_split": {"columns": list(frame.columns),
                                           "data": frame.values.tolist()}}).encode()  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Target:
    def __init__(self, label: str, command: list[str], env: dict[str, str]) -> None:
        self.label, self.command, self.env = label, command, env
        self.port = free_port()
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        self.process: subprocess.Popen | None = None
        self.peak_rss = 0
        self._sampling = False

    def start(self, body: bytes, timeout: float = 240) -> None:
        self.process = subprocess.Popen(self.command, cwd=STORE, env=self.env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.process.returncode}")
            try:
                response = httpx.post(f"{self.url}/invocations", content=body, timeout=5,
                                      headers={"Content-Type": "application/json"})  # fmt: skip
                if response.status_code == 200:
                    self.reference = response.json()
                    return
            except httpx.TransportError:
                time.sleep(0.5)
        raise RuntimeError(f"{self.label} did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sample_rss(self) -> None:
        self._sampling = True
        parent = psutil.Process(self.process.pid)
        while self._sampling:
            try:
                procs = [parent, *parent.children(recursive=True)]
                total = sum(p.memory_info().rss for p in procs if p.is_running())
                self.peak_rss = max(self.peak_rss, total)
            except psutil.Error:
                pass
            time.sleep(0.1)

    def stop(self) -> None:
        self._sampling = False
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the server's own session only
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}", "rb"):read("*all")
"""


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_wrk(url: str, body_file: Path, seconds: int, connections: int = 8) -> dict:
    script = body_file.with_suffix(".lua")
    script.write_text(LUA.format(body=body_file))
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "-s", str(script), f"{url}/invocations"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99,
            "errors": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}  # fmt: skip


def measure(target: Target, bodies: dict[str, Path], seconds: int, repeats: int) -> dict:
    target.start(bodies["1"].read_bytes())
    sampler = threading.Thread(target=target.sample_rss, daemon=True)
    sampler.start()
    results = {}
    try:
        for size, body in bodies.items():
            run_wrk(target.url, body, 2)  # warm-up
            runs = [run_wrk(target.url, body, seconds) for _ in range(repeats)]
            results[size] = {
                "rps": statistics.median(r["rps"] for r in runs),
                "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                "errors": sum(r["errors"] for r in runs), "runs": runs}  # fmt: skip
    finally:
        target.stop()
    return {"label": target.label, "peak_rss_mb": round(target.peak_rss / 2**20),
            "results": results}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    _, uri, config = champion_store()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    bodies = {}
    for rows in (1, 100):
        bodies[str(rows)] = work / f"rows{rows}.json"
        bodies[str(rows)].write_bytes(payloads(rows))
    # mlflow models serve execs `uvicorn` from PATH, as in an activated venv
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path}
    env.pop("CTLOOP_TOKEN", None)
    def ctloop(config_file: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "ctloop", "serve", "--config", str(config_file),
                "--port", "{port}", *extra]  # fmt: skip

    no_capture = work / "no-capture.yaml"
    body = yaml.safe_load(config.read_text())
    body["serve"] = {"capture": {"enabled": False}}
    no_capture.write_text(yaml.safe_dump(body))
    capture_cfg = work / "capture.yaml"
    body["serve"] = {"capture": {"enabled": True, "directory": str(work / "capture")}}
    capture_cfg.write_text(yaml.safe_dump(body))
    from ctloop.serve.server import resolve_workers

    default_workers = resolve_workers(0)
    targets = [
        (Target(f"ctloop serve (default: {default_workers} workers, capture on)",
                ctloop(capture_cfg), env), ("1", "100")),
        (Target("ctloop serve (1 worker, capture on)",
                ctloop(capture_cfg, "--workers", "1"), env), ("1", "100")),
        (Target("ctloop serve (1 worker, capture off)",
                ctloop(no_capture, "--workers", "1"), env), ("1",)),
        (Target("mlflow models serve (defaults: 1 worker)",
                [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
                 f"models:/{NAME}@champion", "--env-manager", "local", "-h", "127.0.0.1",
                 "-p", "{port}"], env), ("1", "100")),
    ]  # fmt: skip
    rows = []
    for target, sizes in targets:
        print(f"... {target.label}", flush=True)
        rows.append(measure(target, {s: bodies[s] for s in sizes}, args.seconds, args.repeats))
    mlflow_row = rows[-1]
    report(rows, mlflow_row, args, default_workers)


def report(rows: list[dict], baseline: dict, args, default_workers: int) -> None:
    print(f"\nwrk, 8 connections, {args.seconds} s x {args.repeats} runs (median), "
          f"{os.cpu_count()} cores shared with the load generator")  # fmt: skip
    header = f"{'server':<48} {'rows':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} " \
             f"{'x mlflow':>8} {'errors':>6} {'peak RSS':>9}"
    print(header)
    print("-" * len(header))
    for row in rows:
        for size, r in row["results"].items():
            base = baseline["results"].get(size)
            ratio = r["rps"] / base["rps"] if base else float("nan")
            print(f"{row['label']:<48} {size:>4} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} "
                  f"{r['p99_ms']:>8.2f} {ratio:>8.1f} {r['errors']:>6} "
                  f"{row['peak_rss_mb']:>6} MB")  # fmt: skip
    on = rows[1]["results"]["1"]["rps"]
    off = rows[2]["results"]["1"]["rps"]
    capture_cost = 1 - on / off
    print(f"\ncapture cost (1 worker, single row): {capture_cost:.1%} of throughput")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"seconds": args.seconds, "repeats": args.repeats, "connections": 8,
           "cores": os.cpu_count(), "default_workers": default_workers,
           "capture_cost": capture_cost, "rows": rows,
           "note": "taken on a shared 2-core machine under load from other jobs"}  # fmt: skip
    (RESULTS / "serve.json").write_text(json.dumps(out, indent=1))
    print(f"wrote {RESULTS / 'serve.json'}")


if __name__ == "__main__":
    main()
