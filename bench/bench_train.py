"""Issue 2 figures: pyfunc predict latency of the logged model, and parallel training cost.

1. Latency (the XGBoost candidate on the flights features, loaded with mlflow.pyfunc):
   single-row and 10,000-row predict, side by side with XGBoost's own `inplace_predict` on
   already-encoded arrays (the floor) and an sklearn Pipeline(OrdinalEncoder, XGBClassifier)
   logged the usual way (the baseline people start from).
2. Training: wall time of `ctloop train` on configs/flights.yaml (all candidates, parallel,
   with full MLflow logging) against the sum of the bare `fit` times of the same trials run
   sequentially on the same encoded data; peak RSS of the process and its workers.

    .venv/bin/python -m bench.bench_train [--repeats 5]
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

from bench.common import median_ms, peak_rss_mb

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
    same = {"n_estimators": int(logged["n_estimators"]), "max_depth": int(logged["max_depth"]),
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


def training(repeats: int) -> dict:
    from threadpoolctl import threadpool_limits

    from ctloop import loop
    from ctloop.candidates import fit_estimator, sample_trials
    from ctloop.config import load_config
    from ctloop.data import load_dataset, split_dataset
    from ctloop.features import FeatureEncoder

    cfg = load_config(REPO / "configs/flights.yaml")
    walls, phases = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        result = loop.train(cfg)
        walls.append(time.perf_counter() - start)
        phases.append(result.phases["trials_fit_and_logged"])
    dataset = load_dataset(cfg.data)
    splits = split_dataset(dataset, cfg.split)
    encoder = FeatureEncoder.fit(splits.train.frame, dataset.feature_columns, dataset.kinds,
                                 cfg.data.features.max_categories)
    X, y = encoder.encode_frame(splits.train.frame), splits.train.y
    trials = sample_trials(cfg.training.candidates, cfg.training.seed)
    fits = []
    for _ in range(repeats):
        total = 0.0
        with threadpool_limits(1):
            for trial in trials:
                start = time.perf_counter()
                fit_estimator(trial, dataset.task.kind, X, y, encoder.categorical_indices)
                total += time.perf_counter() - start
        fits.append(total)
    wall, fit = statistics.median(walls), statistics.median(fits)
    trial_phase = statistics.median(phases)
    return {"trials": len(trials), "cores": os.cpu_count(), "wall_s": round(wall, 2),
            "trial_phase_s": round(trial_phase, 2),
            "sequential_fit_sum_s": round(fit, 2), "ratio": round(wall / fit, 3),
            "trial_phase_ratio": round(trial_phase / fit, 3),
            "rows_train": result.rows["train"], "peak_rss_mb": round(peak_rss_mb(), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=["latency", "training"], default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="ctloop-bench-train-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.chdir(tmp)
        lat = latency(Path(tmp), args.repeats) if args.only != "training" else None
        train = training(max(1, args.repeats // 2)) if args.only != "latency" else None
    if lat:
        print(f"{'predict latency (median)':52} {'1 row ms':>10} {'10k rows ms':>12}")
        for name, row in lat["rows"].items():
            print(f"{name:52} {row['single_row_ms']:10.3f} {row['batch_10k_ms']:12.1f}")
    if train:
        print(f"\ntraining {train['trials']} trials on {train['rows_train']:,} rows, "
          f"{train['cores']} cores: wall {train['wall_s']} s vs sequential bare fits "
          f"{train['sequential_fit_sum_s']} s -> ratio {train['ratio']}; trial phase alone "
          f"(fits + plots + MLflow logging) {train['trial_phase_s']} s -> ratio "
          f"{train['trial_phase_ratio']} (peak RSS {train['peak_rss_mb']} MB)")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "train.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({"latency": lat or previous.get("latency"),
                               "training": train or previous.get("training")}, indent=1))


if __name__ == "__main__":
    main()
