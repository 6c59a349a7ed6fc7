"""The training run's records: what a user sees in the MLflow UI must be what MLflow itself
would have recorded."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from ctloop.tracking.training_runs import dataset_schema


def _table(rows: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    when = pd.Series(pd.date_range("2024-01-01", periods=rows, freq="h"))
    when[::97] = pd.NaT
    numbers = rng.normal(size=rows)
    numbers[::13] = np.nan
    return pd.DataFrame({
        "id": np.arange(rows),
        "when": when,
        "amount": numbers,
        "flag": rng.random(rows) < 0.3,
        "nullable_int": pd.array(np.where(rng.random(rows) < 0.1, None, rng.integers(0, 9, rows)),
                                 dtype="Int64"),
        "city": rng.choice(["Oslo", "Lima", None], rows),
        "code": rng.choice(["a", "b", "c"], rows),
        "tags": [["a", "b"] if i % 2 else ["c"] for i in range(rows)],  # unhashable cells
        "category": pd.Categorical(rng.choice(["lo", "hi"], rows)),
        "never_filled": np.full(rows, np.nan),
        "waited": pd.to_timedelta(rng.integers(0, 90, rows), unit="m"),
        "maybe": pd.array(np.where(rng.random(rows) < 0.1, None, rng.random(rows) < 0.5),
                          dtype="boolean"),
    })


@pytest.mark.parametrize("table", ["every kind", "a column mixing types", "penguins"])
def test_logged_dataset_schema_is_the_one_mlflow_infers(table: str) -> None:
    import mlflow

    if table == "penguins":
        from palmerpenguins import load_penguins

        frame = load_penguins()
    else:
        frame = _table()
    if table == "a column mixing types":  # MLflow records no schema for such a table
        frame["mixed"] = np.resize(np.array([1, "x", 2.5], dtype=object), len(frame))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = mlflow.data.from_pandas(frame).schema
        fast = dataset_schema(frame)
    if expected is None:
        assert fast is None
    else:
        assert fast is not None and fast.to_dict() == expected.to_dict()
        assert len(fast.inputs) == frame.shape[1]


def test_the_installed_modules_map_built_in_a_worker_spares_mlflow_its_metadata_scan() -> None:
    """In a fresh process (pytest's has logged models already): the map a worker builds is
    the one MLflow would build, and once handed over MLflow's check of a model's requirements
    against this environment reads no package metadata (1 s of CPU otherwise)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        import importlib_metadata
        from mlflow.utils import requirements_utils

        from ctloop import tracking
        from ctloop.tracking.training_runs import _requirements, adopt_installed_modules

        assert not tracking.installed_modules_known()
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            built = pool.submit(tracking.installed_modules).result()
        adopt_installed_modules(built)
        assert tracking.installed_modules_known()

        scans = []  # MLflow catches any error of its check: count the scans instead
        scan = importlib_metadata.packages_distributions
        importlib_metadata.packages_distributions = lambda: scans.append(1) or scan()
        requirements_utils.warn_dependency_requirement_mismatches(list(_requirements()))
        importlib_metadata.packages_distributions = scan
        assert scans == [], "MLflow read the package metadata again"
        requirements_utils._MODULES_TO_PACKAGES = None
        assert tracking.installed_modules() == built
        assert {"xgboost", "lightgbm", "sklearn", "mlflow"} <= set(built)
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
