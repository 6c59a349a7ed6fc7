"""Full-data verdicts must equal Evidently's DataDriftPreset on the same data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctloop.monitor.drift import column_drift, dataset_drift
from tests.conftest import make_churn

COLUMNS = ["tenure", "monthly_charges", "contract", "internet"]
CATEGORICAL = ["contract", "internet"]


def _evidently_verdicts(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, tuple]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=["tenure", "monthly_charges"],
                                categorical_columns=CATEGORICAL)  # fmt: skip
    snapshot = Report([DataDriftPreset(columns=COLUMNS)]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition))
    out = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            out[config["column"]] = (config["method"], float(metric["value"]))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("rows", [600, 3000])  # p-value tests below 1000 rows, distances above
def test_scores_equal_evidentlys_preset(rows: int) -> None:
    reference = make_churn(rows, seed=1)[COLUMNS]
    current = make_churn(rows, seed=2, shift=0.15)[COLUMNS]
    current.loc[current.index[: rows // 3], "contract"] = "two-year"
    ours = {d.column: d for d in dataset_drift(reference, current, COLUMNS, CATEGORICAL)}
    theirs = _evidently_verdicts(reference, current)
    assert set(ours) == set(theirs)
    for column, (method, score) in theirs.items():
        assert ours[column].score == pytest.approx(score, rel=1e-9, abs=1e-12), column
        assert ours[column].method.split("_")[0] in method.lower().replace("-", ""), method


def test_same_distribution_no_drift_and_shifts_named() -> None:
    reference = make_churn(3000, seed=1)[COLUMNS]
    same = make_churn(3000, seed=5)[COLUMNS]
    assert [d.column for d in dataset_drift(reference, same, COLUMNS, CATEGORICAL)
            if d.drifted] == []  # fmt: skip
    scaled = same.assign(monthly_charges=same["monthly_charges"] * 1.5)
    dominated = same.assign(contract=np.where(np.arange(3000) % 10 < 8, "two-year",
                                              same["contract"]))  # fmt: skip
    drifted = {d.column for d in dataset_drift(reference, scaled, COLUMNS, CATEGORICAL)
               if d.drifted}  # fmt: skip
    assert drifted == {"monthly_charges"}
    drifted = {d.column for d in dataset_drift(reference, dominated, COLUMNS, CATEGORICAL)
               if d.drifted}  # fmt: skip
    assert drifted == {"contract"}


def test_empty_side_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="'x' has no values in the current data"):
        column_drift(pd.Series([1.0, 2.0], name="x"), pd.Series([np.nan], name="x"), "num")
