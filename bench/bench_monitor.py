"""Monitor job on 1,000,000 captured rows: `ctloop monitor` vs Evidently's DataDriftPreset.

Setup (cached under bench/results/.monitor-store): an XGBoost flights champion trained on
Jan-Mar 2013 (its training rows are the reference), and a capture folder in SageMaker Data
Capture format made by replaying the Apr-Dec 2013 flights cyclically as `--rows` single-row
JSON requests (dataframe_split in, the task's {"predictions": [...]} out, hourly
yyyy/mm/dd/hh files).

Measured, each in a fresh process (peak RSS = that process's VmHWM):
  ours       the whole `loop.monitor` job on the capture folder: count all lines, decode a
             seeded random sample of them (`monitor.decode_rows`, in a worker process while
             Evidently imports), drift verdicts on the decoded rows, prediction drift, two
             Evidently reports on `monitor.sample_rows`-row samples, MLflow logging. Median
             of `--repeats` runs. Peak RSS = parent VmHWM + the decoding worker's peak.
  evidently  `Report([DataDriftPreset()])` on the full current rows vs the same reference
             (current decoded up front from a Parquet copy, not timed: its time and memory
             are the preset's alone). `--evidently-repeats` runs (default 1: ~1 min each).
Verdict agreement: per feature, our drifted flag vs the preset's on the full data, and the
overall dataset verdict (share of drifted columns >= the preset's drift_share, 0.5).

    .venv/bin/python -m bench.bench_monitor [--rows 1000000] [--repeats 3]
        [--decode-rows N (0 = decode every line)] [--sample-rows N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from bench.common import flights_xgboost_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
STORE = RESULTS / ".monitor-store"
NAME = "flights-monitor-bench"
START = datetime(2026, 6, 1, tzinfo=UTC)
SINCE, UNTIL = "2026-06-01T00:00:00Z", "2027-06-01T00:00:00Z"


def _env() -> None:
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{STORE / 'mlflow.db'}"
    os.chdir(STORE)


def champion(monitor: dict | None = None) -> Path:
    """Train (once) the Jan-Mar flights champion; returns the config path."""
    STORE.mkdir(parents=True, exist_ok=True)
    config = STORE / "config.yaml"
    body = flights_xgboost_config(NAME)
    body["monitor"] = {"cooldown_minutes": 0, **(monitor or {})}
    config.write_text(yaml.safe_dump(body, sort_keys=False))
    _env()
    from ctloop import loop, registry, tracking
    from ctloop.config import load_config

    tracking.configure()
    if registry.champion(NAME) is None:
        print("training the Jan-Mar flights champion ...", flush=True)
        best = loop.train(load_config(config)).best
        mv = registry.register(NAME, f"runs:/{best.run_id}/model", best.run_id, {})
        registry.move_champion(NAME, mv.version)
    return config


def generate(rows: int) -> Path:
    """Replay Apr-Dec flights as `rows` captured single-row requests (cached per row count)."""
    import numpy as np
    import orjson

    from ctloop import registry, tracking
    from ctloop.data import FLIGHTS_TIME, load_flights

    folder = STORE / f"capture-{rows}"
    done = folder / ".complete"
    if done.exists():
        return folder
    print(f"writing {rows:,} captured requests ...", flush=True)
    model = tracking.load_model(registry.champion(NAME).uri)
    flights, _ = load_flights()
    later = flights[flights[FLIGHTS_TIME] >= "2013-04-01"].reset_index(drop=True)
    replay = later.iloc[np.arange(rows) % len(later)].reset_index(drop=True)
    columns = list(model.feature_columns)
    features = replay[columns]
    features.to_parquet(STORE / f"current-{rows}.parquet", index=False)
    responses = model.task.output_records(model.scores(features))  # the served body per row
    values = features.astype(object).where(features.notna(), None).to_numpy().tolist()
    step = timedelta(days=10) / rows  # ten days of traffic, 240 hourly folders
    handles: dict[str, object] = {}
    for i, row in enumerate(values):
        when = START + i * step
        hour = when.strftime("%Y/%m/%d/%H")
        handle = handles.get(hour)
        if handle is None:
            for old in handles.values():
                old.close()
            (folder / "flights" / "local" / hour).mkdir(parents=True, exist_ok=True)
            handle = open(folder / "flights" / "local" / hour / "capture.jsonl", "ab")  # noqa: SIM115
            handles = {hour: handle}
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
        request = orjson.dumps({"dataframe_split": {"columns": columns, "data": [row]}})
        response = orjson.dumps({"predictions": [responses[i]]})
        handle.write(orjson.dumps({
            "captureData": {
                "endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
                                  "data": request.decode(), "encoding": "JSON"},
                "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                                   "data": response.decode(), "encoding": "JSON"}},
            "eventMetadata": {"eventId": f"ev-{i}", "inferenceTime": stamp},
            "eventVersion": "0"}) + b"\n")  # fmt: skip
    for handle in handles.values():
        handle.close()
    done.touch()
    return folder


def _peak_rss_mib() -> float:
    """This process's own peak RSS. VmHWM belongs to the address space made by exec, whereas
    ru_maxrss can carry the forking parent's high-water mark into the child."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_ours(config: Path, capture: Path) -> dict:
    _env()
    from ctloop import loop
    from ctloop.config import load_config

    started = time.perf_counter()
    result = loop.monitor(load_config(config), current=str(capture), since=SINCE, until=UNTIL)
    seconds = time.perf_counter() - started
    verdicts = {c: c in result.drifted_columns for c in result.feature_scores}
    own = _peak_rss_mib()
    # The job may decode in a worker process: add its peak (largest waited-for child), an
    # upper bound of the two processes' simultaneous peak.
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": seconds, "peak_rss_mib": own + worker, "peak_rss_parent_mib": own,
            "peak_rss_worker_mib": worker, "verdicts": verdicts,
            "scores": result.feature_scores, "methods": result.feature_methods,
            "decision": result.decision, "drift_share": result.drift_share,
            "rows": result.rows, "timings": result.timings}  # fmt: skip


def child_evidently(rows: int) -> dict:
    _env()
    import pandas as pd

    from ctloop import registry, tracking

    champion_version = registry.champion(NAME)
    model = tracking.load_model(champion_version.uri)
    parent = tracking.run_info(champion_version.run_id)["tags"]["ctloop.parent_run_id"]
    reference = tracking.load_reference(parent)[list(model.feature_columns)]
    current = pd.read_parquet(STORE / f"current-{rows}.parquet")
    from ctloop.monitor.frames import normalise

    categorical = list(model.encoder.vocabularies)
    numeric = [c for c in model.feature_columns if c not in categorical]
    # the columns as the monitor compares them (booleans 1/0, dates as epoch seconds)
    reference, current = normalise(reference, model), normalise(current, model)
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    started = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition))
    payload = snapshot.dict()
    seconds = time.perf_counter() - started
    verdicts, scores, methods = {}, {}, {}
    for metric in payload["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            column, value, threshold = config["column"], float(metric["value"]), config["threshold"]
            p_value = "p_value" in config["method"]
            verdicts[column] = value < threshold if p_value else value >= threshold
            scores[column], methods[column] = value, config["method"]
    return {"seconds": seconds, "peak_rss_mib": _peak_rss_mib(), "verdicts": verdicts,
            "scores": scores, "methods": methods, "rows": len(current),
            "reference_rows": len(reference)}  # fmt: skip


def _spawn(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench.bench_monitor", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--evidently-repeats", type=int, default=1)
    parser.add_argument("--decode-rows", type=int, default=None,
                        help="monitor.decode_rows (default: the config default; 0 = all lines)")
    parser.add_argument("--sample-rows", type=int, default=None,
                        help="monitor.sample_rows for the reports (default: config default)")
    parser.add_argument("--child", choices=["ours", "evidently"])
    args = parser.parse_args()
    if args.child == "ours":
        print(json.dumps(child_ours(STORE / "config.yaml", STORE / f"capture-{args.rows}"),
                         default=str))  # fmt: skip
        return
    if args.child == "evidently":
        print(json.dumps(child_evidently(args.rows), default=str))
        return

    overrides: dict = {}
    if args.decode_rows is not None:
        overrides["decode_rows"] = args.decode_rows or None
    if args.sample_rows is not None:
        overrides["sample_rows"] = args.sample_rows
    champion(overrides)
    capture = generate(args.rows)
    size = sum(p.stat().st_size for p in capture.rglob("*.jsonl"))
    ours = [_spawn("--child", "ours", "--rows", str(args.rows)) for _ in range(args.repeats)]
    theirs = [_spawn("--child", "evidently", "--rows", str(args.rows))
              for _ in range(args.evidently_repeats)]  # fmt: skip
    ref = theirs[0]
    columns = sorted(ref["verdicts"])
    agree = {c: ours[0]["verdicts"].get(c) == ref["verdicts"][c] for c in columns}
    share_ours = sum(ours[0]["verdicts"].values()) / len(ours[0]["verdicts"])
    share_theirs = sum(ref["verdicts"].values()) / len(ref["verdicts"])
    summary = {
        "rows": args.rows, "capture_mib": round(size / 2**20, 1),
        "reference_rows": ref["reference_rows"],
        "ours": {"median_s": statistics.median(r["seconds"] for r in ours),
                 "runs_s": [round(r["seconds"], 2) for r in ours],
                 "peak_rss_mib": max(r["peak_rss_mib"] for r in ours),
                 "timings_first_run": ours[0]["timings"], "decision": ours[0]["decision"],
                 "rows_first_run": ours[0]["rows"], "monitor_overrides": overrides},
        "evidently_preset_full": {"median_s": statistics.median(r["seconds"] for r in theirs),
                                  "runs_s": [round(r["seconds"], 2) for r in theirs],
                                  "peak_rss_mib": max(r["peak_rss_mib"] for r in theirs)},
        "verdicts": {c: {"ours": ours[0]["verdicts"].get(c), "evidently": ref["verdicts"][c],
                         "score_ours": ours[0]["scores"].get(c), "score_evidently":
                         ref["scores"][c], "method": ref["methods"][c]} for c in columns},
        "columns_agreeing": f"{sum(agree.values())}/{len(columns)}",
        "dataset_drift": {"ours": share_ours >= 0.5, "evidently": share_theirs >= 0.5,
                          "share_ours": share_ours, "share_evidently": share_theirs},
        "verdicts_stable_across_runs": all(r["verdicts"] == ours[0]["verdicts"] for r in ours),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "note": "shared machine: other engineers' jobs ran at the same time"},
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "monitor.json").write_text(json.dumps(summary, indent=1, default=str))
    o, e = summary["ours"], summary["evidently_preset_full"]
    print(f"\nmonitor job on {args.rows:,} captured rows ({summary['capture_mib']} MiB of JSON "
          f"lines), reference {summary['reference_rows']:,} rows")  # fmt: skip
    print(f"{'':32}{'median s':>10}{'peak RSS MiB':>14}  runs")
    print(f"{'ctloop monitor (whole job)':32}{o['median_s']:>10.1f}{o['peak_rss_mib']:>14.0f}"
          f"  {o['runs_s']}")  # fmt: skip
    print(f"{'Evidently DataDriftPreset full':32}{e['median_s']:>10.1f}{e['peak_rss_mib']:>14.0f}"
          f"  {e['runs_s']}")  # fmt: skip
    print(f"\n{'column':18}{'method':32}{'ours':>10}{'evidently':>11}  verdicts")
    for c, v in summary["verdicts"].items():
        mark = "same" if v["ours"] == v["evidently"] else "DIFFERENT"
        print(f"{c:18}{v['method']:32}{v['score_ours']:>10.4f}{v['score_evidently']:>11.4f}  "
              f"{'drift' if v['ours'] else 'ok'}/{'drift' if v['evidently'] else 'ok'} {mark}")
    print(f"\ncolumns agreeing {summary['columns_agreeing']}; dataset drift ours "
          f"{summary['dataset_drift']['ours']} / evidently {summary['dataset_drift']['evidently']}"
          f"; timings of our first run: {o['timings_first_run']}")  # fmt: skip
    r = o["rows_first_run"]
    print(f"current rows tested {r.get('current')} from {r.get('decoded_lines')} decoded of "
          f"{r.get('capture_lines')} capture lines; monitor overrides {overrides or 'none'}")
    print(f"wrote {RESULTS / 'monitor.json'}")


if __name__ == "__main__":
    main()
