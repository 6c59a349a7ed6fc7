"""Scoring-server throughput per model family and task: `ctloop serve` vs `mlflow models serve`.

One champion per family (every family in `candidates.FAMILIES`; one fixed
trial each) is trained per task on the flights data, Jan-Mar 2013:
  binary      the built-in table (arrival more than 15 minutes late)
  multiclass  the same rows and features, target = delay bucket (on_time <= 0 min, late <= 30,
              very_late), written as a CSV into the bench's cache folder
  regression  target = arrival delay in minutes clipped to [-60, 240], likewise
Each champion is served by both servers at their defaults (`ctloop serve`: one worker per
core up to 4, capture on; `mlflow models serve`: 1 worker) on free loopback ports, up
together, and loaded in alternating runs (so drifting load from other jobs falls on both) by
the same generator, `wrk` (C, one thread, so it takes little CPU from the servers), with 8
connections POSTing a fixed single-row body. Each cell is the median of `--repeats` runs;
peak RSS is the whole server process tree, sampled every 100 ms; the 1-minute load average
is read around every run (lowest and highest are reported). Both servers' first answers are
compared (the pyfunc contract: the same predictions), and the in-process pyfunc single-row
predict is timed. Trained champions are cached in bench/results/.serve-store. Writes
bench/results/serve.json.

    PYTHONPATH=src .venv/bin/python -m bench.bench_serve [--seconds 5] [--repeats 3]
        [--tasks binary,multiclass,regression] [--families xgboost,linear,...] [--rows 1,100]
        [--ctloop-workers N]
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

from bench.common import TASK_TARGETS, flights_task_csv, flights_xgboost_config, median_ms
from ctloop.candidates import FAMILIES as CANDIDATE_FAMILIES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
STORE = RESULTS / ".serve-store"  # trained champions and the derived CSVs, reused across runs
NAME = "flights-bench"
# Every family a champion can come from: each candidate family, and an ensemble of them
# (a cross-validated search of one trial per family, which ends on their weighted average).
FAMILIES = (*CANDIDATE_FAMILIES, "ensemble")
TASKS = ("binary", "multiclass", "regression")
# One wrk thread drives 8 connections at well over 10k req/s. A second one (the setting
# before) takes a core's share from the servers on this 2-core machine, and its own
# scheduling delays are counted as the servers' tail latency.
CLIENT_THREADS = 1
# One fixed trial per family (the search spaces of configs/flights.yaml, pinned).
SEARCH = {
    "xgboost": {"n_estimators": [200], "max_depth": [6], "learning_rate": [0.1]},
    "lightgbm": {"learning_rate": [0.1], "num_leaves": [31]},
    "linear": {"C": [1.0]},
    "hist_gradient_boosting": {"learning_rate": [0.1], "max_leaf_nodes": [31]},
    "random_forest": {"n_estimators": [200], "min_samples_leaf": [5]},
}
WINDOW = {"start": "2013-01-01", "end": "2013-04-01"}
TIME = "scheduled_departure"
TARGETS = TASK_TARGETS


def model_name(task: str, family: str) -> str:
    return f"{NAME}-{task}-{family.replace('_', '-')}"


def flights_csv(task: str) -> Path:
    """The flights table (Jan-Mar 2013) with a multiclass or regression target, as a CSV."""
    return flights_task_csv(task, STORE)


def champion_config(task: str, family: str) -> dict:
    name = model_name(task, family)
    if family == "ensemble":  # the same rows without the time column, so folds are allowed
        return {"name": name,
                "data": {"source": str(flights_csv(task)), "target": TARGETS[task],
                         "task": task, **({"positive_label": 1} if task == "binary" else {}),
                         "features": {"exclude": [TIME]}},
                "training": {"plots": False, "cv_folds": 3, "candidates": {
                    f: {"trials": 1, "search": SEARCH[f]} for f in CANDIDATE_FAMILIES}}}
    if task == "binary":
        body = flights_xgboost_config(name)
    else:
        body = {"name": name,
                "data": {"source": str(flights_csv(task)), "target": TARGETS[task],
                         "task": task, "time_column": TIME, "window": dict(WINDOW)},
                "training": {"plots": False}}  # fmt: skip
    body["training"]["candidates"] = {family: {"trials": 1, "search": SEARCH[family]}}
    return body


def champion_store(combos: list[tuple[str, str]]) -> tuple[str, dict[tuple[str, str], Path]]:
    """(tracking URI, config per combo): one champion per (task, family), trained once."""
    STORE.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{STORE / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    configs = {}
    cwd = os.getcwd()
    os.chdir(STORE)
    try:
        from ctloop import loop, registry, tracking
        from ctloop.config import load_config

        tracking.configure()
        for task, family in combos:
            name = model_name(task, family)
            config = STORE / f"{name}.yaml"
            config.write_text(yaml.safe_dump(champion_config(task, family), sort_keys=False))
            configs[task, family] = config
            if registry.champion(name) is None:
                print(f"... training the {task} {family} champion", flush=True)
                best = loop.train(load_config(config)).best
                if family == "ensemble" and best.family != "ensemble":
                    raise RuntimeError(f"{name}: the search ended on {best.name}, not on an "
                                       "ensemble; nothing to measure")
                # the logged model's own URI (models:/m-...), as `ctloop select` registers it
                uri_tag = tracking.run_info(best.run_id)["tags"]["ctloop.model_uri"]
                mv = registry.register(name, uri_tag, best.run_id, {})
                registry.move_champion(name, mv.version)
    finally:
        os.chdir(cwd)
    return uri, configs


def sample_rows(config: Path, rows: int):
    from ctloop.config import load_config
    from ctloop.data import load_dataset

    dataset = load_dataset(load_config(config).data)
    return dataset.X.iloc[1000 : 1000 + rows]


def payload(frame) -> bytes:
    frame = frame.astype(object)
    frame = frame.where(frame.notna(), None)
    return json.dumps({"dataframe_split": {"columns": list(frame.columns),
                                           "data": frame.values.tolist()}},
                      default=str).encode()  # fmt: skip


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
    out = subprocess.run(["wrk", f"-t{CLIENT_THREADS}", f"-c{connections}", f"-d{seconds}s",
                          "--latency", "-s", str(script), f"{url}/invocations"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99,
            "errors": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}  # fmt: skip


def measure(targets: list[Target], bodies: dict[str, Path], seconds: int,
            repeats: int) -> list[dict]:
    """Both servers up at once and their runs interleaved (A, B, A, B, ...), so that the
    shared machine's drifting load falls on both alike."""
    load = [os.getloadavg()[0]]
    samplers = []
    try:
        for target in targets:
            target.start(bodies["1"].read_bytes())
            sampler = threading.Thread(target=target.sample_rss, daemon=True)
            sampler.start()
            samplers.append(sampler)
        runs: dict[tuple[int, str], list[dict]] = {}
        for size, body in bodies.items():
            for i, target in enumerate(targets):
                run_wrk(target.url, body, 2)  # warm-up
                runs[i, size] = []
            for _ in range(repeats):
                for i, target in enumerate(targets):
                    runs[i, size].append(run_wrk(target.url, body, seconds))
                    load.append(os.getloadavg()[0])
    finally:
        for target in targets:
            target.stop()
    out = []
    for i, target in enumerate(targets):
        results = {}
        for size in bodies:
            r = runs[i, size]
            results[size] = {
                "rps": statistics.median(x["rps"] for x in r),
                "p50_ms": statistics.median(x["p50_ms"] for x in r),
                "p99_ms": statistics.median(x["p99_ms"] for x in r),
                "errors": sum(x["errors"] for x in r), "runs": r}  # fmt: skip
        out.append({"label": target.label, "peak_rss_mb": round(target.peak_rss / 2**20),
                    "load_avg_1m": [round(min(load), 2), round(max(load), 2)],
                    "first_answer": target.reference, "results": results})  # fmt: skip
    return out


def pyfunc_timing(uri: str, frame, repeats: int = 300) -> dict:
    """Median in-process single-row predict: ctloop's pyfunc object (what `_load_pyfunc`
    returns, called as MLflow calls it), and MLflow's wrapper around it (schema checks)."""
    import mlflow.pyfunc

    from ctloop import tracking

    def timed(call) -> float:  # the median of three rounds: a burst from other jobs hits one
        return round(statistics.median(median_ms(call, repeats) for _ in range(3)), 4)

    model = tracking.load_model(uri)
    row = frame.head(1).reset_index(drop=True)
    X = model.encode(row)
    wrapped = mlflow.pyfunc.load_model(uri)
    return {"scores_encoded_ms": timed(lambda: model.scores_encoded(X)),
            "ctloop_pyfunc_predict_ms": timed(lambda: model.predict(row)),
            "mlflow_pyfunc_predict_ms": timed(lambda: wrapped.predict(row)),
            "fast_path": type(model.fast).__name__ if model.fast is not None else None,
            "load_avg_1m": round(os.getloadavg()[0], 2)}  # fmt: skip


def same_answers(a: dict, b: dict) -> float:
    """Largest numeric difference between two /invocations answers (inf if they differ in
    shape or labels)."""
    left, right = a.get("predictions"), b.get("predictions")
    if not isinstance(left, list) or not isinstance(right, list) or len(left) != len(right):
        return float("inf")
    worst = 0.0
    for x, y in zip(left, right, strict=True):
        x, y = (x, y) if isinstance(x, dict) else ({"v": x}, {"v": y})
        if set(x) != set(y):
            return float("inf")
        for key in x:
            if isinstance(x[key], int | float) and isinstance(y[key], int | float):
                worst = max(worst, abs(float(x[key]) - float(y[key])))
            elif x[key] != y[key]:
                return float("inf")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--rows", default="1", help="request sizes, e.g. 1,100")
    parser.add_argument("--ctloop-workers", type=int, default=0,
                        help="0: ctloop's default; else --workers N (results to "
                             "serve-workers<N>.json)")  # fmt: skip
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    tasks = [t for t in args.tasks.split(",") if t]
    families = [f for f in args.families.split(",") if f]
    sizes = [s for s in args.rows.split(",") if s]
    if "1" not in sizes:
        sizes.insert(0, "1")
    combos = [(t, f) for t in tasks for f in families]
    uri, configs = champion_store(combos)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    # mlflow models serve execs `uvicorn` from PATH, as in an activated venv; both servers
    # import this checkout's ctloop
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    pythonpath = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH"))
                                 if p)  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path, "PYTHONPATH": pythonpath}
    env.pop("CTLOOP_TOKEN", None)
    from ctloop.serve.server import resolve_workers

    default_workers = resolve_workers(args.ctloop_workers)
    workers_option = ["--workers", str(args.ctloop_workers)] if args.ctloop_workers else []
    ctloop_label = (f"ctloop serve ({default_workers} workers, capture on)" if workers_option
                    else f"ctloop serve (defaults: {default_workers} workers, capture on)")
    frames: dict[str, object] = {}
    rows = []
    started = os.getloadavg()
    for task, family in combos:
        name = model_name(task, family)
        if task not in frames:
            frames[task] = sample_rows(configs[task, family], max(int(s) for s in sizes))
        bodies = {}
        for size in sizes:
            bodies[size] = work / f"{task}-rows{size}.json"
            bodies[size].write_bytes(payload(frames[task].head(int(size))))
        config = work / f"{name}.yaml"
        body = yaml.safe_load(configs[task, family].read_text())
        body["serve"] = {"capture": {"enabled": True, "directory": str(work / "capture" / name)}}
        config.write_text(yaml.safe_dump(body))  # defaults, capture written outside the store
        targets = [
            Target(ctloop_label,
                   [sys.executable, "-m", "ctloop", "serve", "--config", str(config),
                    "--port", "{port}", *workers_option], env),
            Target("mlflow models serve (defaults: 1 worker)",
                   [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
                    f"models:/{name}@champion", "--env-manager", "local", "-h", "127.0.0.1",
                    "-p", "{port}"], env),
        ]  # fmt: skip
        print(f"... {task} {family}: pyfunc", flush=True)
        timing = pyfunc_timing(f"models:/{name}@champion", frames[task])
        print(f"... {task} {family}: both servers", flush=True)
        ctloop_row, mlflow_row = measure(targets, bodies, args.seconds, args.repeats)
        rows.append({"task": task, "family": family, "model": name, "pyfunc": timing,
                     "max_answer_difference": same_answers(ctloop_row["first_answer"],
                                                           mlflow_row["first_answer"]),
                     "ctloop": ctloop_row, "mlflow": mlflow_row})  # fmt: skip
    report(rows, args, default_workers, started, os.getloadavg())


def report(rows: list[dict], args, default_workers: int, started, ended) -> None:
    print(f"\nwrk, 8 connections, single-row bodies, {args.seconds} s x {args.repeats} runs "
          f"(median), {os.cpu_count()} cores shared with the load generator and other jobs; "
          f"load average {started[0]:.2f} at start, {ended[0]:.2f} at end")  # fmt: skip
    header = (f"{'task':<10} {'family':<22} {'ctloop r/s':>10} {'mlflow r/s':>10} {'x':>6} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'mlf p99':>8} {'RSS MB':>11} {'pyfunc ms':>9} "
              f"{'load':>9} {'same':>5}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for row in rows:
        c, m = row["ctloop"]["results"]["1"], row["mlflow"]["results"]["1"]
        rss = f"{row['ctloop']['peak_rss_mb']}/{row['mlflow']['peak_rss_mb']}"
        low, high = row["ctloop"]["load_avg_1m"]
        load = f"{low:.1f}-{high:.1f}"
        same = "yes" if row["max_answer_difference"] <= 1e-9 else "NO"
        print(f"{row['task']:<10} {row['family']:<22} {c['rps']:>10.0f} {m['rps']:>10.0f} "
              f"{c['rps'] / m['rps']:>6.1f} {c['p50_ms']:>7.2f} {c['p99_ms']:>7.2f} "
              f"{m['p99_ms']:>8.1f} {rss:>11} "
              f"{row['pyfunc']['ctloop_pyfunc_predict_ms']:>9.3f} {load:>9} {same:>5}")
        for size in row["ctloop"]["results"]:
            if size != "1":
                r = row["ctloop"]["results"][size]
                base = row["mlflow"]["results"][size]
                print(f"{'':<10} {size + ' rows':<22} {r['rps']:>10.0f} {base['rps']:>10.0f} "
                      f"{r['rps'] / base['rps']:>6.1f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
                      f"{base['p99_ms']:>8.1f}")  # fmt: skip
    print("RSS: ctloop (all workers) / mlflow; pyfunc: in-process single-row predict of "
          "ctloop's pyfunc; load: 1-minute load average, lowest-highest; same: both servers "
          "answered the first request alike")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"seconds": args.seconds, "repeats": args.repeats, "connections": 8,
           "cores": os.cpu_count(), "default_workers": default_workers,
           "load_avg_start": list(started), "load_avg_end": list(ended), "rows": rows,
           "note": "taken on a shared 2-core machine under load from other jobs"}  # fmt: skip
    out["ctloop_workers"] = args.ctloop_workers or default_workers
    name = f"serve-workers{args.ctloop_workers}.json" if args.ctloop_workers else "serve.json"
    (RESULTS / name).write_text(json.dumps(out, indent=1))
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
