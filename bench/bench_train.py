"""Issue 2 figures: pyfunc predict latency of the logged model, and parallel training cost.

1. Latency (the XGBoost candidate on the flights features, loaded with mlflow.pyfunc):
   single-row and 10,000-row predict, side by side with XGBoost's own `inplace_predict` on
   already-encoded arrays (the floor) and an sklearn Pipeline(OrdinalEncoder, XGBClassifier)
   logged the usual way (the baseline people start from).
2. Training: wall time of `ctloop train` on a config (default configs/flights.yaml; the
   whole search, parallel, with MLflow logging) against the sum of the bare `fit` times of
   the same trials (same parameters and early stopping) run sequentially on the same
   encoded data; peak RSS of the process and its workers.

    .venv/bin/python -m bench.bench_train [--repeats 5] [--only training] [--config PATH]

`--config bench/configs/flights_defaults.yaml`: the same table with every training default
(40 trials or 60 s), where the fits, not the fixed costs around them, make up the wall.
`--task multiclass` (or binary, regression, all): training on that table as a user's CSV with
a target of that task (`bench.common.flights_task_config`), every default, instead of a config.
`--table fair-affairs` (or another of `bench.bench_quality.TABLES`): training on that public
table's development CSV with its four-line config; tables of up to 20,000 rows without a time
column are cross-validated, and the bare fits are then each fold's fit and the refit on every
row, as the trainer makes them.
`--fresh`: each repeat in a new process, as a `ctloop train` from the command line runs.
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

import numpy as np

from bench.bench_quality import TABLES, split_csvs
from bench.bench_tasks import TASKS
from bench.common import flights_task_config, median_ms, peak_rss_mb

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def latency(workdir: Path, repeats: int) -> dict:
    import mlflow
    import xgboost as xgb
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    from ctloop import loop, tracking
    from ctloop.config import load_config

    cfg = load_config(REPO / "configs/flights.yaml")
    training = cfg.training.model_copy(update={"plots": False, "candidates": {
        "xgboost": cfg.training.candidates["xgboost"].model_copy(update={"trials": 1})}})
    cfg = cfg.model_copy(update={"training": training})
    result = loop.train(cfg)
    uri = f"runs:/{result.best.run_id}/model"
    pyfunc = mlflow.pyfunc.load_model(uri)
    model = tracking.load_model(uri)
    holdout = tracking.load_holdout(result.run_id)
    frame = holdout[list(model.feature_columns)].reset_index(drop=True)
    one, batch = frame.iloc[[0]], frame.iloc[:10_000]
    if len(batch) < 10_000:
        batch = frame.sample(10_000, replace=True, random_state=0).reset_index(drop=True)
    encoded_one, encoded_batch = model.encode(one), model.encode(batch)

    # The usual way: an sklearn pipeline with the encoding inside, logged with mlflow.sklearn.
    categorical = [c for c in model.feature_columns if c in model.encoder.vocabularies]
    logged = tracking.run_info(result.best.run_id)["params"]
    same = {"n_estimators": int(logged["n_rounds"]), "max_depth": int(logged["max_depth"]),
            "learning_rate": float(logged["learning_rate"])}
    baseline = Pipeline([
        ("encode", ColumnTransformer([("cat", OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=np.nan,
            encoded_missing_value=np.nan), categorical)], remainder="passthrough")),
        ("model", xgb.XGBClassifier(tree_method="hist", **same)),
    ])
    train_frame = tracking.load_reference(result.run_id)
    baseline.fit(train_frame[list(model.feature_columns)], train_frame[
        "arr_delayed"].to_numpy())
    baseline_dir = workdir / "baseline"
    mlflow.sklearn.save_model(baseline, str(baseline_dir), serialization_format="cloudpickle")
    baseline_pyfunc = mlflow.pyfunc.load_model(str(baseline_dir))

    rows = {
        "ctloop pyfunc (mlflow.pyfunc.load_model)": (lambda: pyfunc.predict(one),
                                                     lambda: pyfunc.predict(batch)),
        "ctloop TabularModel (what ctloop serve calls)": (lambda: model.predict(one),
                                                          lambda: model.predict(batch)),
        "sklearn Pipeline(OrdinalEncoder, XGB) pyfunc": (lambda: baseline_pyfunc.predict(one),
                                                         lambda: baseline_pyfunc.predict(batch)),
        "floor: XGBoost inplace_predict on encoded arrays": (
            lambda: model.estimator.inplace_predict(encoded_one),
            lambda: model.estimator.inplace_predict(encoded_batch)),
    }
    figures = {}
    for name, (single, many) in rows.items():
        figures[name] = {"single_row_ms": median_ms(single, repeats * 100),
                         "batch_10k_ms": median_ms(many, repeats)}
    return {"model_uri": uri, "params": same, "rows": figures}


def training(repeats: int, config: Path, two_at_once: bool = False) -> dict:
    """`ctloop train` wall time against the same trials fitted bare, one after another.

    The bare fits are exactly the fit calls the trainer makes (same parameters, same early
    stopping on the same validation split or folds, one thread), without scoring, saving,
    plots or MLflow: what the trials would cost with no framework around them.
    `two_at_once`: the same bare fits also run in two processes at the same time, each all
    of them: whether two fits on this host's cores slow each other (the ratio's floor).
    """
    from mlflow import MlflowClient
    from threadpoolctl import threadpool_limits

    from ctloop import loop
    from ctloop.candidates import Trial
    from ctloop.config import load_config
    from ctloop.data import load_dataset, split_dataset
    from ctloop.ensemble import ENSEMBLE
    from ctloop.features import FeatureEncoder
    from ctloop.train import fold_ids

    cfg = load_config(config)
    # A user's store exists after the first run: its tables are made before the clock starts
    # (creating them takes ~2.5 s, once).
    MlflowClient().search_experiments()
    dataset = load_dataset(cfg.data)
    splits = split_dataset(dataset, cfg.split)
    encoder = FeatureEncoder.fit(splits.train.frame, dataset.feature_columns, dataset.kinds,
                                 cfg.data.features.max_categories)
    X, y = encoder.encode_frame(splits.train.frame), splits.train.y
    validation = (encoder.encode_frame(splits.validation.frame), splits.validation.y)
    every_row = (np.concatenate([X, validation[0]]), np.concatenate([y, validation[1]]))
    figures, runs = [], []
    # Each run's bare fits follow it at once: this shared host's speed drifts by 20% within
    # minutes, and a ratio of two measurements minutes apart would carry that drift.
    for _ in range(repeats):
        before = cpu_seconds()
        start = time.perf_counter()
        result = loop.train(cfg)
        wall = time.perf_counter() - start
        process_cpu, workers_cpu = (a - b for a, b in zip(cpu_seconds(), before, strict=True))
        runs.append((wall, result))
        folds = fold_ids(dataset.task, every_row[1], result.cv_folds,
                          cfg.training.seed) if result.cv_folds else None
        searched = [t for t in result.trials if t.family != ENSEMBLE]  # no fit of its own

        def fit_all(searched: list = searched, folds: np.ndarray | None = folds) -> float:
            fits = 0.0
            with threadpool_limits(1):
                for number, trial in enumerate(searched):
                    params = {k: v for k, v in trial.params.items() if k != "n_rounds"}
                    bare = Trial(number, trial.family, params, cfg.training.seed)
                    fits += bare_fit_seconds(
                        bare, dataset.task.kind, encoder.categorical_indices,
                        *((X, y, validation) if folds is None else (*every_row, None)), folds)
            return fits

        fits = fit_all()
        in_run = sum(t.metrics.get("fit_seconds", 0.0) for t in result.trials)
        figures.append({"wall_s": wall, "fit_sum_s": fits, "ratio": wall / fits,
                        "fit_in_run_s": in_run, "process_cpu_s": process_cpu,
                        "workers_cpu_s": workers_cpu,
                        "trials": result.searched, "stopped_by": result.stopped_by,
                        "phases": result.phases})
        if two_at_once:
            figures[-1]["fit_sums_two_at_once_s"] = in_two_processes(fit_all)
    ratio = statistics.median(f["ratio"] for f in figures)
    middle = min(figures, key=lambda f: abs(f["ratio"] - ratio))
    return {"config": str(config.relative_to(REPO)) if config.is_relative_to(REPO)
            else str(config), "cores": os.cpu_count(), "repeats": repeats,
            "trials": middle["trials"], "stopped_by": middle["stopped_by"],
            "wall_s": round(middle["wall_s"], 2), "sequential_fit_sum_s":
            round(middle["fit_sum_s"], 2), "ratio": round(ratio, 3),
            # The same fits timed inside the run (wall time in the workers, each fold's
            # scoring included): above sequential_fit_sum_s by that scoring and by the CPU the
            # training process takes from the workers while they fit (see --two-at-once).
            "fit_sum_in_run_s": round(middle["fit_in_run_s"], 2),
            # CPU seconds of the training process (every thread) and of its worker processes:
            # beyond the fits, what the training costs (wall ~ their sum over the cores).
            "process_cpu_s": round(middle["process_cpu_s"], 2),
            "workers_cpu_s": round(middle["workers_cpu_s"], 2),
            **({"fit_sums_two_at_once_s": [[round(x, 2) for x in f["fit_sums_two_at_once_s"]]
                                            for f in figures]} if two_at_once else {}),
            "ratios": [round(f["ratio"], 3) for f in figures], "phases": middle["phases"],
            "phases_each": [f["phases"] for f in figures],
            "walls_s": [round(f["wall_s"], 2) for f in figures],
            "fit_sums_s": [round(f["fit_sum_s"], 2) for f in figures],
            "fit_sums_in_run_s": [round(f["fit_in_run_s"], 2) for f in figures],
            "families": [dict(__import__("collections").Counter(t.family for t in r.trials))
                         for _, r in runs],
            "rows_train": len(splits.train.frame), "cv_folds": result.cv_folds,
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its children that have ended
    (a training's forked workers end with it)."""
    import resource

    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))
    return (own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime)


def in_two_processes(work) -> list[float]:
    """`work()`'s result in each of two processes forked to run it at the same time."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    results = context.Queue()
    processes = [context.Process(target=lambda: results.put(work())) for _ in range(2)]
    for process in processes:
        process.start()
    figures = [results.get() for _ in processes]
    for process in processes:
        process.join()
    return figures


def bare_fit_seconds(trial, kind: str, cats: list[int], X: np.ndarray, y: np.ndarray,
                     validation: tuple | None, folds: np.ndarray | None) -> float:
    """The fit calls the trainer makes for `trial`, timed alone: one fit stopping early on
    the validation split; or, cross-validated (`folds`), each fold's fit (a booster stopping
    on its share of the fold's rows) and the refit on every row with their median rounds."""
    from ctloop.candidates import fit_estimator, fitted_rounds, refit_trial
    from ctloop.train import fold_rows

    if folds is None:
        start = time.perf_counter()
        fit_estimator(trial, kind, X, y, cats, validation=validation)
        return time.perf_counter() - start
    seconds, kept = 0.0, []
    classes = None if kind == "regression" else y.astype(np.int64)
    for _, fit_rows, stop, _ in fold_rows(folds, trial.family, classes):
        X_fit, y_fit = X[fit_rows], y[fit_rows]
        stop_rows = None if stop is None else (X[stop], y[stop])
        start = time.perf_counter()
        fitted = fit_estimator(trial, kind, X_fit, y_fit, cats, validation=stop_rows)
        seconds += time.perf_counter() - start
        kept.append(fitted_rounds(fitted, trial.family))
    rounds = None if kept[0] is None else int(np.median(kept))
    start = time.perf_counter()
    fit_estimator(refit_trial(trial, rounds), kind, X, y, cats)
    return seconds + time.perf_counter() - start


def fresh_training(repeats: int, config: Path, two_at_once: bool = False) -> dict:
    """`training` once per new process: the workers start and every library is imported
    on the clock, as in a `ctloop train` from the command line or a monitor's retrain (an
    MLflow project run). Medians of the processes' single runs."""
    import subprocess
    import sys

    runs = []
    for _ in range(repeats):
        with tempfile.NamedTemporaryFile(suffix=".json") as emitted:
            subprocess.run([sys.executable, "-m", "bench.bench_train", "--repeats", "1",
                            "--only", "training", "--config", str(config),
                            "--emit", emitted.name, *(["--two-at-once"] if two_at_once
                                                      else [])], cwd=REPO, check=True,
                           capture_output=True)
            runs.append(json.loads(Path(emitted.name).read_text()))
    fresh = {"config": runs[0]["config"], "repeats": repeats,
             "ratio": round(statistics.median(r["ratio"] for r in runs), 3),
             "ratios": [r["ratio"] for r in runs], "walls_s": [r["wall_s"] for r in runs],
             "fit_sums_s": [r["sequential_fit_sum_s"] for r in runs],
             "fit_sums_in_run_s": [r["fit_sum_in_run_s"] for r in runs],
             "process_cpu_s": [r["process_cpu_s"] for r in runs],
             "workers_cpu_s": [r["workers_cpu_s"] for r in runs],
             **({"fit_sums_two_at_once_s": [r["fit_sums_two_at_once_s"][0] for r in runs]}
                if two_at_once else {}),
             "phases_each": [r["phases"] for r in runs],
             "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}
    print(f"training in a fresh process each ({fresh['config']}): ratio {fresh['ratio']} "
          f"(median of {fresh['ratios']}); walls {fresh['walls_s']} s vs bare "
          f"{fresh['fit_sums_s']} s; CPU of the process {fresh['process_cpu_s']} s, of its "
          f"workers {fresh['workers_cpu_s']} s; peak RSS {fresh['peak_rss_mb']} MB")
    return fresh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=["latency", "training"], default=None)
    parser.add_argument("--config", type=Path, default=REPO / "configs/flights.yaml",
                        help="the config `ctloop train` runs (default: the flights demo)")
    parser.add_argument("--task", choices=[*TASKS, "all"],
                        help="training: the flights table with a target of this task")
    parser.add_argument("--table", choices=sorted(TABLES),
                        help="training: this public table's development CSV (bench_quality)")
    parser.add_argument("--fresh", action="store_true",
                        help="training: each repeat in a new process (cold workers)")
    parser.add_argument("--two-at-once", action="store_true",
                        help="training: also run the bare fits in two processes at once")
    parser.add_argument("--emit", type=Path, help=argparse.SUPPRESS)  # for --fresh's runs
    args = parser.parse_args()
    args.config = args.config.resolve()  # before the chdir below
    warnings.filterwarnings("ignore")
    if args.task:
        for task in TASKS if args.task == "all" else [args.task]:
            _train_config(task, task_config(task), args)
        return
    if args.table:
        _train_config(args.table, table_config(args.table), args)
        return
    if args.fresh:
        _save(training_fresh_process=fresh_training(args.repeats, args.config,
                                                     args.two_at_once))
        return
    with tempfile.TemporaryDirectory(prefix="ctloop-bench-train-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.chdir(tmp)
        lat = latency(Path(tmp), args.repeats) if args.only != "training" else None
        runs = args.repeats if args.only == "training" else max(1, args.repeats // 2)
        train = training(runs, args.config, args.two_at_once) if args.only != "latency" else None
    if lat:
        print(f"{'predict latency (median)':52} {'1 row ms':>10} {'10k rows ms':>12}")
        for name, row in lat["rows"].items():
            print(f"{name:52} {row['single_row_ms']:10.3f} {row['batch_10k_ms']:12.1f}")
    if args.emit and train:
        args.emit.write_text(json.dumps(train))
        return
    if train:
        _print(train)
    _save(**{key: value for key, value in (("latency", lat), ("training", train)) if value})


def _train_config(name: str, config: Path, args: argparse.Namespace) -> None:
    """The training figures of `config`, saved under `name` (fresh processes or this one)."""
    if args.fresh:
        _save(**{f"training_fresh_process_{name}": fresh_training(args.repeats, config,
                                                                  args.two_at_once)})
    else:
        _save(**{f"training_{name}": _in_this_process(args.repeats, config,
                                                      args.two_at_once)})


def task_config(task: str) -> Path:
    """The flights table with a target of `task` as a user's CSV and four-line config, kept
    under results/ (fresh processes read it by path; the CSV is built once)."""
    import yaml

    folder = RESULTS / "train-tasks"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{task}.yaml"
    config.write_text(yaml.safe_dump(flights_task_config(task, folder, f"bench-train-{task}")))
    return config


def table_config(name: str) -> Path:
    """`bench_quality`'s development CSV of table `name` (its test rows left out) and a
    four-line config for it, kept under results/."""
    import yaml

    table = TABLES[name]
    folder = RESULTS / "train-tables"
    dev_csv, _, _ = split_csvs(name, table, folder)
    data = {"source": str(dev_csv), "target": table.target}
    if table.positive_label is not None:
        data["positive_label"] = table.positive_label
    config = folder / f"{name}.yaml"
    config.write_text(yaml.safe_dump({"name": f"bench-train-{name}", "data": data}))
    return config


def _in_this_process(repeats: int, config: Path, two_at_once: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="ctloop-bench-train-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.chdir(tmp)
        train = training(repeats, config, two_at_once)
    os.chdir(REPO)
    _print(train)
    return train


def _print(train: dict) -> None:
    print(f"\ntraining ({train['config']}): {train['trials']} trials on "
          f"{train['rows_train']:,} rows, {train['cores']} cores, stopped by "
          f"{train['stopped_by']}: wall {train['wall_s']} s vs the same fits bare and "
          f"sequential {train['sequential_fit_sum_s']} s -> ratio {train['ratio']} "
          f"(median of {train['ratios']}); phases {train['phases']}; CPU of the process "
          f"{train['process_cpu_s']} s, of its workers {train['workers_cpu_s']} s; peak RSS "
          f"{train['peak_rss_mb']} MB")


def _save(**figures: dict) -> None:
    """Into results/train.json, keeping the figures of the parts not run this time."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "train.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**previous, **figures}, indent=1))


if __name__ == "__main__":
    main()
