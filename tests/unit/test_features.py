"""The JSON encoder: every request shape encodes the same, unseen and missing become NaN."""

import math

import numpy as np
import pandas as pd
import pytest

from ctloop.features import EncodingError, FeatureEncoder


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
