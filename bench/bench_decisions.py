"""Does `ctloop monitor` retrain when, and only when, the champion is doing worse?

Setup: a random sample of the built-in flights table (all of 2013, the demo's features) written
as a user's CSV without a time column, with the label of `--task`:

  binary      arr_delayed: arrived more than 15 min late (primary metric roc_auc);
  multiclass  arr_status: early (> 10 min ahead), on_time, late (> 15 min) (log_loss);
  regression  arr_delay: minutes late, heavy-tailed as it comes (rmse).

The champion is trained with ctloop on 60% of it (one fixed XGBoost trial, in a temporary
MLflow store); the other 40% (the pool) is never seen by it. Scenarios of `--sample` rows are
made from the pool, each monitored as a file once with its label column and once without:

  same           same-distribution samples (24 seeds each way);
  scaled         a numeric column rescaled or moved (distance x1.5, temp +15, dep hour +4 / +8,
                 wind speed x3);
  dominated      90% of a categorical column set to one value (carrier, origin, dest);
  subpopulation  real rows of one kind only (summer, winter, evening, morning, early, late,
                 short and long flights, winter evenings, rain, carrier EV);
  concept        the link between features and label broken while the features' marginals
                 stay put: carrier values shuffled between rows (each row keeps its label, so
                 P(label | features) changes; no label-free method can see it), and 15% / 30%
                 of the labels replaced (flipped; another class; another row's delay).

Truth, from the hidden labels: the champion's primary metric on the scenario's rows against
its value on the whole pool; harm = a drop beyond the monitor's default tolerance for that
metric (roc_auc 0.03; log_loss and rmse 10% worse). The monitor never sees the pool: it judges
against the champion's own holdout.

    PYTHONPATH=src .venv/bin/python -m bench.bench_decisions [--task binary] [--rows 100000]
        [--sample 5000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from bench.common import write_result

ROWS = 100_000  # table rows (`--rows`): 60,000 train the champion, 40,000 are the pool
SAMPLE = 5000  # rows per scenario (`--sample`): about a week of NYC departures
SAME_SEEDS = 24  # the acceptance asks for at least 20 calm samples
TARGETS = {"binary": "arr_delayed", "multiclass": "arr_status", "regression": "arr_delay"}
METRICS = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}


def _arrival_delays() -> np.ndarray:
    """Minutes late of every flight with a known arrival, in `load_flights`' row order."""
    from ctloop.data import _flights_dir

    flights = pd.read_csv(_flights_dir() / "flights.csv.zip")
    flights = flights[flights["arr_delay"].notna()]
    scheduled = pd.to_datetime(dict(year=flights["year"], month=flights["month"],
                                    day=flights["day"], hour=flights["hour"],
                                    minute=flights["minute"]))  # fmt: skip
    order = np.argsort(scheduled.to_numpy(), kind="stable")
    return flights["arr_delay"].to_numpy(dtype=np.float64)[order]


def _table(rows: int, task: str) -> pd.DataFrame:
    from ctloop.data import FLIGHTS_FEATURES, FLIGHTS_TARGET, load_flights

    frame, _ = load_flights()
    delay = _arrival_delays()
    assert np.array_equal(delay > 15, frame[FLIGHTS_TARGET].to_numpy() == 1)  # same rows
    if task == "multiclass":
        frame["arr_status"] = np.select([delay < -10, delay > 15], ["early", "late"], "on_time")
    elif task == "regression":
        frame["arr_delay"] = delay
    target = TARGETS[task]
    return frame[[*FLIGHTS_FEATURES, target]].sample(rows, random_state=0).reset_index(drop=True)


def _config(folder: Path, target: str, metric: str) -> Path:
    from ctloop.data import FLIGHTS_FEATURES

    body = {
        "name": "bench-decisions",
        "data": {"source": "table.csv", "target": target,
                 "features": {"include": list(FLIGHTS_FEATURES)}},
        "training": {"plots": False, "n_jobs": 1, "primary_metric": metric,
                     "candidates": {"xgboost": {
            "trials": 1, "search": {"n_estimators": [200], "max_depth": [6],
                                    "learning_rate": [0.1]}}}},
        "gate": {"invariance": [], "latency_budget_ms": 1000},  # a shared machine
    }  # fmt: skip
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def _scenarios(pool: pd.DataFrame, size: int,
               target: str) -> dict[str, tuple[str, pd.DataFrame]]:  # fmt: skip
    """name -> (kind, rows with labels); `size` rows each where the pool has them."""
    rng = np.random.default_rng(7)

    def sample(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
        return frame.sample(min(size, len(frame)), random_state=seed).reset_index(drop=True)

    def changed(seed: int, fn: Callable[[pd.DataFrame], None]) -> pd.DataFrame:
        out = sample(pool, seed)
        fn(out)
        return out

    def dominated(column: str, value: str) -> Callable[[pd.DataFrame], None]:
        def apply(frame: pd.DataFrame) -> None:
            frame[column] = np.where(rng.random(len(frame)) < 0.9, value, frame[column])
        return apply

    def flipped(share: float) -> Callable[[pd.DataFrame], None]:
        """A share of the labels replaced: the other class (binary), one of the other classes
        (multiclass), another row's value (regression)."""
        def apply(frame: pd.DataFrame) -> None:
            flip = np.flatnonzero(rng.random(len(frame)) < share)
            values = frame[target].to_numpy(copy=True)
            if target == TARGETS["binary"]:
                values[flip] = 1 - values[flip]
            elif target == TARGETS["multiclass"]:
                classes = np.unique(values)
                for i in flip:
                    values[i] = rng.choice(classes[classes != values[i]])
            else:
                values[flip] = rng.permutation(values[flip])
            frame[target] = values
        return apply

    out: dict[str, tuple[str, pd.DataFrame]] = {}
    for seed in range(SAME_SEEDS):
        out[f"same-{seed:02d}"] = ("same", sample(pool, 100 + seed))
    out["distance x1.5"] = ("scaled", changed(1, lambda f: f.__setitem__(
        "distance", f["distance"] * 1.5)))
    out["temp +15"] = ("scaled", changed(2, lambda f: f.__setitem__("temp", f["temp"] + 15)))
    out["dep hour +4"] = ("scaled", changed(3, lambda f: f.__setitem__(
        "sched_dep_hour", (f["sched_dep_hour"] + 4).clip(upper=23))))
    out["dep hour +8"] = ("scaled", changed(11, lambda f: f.__setitem__(
        "sched_dep_hour", (f["sched_dep_hour"] + 8).clip(upper=23))))
    out["wind speed x3"] = ("scaled", changed(12, lambda f: f.__setitem__(
        "wind_speed", f["wind_speed"] * 3)))
    out["carrier 90% EV"] = ("dominated", changed(4, dominated("carrier", "EV")))
    out["carrier shuffled"] = ("concept", changed(13, lambda f: f.__setitem__(
        "carrier", rng.permutation(f["carrier"].to_numpy()))))
    out["origin 90% LGA"] = ("dominated", changed(5, dominated("origin", "LGA")))
    out["dest 90% ATL"] = ("dominated", changed(6, dominated("dest", "ATL")))
    months = pool["month"].astype(int)
    for name, rows in {"summer (Jun-Aug)": months.between(6, 8),
                       "winter (Dec-Feb)": months.isin([12, 1, 2]),
                       "evening (dep >= 17h)": pool["sched_dep_hour"] >= 17,
                       "morning (dep < 9h)": pool["sched_dep_hour"] < 9,
                       "early (dep < 7h)": pool["sched_dep_hour"] < 7,
                       "winter evening": months.isin([12, 1, 2]).to_numpy()
                       & (pool["sched_dep_hour"] >= 17).to_numpy(),
                       "rain (precip > 0)": pool["precip"] > 0,
                       "carrier EV only": pool["carrier"] == "EV",
                       "late (dep >= 20h)": pool["sched_dep_hour"] >= 20,
                       "short (< 300 miles)": pool["distance"] < 300,
                       "long (>= 1500 miles)": pool["distance"] >= 1500}.items():  # fmt: skip
        out[name] = ("subpopulation", sample(pool[np.asarray(rows)], 8))
    out["labels 15% flipped"] = ("concept", changed(9, flipped(0.15)))
    out["labels 30% flipped"] = ("concept", changed(10, flipped(0.30)))
    return out


def _realised(model, frame: pd.DataFrame, target: str, metric: str) -> float:
    from ctloop.monitor.frames import encode_labels

    return float(model.task.metrics(encode_labels(frame[target], model.task),
                                    model.scores(frame))[metric])


def _truth(model, frame: pd.DataFrame, target: str, metric: str,
           pool_values: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    """The primary metric's realised drop and harm; and the guards the monitor also watches
    (recall, accuracy) that dropped beyond their own tolerance, which it acts on too."""
    from ctloop.monitor.performance import drop, tolerances

    out: dict[str, Any] = {"guards_harmed": []}
    for name, tol in tolerances(model.task, metric, None).items():
        value = _realised(model, frame, target, name)
        lost = float(drop(name, pool_values[name], value, name in model.task.lower_is_better))
        if name == metric:
            out.update(realised=value, drop=lost, harmful=bool(lost > tol))
        elif lost > tol:
            out["guards_harmed"].append(f"{name} {lost:+.3f}")
    return out


def run(task: str, metric: str | None, rows: int, size: int,
        folder: Path) -> dict[str, Any]:  # fmt: skip
    from ctloop import loop, tracking
    from ctloop.config import load_config
    from ctloop.monitor.performance import DEFAULT_TOLERANCES, tolerances
    from ctloop.monitor.reference import load_champion

    target, metric = TARGETS[task], metric or METRICS[task]
    table = _table(rows, task)
    cut = int(0.6 * len(table))
    table.iloc[:cut].to_csv(folder / "table.csv", index=False)
    pool = table.iloc[cut:].reset_index(drop=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    os.chdir(folder)
    tracking.configure()
    cfg = load_config(_config(folder, target, metric))
    started = time.perf_counter()
    _, decision = loop.run(cfg)
    assert decision.promoted, decision.to_markdown()
    train_s = time.perf_counter() - started
    model = load_champion(cfg)[1]
    pool_values = {name: _realised(model, pool, target, name)
                   for name in tolerances(model.task, metric, None)}  # fmt: skip
    pool_value = pool_values[metric]
    results = []
    for name, (kind, frame) in _scenarios(pool, size, target).items():
        truth = _truth(model, frame, target, metric, pool_values)
        for labelled in (True, False):
            path = folder / "current.csv"
            (frame if labelled else frame.drop(columns=[target])).to_csv(path, index=False)
            t0 = time.perf_counter()
            result = loop.monitor(cfg, current=str(path))
            seconds = time.perf_counter() - t0
            realised = {c["metric"]: c for c in result.performance.get("realised", [])}
            estimated = {c["metric"]: c for c in result.performance.get("estimated", [])}
            row = {"scenario": name, "kind": kind, "labels": labelled, **truth,
                   "decision": result.decision, "rule": result.rule,
                   "monitor_value": realised.get(metric, {}).get("observed"),
                   "monitor_drop": realised.get(metric, {}).get("drop"),
                   "monitor_drop_lower": realised.get(metric, {}).get("lower"),
                   "estimated_value": estimated.get(metric, {}).get("observed"),
                   "expected_value": (realised or estimated).get(metric, {}).get("expected"),
                   "prediction_effect": (result.prediction_drift or {}).get("score"),
                   "drift_share": result.drift_share, "seconds": round(seconds, 1)}  # fmt: skip
            results.append(row)
            print(f"{name:22s} {'labels' if labelled else 'no labels':9s} "
                  f"truth {metric} {truth['realised']:.3f} (drop {truth['drop']:+.3f}"
                  f"{' HARM' if truth['harmful'] else ''}) -> {result.decision} "
                  f"({result.rule}) est {row['estimated_value'] or float('nan'):.3f} "
                  f"pred {row['prediction_effect'] or 0:.3f} {seconds:.1f}s", flush=True)
    return {"task": task, "metric": metric, "rows": rows, "pool_rows": len(pool),
            "pool_value": pool_value, "holdout_value": decision.challenger.get(metric),
            "tolerance": DEFAULT_TOLERANCES[metric],
            "train_seconds": round(train_s, 1), "sample_rows": size, "scenarios": results,
            "summary": summarise(results)}  # fmt: skip


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Confusion counts per labels / no labels over the shifted scenarios, and the
    same-distribution samples on their own (their realised drop is noise by construction:
    one above the tolerance is chance, and the monitor must not act on it). An `alert`
    (the data looks broken: a person is told, nothing retrains) is counted apart, and so is a
    retrain on a scenario where the primary metric held but a guard the monitor also watches
    (recall, accuracy) dropped beyond its own tolerance."""
    out: dict[str, Any] = {}
    for labelled in (True, False):
        key = "labels" if labelled else "no_labels"
        rows = [r for r in results if r["labels"] == labelled]
        shifted = [r for r in rows if r["kind"] != "same"]
        same = [r for r in rows if r["kind"] == "same"]

        def count(subset: list[dict[str, Any]], harmful: bool, *decisions: str) -> int:
            return sum(r["harmful"] == harmful and r["decision"] in decisions for r in subset)

        def flagged(subset: list[dict[str, Any]], harmful: bool | None = None) -> int:
            """No action, but the summary flags an unconfirmed labelled drop."""
            return sum(r["rule"] == "unconfirmed_drop" and harmful in (None, r["harmful"])
                       for r in subset)

        guarded = [r for r in shifted if not r["harmful"] and r.get("guards_harmed")]

        out[key] = {
            "harm_retrain": count(shifted, True, "retrain"),
            "harm_alert": count(shifted, True, "alert"),
            "harm_flagged": flagged(shifted, True),
            "harm_no_action": count(shifted, True, "no_action", "no_data") - flagged(shifted,
                                                                                     True),
            "calm_retrain": count(shifted, False, "retrain") - count(guarded, False, "retrain"),
            "guard_retrain": count(guarded, False, "retrain"),
            "calm_no_action": count(shifted, False, "no_action", "no_data", "alert"),
            "same_retrains": sum(r["decision"] == "retrain" for r in same),
            "same_flagged": flagged(same),
            "same_samples": len(same),
            "same_drop_above_tolerance_by_chance": sum(r["harmful"] for r in same),
        }
    covariate = [r for r in results if not r["labels"] and r["harmful"]
                 and r["kind"] not in ("concept", "same")]  # fmt: skip
    out["no_labels_covariate_harm_flagged"] = (sum(r["decision"] == "retrain" for r in covariate),
                                               len(covariate))
    # an alert (data-quality veto) retrains nothing but tells a person: loud, not silent
    out["no_labels_covariate_harm_alerted"] = sum(r["decision"] == "alert" for r in covariate)
    return out


def markdown(result: dict[str, Any]) -> str:
    from ctloop.monitor.performance import RELATIVE_METRICS

    summary = result["summary"]
    metric = result["metric"]
    relative = " (relative)" if metric in RELATIVE_METRICS else ""
    lines = [f"{result['task'].capitalize()}, scenarios of up to {result['sample_rows']:,} rows. "
             f"Champion {metric}: {result['holdout_value']:.3f} on its holdout, "
             f"{result['pool_value']:.3f} on the {result['pool_rows']:,} unseen pool rows "
             f"(the truth's reference); harm = realised drop > {result['tolerance']}{relative}.",
             "",
             "| shifted scenarios | harmful: retrain | harmful: alert | harmful: flagged, "
             "not retrained | harmful: no action | primary held, a guard dropped: retrain | "
             "not harmful: retrain | not harmful: no retrain |",
             "|---|---|---|---|---|---|---|---|"]
    for key, title in (("labels", "with labels"), ("no_labels", "without labels")):
        s = summary[key]
        lines.append(f"| {title} | {s['harm_retrain']} | {s.get('harm_alert', 0)} | "
                     f"{s.get('harm_flagged', 0)} | {s['harm_no_action']} | "
                     f"{s.get('guard_retrain', 0)} | "
                     f"{s['calm_retrain']} | {s['calm_no_action']} |")
    lines += ["", "| same-distribution samples | retrains | flagged (unconfirmed drop) | "
              "realised drop > tolerance by chance |", "|---|---|---|---|"]
    for key, title in (("labels", "with labels"), ("no_labels", "without labels")):
        s = summary[key]
        lines.append(f"| {title} | {s['same_retrains']}/{s['same_samples']} | "
                     f"{s.get('same_flagged', 0)} | "
                     f"{s['same_drop_above_tolerance_by_chance']} |")
    flagged, total = summary["no_labels_covariate_harm_flagged"]
    alerted = summary.get("no_labels_covariate_harm_alerted", 0)
    lines.append(f"\nHarmful covariate-shift scenarios without labels: {flagged}/{total} retrain"
                 f", {alerted} more alert (data-quality veto): {flagged + alerted}/{total} "
                 "not silent")
    lines += ["", f"| scenario | realised {metric} (drop) | with labels | without labels |",
              "|---|---|---|---|"]
    by_name: dict[str, dict[bool, dict[str, Any]]] = {}
    for r in result["scenarios"]:
        by_name.setdefault(r["scenario"], {})[r["labels"]] = r
    for name, pair in by_name.items():
        r = pair[True]
        if r["kind"] == "same":
            continue
        lines.append(f"| {name} | {r['realised']:.3f} ({r['drop']:+.3f}"
                     f"{', harm' if r['harmful'] else ''}"
                     f"{''.join(f'; guard {g}' for g in r.get('guards_harmed', []))}) | "
                     f"{r['decision']} ({r['rule']}) | "
                     f"{pair[False]['decision']} ({pair[False]['rule']}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TARGETS), default="binary")
    parser.add_argument("--metric", default=None,
                        help="primary metric (default: the task's, as in METRICS)")
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--sample", type=int, default=SAMPLE, help="rows per scenario")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="re-summarise a saved bench/results/bench_decisions.json")
    args = parser.parse_args()
    if args.from_json:
        import json

        saved = json.loads(args.from_json.read_text())
        saved["summary"] = summarise(saved["scenarios"])
        print(markdown(saved))
        return
    folder = Path(args.keep or tempfile.mkdtemp(prefix="ctloop-bench-decisions-")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    cwd = Path.cwd()
    try:
        result = run(args.task, args.metric, args.rows, args.sample, folder)
    finally:
        os.chdir(cwd)
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    name = "bench_decisions" + ("" if args.task == "binary" else f"-{args.task}") + (
        f"-{args.metric}" if args.metric else "")
    write_result(name if args.sample == SAMPLE else f"{name}-sample{args.sample}", result)
    print(markdown(result))


if __name__ == "__main__":
    main()
