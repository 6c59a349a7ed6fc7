"""The scoring protocol: every MLflow payload format gives the same matrix; bad input is 4xx."""

from __future__ import annotations

import io
import math

import numpy as np
import orjson
import pandas as pd
import pytest

from ctloop.features import FeatureEncoder
from ctloop.serve.protocol import CSV, JSON, PARQUET, RequestError, encode_request, media_type

COLUMNS = ["tenure", "monthly_charges", "contract", "internet"]
ROWS = [[3.0, 80.5, "month-to-month", "fiber"], [60.0, None, "two-year", None]]


@pytest.fixture(scope="module")
def encoder() -> FeatureEncoder:
    frame = pd.DataFrame(ROWS * 3, columns=COLUMNS)
    return FeatureEncoder.fit(frame, COLUMNS, ["contract", "internet"])


def _records() -> list[dict]:
    return [dict(zip(COLUMNS, row, strict=True)) for row in ROWS]


def _columnar() -> dict:
    return {c: [row[i] for row in ROWS] for i, c in enumerate(COLUMNS)}


def _parquet() -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame(ROWS, columns=COLUMNS).to_parquet(buffer)
    return buffer.getvalue()


PAYLOADS = {
    "dataframe_split": (JSON, orjson.dumps({"dataframe_split": {"columns": COLUMNS,
                                                                "data": ROWS}})),
    "dataframe_split_reordered": (JSON, orjson.dumps({"dataframe_split": {
        "columns": COLUMNS[::-1], "data": [row[::-1] for row in ROWS]}})),
    "dataframe_records": (JSON, orjson.dumps({"dataframe_records": _records()})),
    "instances_records": (JSON, orjson.dumps({"instances": _records()})),
    "instances_columnar": (JSON, orjson.dumps({"instances": _columnar()})),
    "inputs_columnar": (JSON, orjson.dumps({"inputs": _columnar()})),
    "inputs_records": (JSON, orjson.dumps({"inputs": _records()})),
    "python_json_nan": (JSON, b'{"dataframe_split": {"columns": ["tenure", "monthly_charges", '
                              b'"contract", "internet"], "data": [[3, 80.5, "month-to-month", '
                              b'"fiber"], [60, NaN, "two-year", null]]}}'),
    "csv": (CSV, b"tenure,monthly_charges,contract,internet\n3,80.5,month-to-month,fiber\n"
                 b"60,,two-year,\n"),
    "parquet": (PARQUET, _parquet()),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_every_format_encodes_the_same_rows(encoder: FeatureEncoder, name: str) -> None:
    mime, body = PAYLOADS[name]
    expected = encoder.encode_frame(pd.DataFrame(ROWS, columns=COLUMNS))
    got = encode_request(body, mime, encoder)
    np.testing.assert_array_equal(got, expected)
    assert math.isnan(got[1, 1]) and math.isnan(got[1, 3])


def test_content_type_parameters_follow_mlflow() -> None:
    assert media_type("application/json; charset=UTF-8").kind == JSON
    for header, fragment in [(None, "missing Content-Type"), ("text/plain", "unsupported"),
                             ("application/json; format=pandas-split", "format"),
                             ("text/csv; charset=latin-1", "utf-8")]:  # fmt: skip
        with pytest.raises(RequestError) as info:
            media_type(header)
        assert info.value.status == 415 and fragment in info.value.message


# (body, words the message must contain): each a way real clients get a request wrong.
MALFORMED: list[tuple[bytes, str]] = [
    (b"", "empty"),
    (b"{", "invalid JSON"),
    (b"not json", "invalid JSON"),
    (b"[1, 2]", "JSON list"),
    (b'"text"', "JSON str"),
    (b"{}", "exactly one of"),
    (b'{"data": []}', "unknown key 'data'"),
    (b'{"dataframe_split": {}, "inputs": {}}', "exactly one of"),
    (b'{"dataframe_split": []}', "'columns' and 'data'"),
    (b'{"dataframe_split": {"data": [[1]]}}', "columns must be a list"),
    (b'{"dataframe_split": {"columns": ["tenure"]}}', "data must be a list"),
    (b'{"dataframe_split": {"columns": "tenure", "data": []}}', "columns must be a list"),
    (b'{"dataframe_split": {"columns": [1, 2], "data": []}}', "must be strings"),
    (b'{"dataframe_split": {"columns": ["tenure"], "data": [[1]]}}', "missing feature column"),
    (b'{"dataframe_split": {"columns": ["tenure","tenure","contract","internet"],'
     b' "data": []}}', "duplicate column 'tenure'"),
    (b'{"dataframe_split": {"columns": ["tenure","monthly_charges","contract","internet"],'
     b' "data": []}}', "no rows"),
    (b'{"dataframe_split": {"columns": ["tenure","monthly_charges","contract","internet"],'
     b' "data": [[1, 2, "a"]]}}', "row 0 has 3 values for 4"),
    (b'{"dataframe_split": {"columns": ["tenure","monthly_charges","contract","internet"],'
     b' "data": [1, 2, 3, 4]}}', "must be a list of 4 values"),
    (b'{"dataframe_split": {"columns": ["tenure","monthly_charges","contract","internet"],'
     b' "data": [["x", 2, "a", "b"]]}}', "'tenure' must be numeric"),
    (b'{"dataframe_split": {"columns": ["tenure","monthly_charges","contract","internet"],'
     b' "data": [[true, 2, "a", "b"]]}}', "'tenure' must be numeric"),
    (b'{"dataframe_split": {"columns": ["tenure","monthly_charges","contract","internet"],'
     b' "data": [[[1], 2, "a", "b"]]}}', "column 'tenure'"),
    (b'{"dataframe_split": {"columns": ["tenure","monthly_charges","contract","internet"],'
     b' "data": [[1, 2, {"a": 1}, "b"]]}}', "column 'contract'"),
    (b'{"dataframe_split": {"columns": ["tenure","monthly_charges","contract","internet"],'
     b' "data": [[1, Infinity, "a", "b"]]}}', "infinite"),
    (b'{"dataframe_split": {"columns": ["tenure","monthly_charges","contract","internet"],'
     b' "data": [[1e39, 2, "a", "b"]]}}', "infinite"),
    (b'{"dataframe_split": {"columns": ["tenure","monthly_charges","contract","internet"],'
     b' "data": [[1' + b"0" * 400 + b', 2, "a", "b"]]}}', "number"),
    (b'{"dataframe_split": {"columns": ["tenure","monthly_charges","contract","internet"],'
     b' "data": [[1, 2, "a", "b"]], "orient": "split"}}', "unknown key 'orient'"),
    (b'{"dataframe_records": {"tenure": 1}}', "list of objects"),
    (b'{"dataframe_records": [1, 2]}', "must be an object"),
    (b'{"dataframe_records": [{"tenure": 1}]}', "missing feature column"),
    (b'{"dataframe_records": [{"tenure": "abc", "monthly_charges": 2, "contract": "a",'
     b' "internet": "b"}]}', "'tenure' must be numeric"),
    (b'{"dataframe_records": [{"tenure": 1, "monthly_charges": [2], "contract": "a",'
     b' "internet": "b"}]}', "column 'monthly_charges'"),
    (b'{"dataframe_records": []}', "no rows"),
    (b'{"instances": "abc"}', "list of objects"),
    (b'{"instances": [[1, 2, "a", "b"]]}', "must be an object"),
    (b'{"inputs": {"tenure": [1], "monthly_charges": [2], "contract": ["a"]}}',
     "missing feature column 'internet'"),
    (b'{"inputs": {"tenure": [1, 2], "monthly_charges": [2], "contract": ["a"],'
     b' "internet": ["b"]}}', "different lengths"),
    (b'{"inputs": {"tenure": 1, "monthly_charges": 2, "contract": "a", "internet": "b"}}',
     "must be a list"),
    (b'{"inputs": 5}', "list of objects"),
    (b'{"inputs": null}', "list of objects"),
    (b'{"dataframe_split": null}', "'columns' and 'data'"),
    (b"\xff\xfe{}", "invalid JSON"),
    (b"[" * 5000 + b"]" * 5000, "invalid JSON"),
]  # fmt: skip

MALFORMED_CSV: list[tuple[bytes, str]] = [
    (b"\n", "header row"),
    (b"tenure,monthly_charges\n1,2\n", "missing feature column"),
    (b"tenure,monthly_charges,contract,internet\n1,2,a\n", "CSV row 1 has 3 values"),
    (b"tenure,monthly_charges,contract,internet\nx,2,a,b\n", "'tenure' must be numeric"),
    (b"tenure,monthly_charges,contract,internet\n", "no rows"),
    (b"tenure,monthly_charges,contract,internet\n1,inf,a,b\n", "infinite"),
    (b"\xff\xfe\x00", "not valid UTF-8"),
    (b'tenure,monthly_charges,contract,internet\n1,2,"a\n', "malformed CSV"),
]


@pytest.mark.parametrize(("body", "fragment"), MALFORMED + MALFORMED_CSV)
def test_malformed_requests_are_4xx_naming_the_problem(encoder: FeatureEncoder, body: bytes,
                                                       fragment: str) -> None:  # fmt: skip
    mime = CSV if (body, fragment) in MALFORMED_CSV else JSON
    with pytest.raises(RequestError) as info:
        encode_request(body, mime, encoder)
    assert 400 <= info.value.status < 500
    assert fragment in info.value.message
    payload = orjson.loads(info.value.body())
    assert payload["error_code"] and payload["message"] == info.value.message


def test_bad_parquet_is_400(encoder: FeatureEncoder) -> None:
    with pytest.raises(RequestError, match="not a readable Parquet"):
        encode_request(b"PAR1 not really", PARQUET, encoder)


def test_corpus_is_large_enough() -> None:
    assert len(MALFORMED) + len(MALFORMED_CSV) >= 50


@pytest.mark.parametrize("body", [
    b'{"dataframe_split": {"columns": ["id","tenure","monthly_charges","contract","internet"],'
    b' "data": [["c1",1,2,"a","b"]]}}',
    b'{"dataframe_records": [{"id": "c1", "tenure": 1, "monthly_charges": 2, "contract": "a",'
    b' "internet": "b", "churn": [1]}]}',
    b'{"inputs": {"id": ["c1"], "tenure": [1], "monthly_charges": [2], "contract": ["a"],'
    b' "internet": ["b"]}}',
])
def test_columns_the_model_does_not_use_are_ignored_like_mlflow_serve(encoder, body):
    """A row straight from the user's table (an ID, the label) scores as without them."""
    plain = encode_request(b'{"dataframe_records": [{"tenure": 1, "monthly_charges": 2,'
                           b' "contract": "a", "internet": "b"}]}', JSON, encoder)
    np.testing.assert_array_equal(encode_request(body, JSON, encoder), plain)
    with_extra_csv = b"id,tenure,monthly_charges,contract,internet\nc1,1,2,a,b\n"
    np.testing.assert_array_equal(encode_request(with_extra_csv, CSV, encoder), plain)
