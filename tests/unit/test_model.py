"""The deployable model: each family saves without pickle, loads, and predicts raw rows."""

import json

import numpy as np
import pandas as pd
import pytest

from ctloop.candidates import Trial, fit_estimator, native_model
from ctloop.features import FeatureEncoder
from ctloop.model import ModelLoadError, TabularModel, _load_pyfunc
from ctloop.tasks import BinaryTask
from tests.conftest import make_churn


@pytest.fixture(scope="module")
def churn():
    frame = make_churn(500)
    columns = ["tenure", "monthly_charges", "contract", "internet"]
    encoder = FeatureEncoder.fit(frame, columns, ["contract", "internet"])
    return frame, encoder, encoder.encode_frame(frame), (frame["churn"] == "Yes").to_numpy(int)


@pytest.mark.parametrize("family", ["xgboost", "linear", "hist_gradient_boosting",
                                    "random_forest"])
def test_each_family_round_trips_and_predicts_raw_columns(churn, family, tmp_path):
    frame, encoder, X, y = churn
    estimator = fit_estimator(Trial(0, family, {}, 1), "binary", X, y,
                              encoder.categorical_indices)
    estimator = native_model(estimator, family)
    model = TabularModel(encoder, estimator, family, BinaryTask("Yes", "No", 0.4))
    model.save(tmp_path / "m")
    assert "pickle" not in json.loads((tmp_path / "m/model.json").read_text())["estimator_file"]
    loaded = _load_pyfunc(str(tmp_path / "m"))
    raw = frame.drop(columns=["churn"]).head(20).copy()
    raw.loc[0, "contract"] = "never-seen"  # unseen category
    raw.loc[1, "tenure"] = np.nan  # missing value
    out = loaded.predict(raw)
    assert list(out.columns) == ["probability", "label"]
    assert out["probability"].between(0, 1).all() and out["probability"].notna().all()
    assert set(out["label"]) <= {"Yes", "No"}
    assert (out["label"] == np.where(out["probability"] >= 0.4, "Yes", "No")).all()
    np.testing.assert_allclose(out["probability"], model.predict(raw)["probability"], rtol=1e-6)


def test_untrusted_types_in_a_skops_file_are_refused(churn, tmp_path):
    """A file that would call an arbitrary function on load (here `os.system`) is refused."""
    import os

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    _, encoder, X, y = churn
    hostile = make_pipeline(FunctionTransformer(os.system),
                            fit_estimator(Trial(0, "linear", {}, 1), "binary", X, y, [2, 3]))
    model = TabularModel(encoder, hostile, "linear", BinaryTask("Yes", "No"))
    model.save(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="refusing to load untrusted type") as refused:
        TabularModel.load(tmp_path / "m")
    assert str(refused.value).endswith(("posix.system", "nt.system"))  # named, not hinted


def test_a_folder_that_is_not_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not a ctloop model folder"):
        TabularModel.load(tmp_path)


def test_records_without_pandas_frames_are_accepted(churn, tmp_path):
    frame, encoder, X, y = churn
    estimator = fit_estimator(Trial(0, "linear", {}, 1), "binary", X, y, [2, 3])
    model = TabularModel(encoder, estimator, "linear", BinaryTask("Yes", "No"))
    records = frame.drop(columns=["churn"]).head(3).to_dict(orient="records")
    assert len(model.predict(pd.DataFrame(records))) == 3


def test_an_ensemble_saves_its_members_and_predicts_their_weighted_average(churn, tmp_path,
                                                                          monkeypatch):
    import skops.io

    from ctloop.model import Members

    frame, encoder, X, y = churn
    task = BinaryTask("Yes", "No", 0.5)
    members = []
    for family in ("xgboost", "linear", "random_forest"):
        fitted = fit_estimator(Trial(0, family, {}, 1), "binary", X, y,
                               encoder.categorical_indices)
        members.append(TabularModel(encoder, native_model(fitted, family), family, task))
    weights = (0.5, 0.3, 0.2)
    model = TabularModel(encoder, Members(tuple(members), weights, ("x-0", "l-1", "r-2")),
                         "ensemble", task)
    members[1].save(tmp_path / "logged-l-1")  # a member logged on its own trial first
    dumped: list[str] = []
    library_dump = skops.io.dump
    monkeypatch.setattr(skops.io, "dump", lambda obj, file: (
        dumped.append(type(obj).__name__), library_dump(obj, file)))
    model.save(tmp_path / "m")
    # that member's folder is copied as it was saved: only the forest is saved by skops here
    assert len(dumped) == 1 and sorted(p.name for p in (tmp_path / "m/member-01").iterdir()) \
        == sorted(p.name for p in (tmp_path / "logged-l-1").iterdir())
    loaded = _load_pyfunc(str(tmp_path / "m"))
    raw = frame.drop(columns=["churn"]).head(300).copy()
    raw.loc[0, "contract"] = "never-seen"
    raw.loc[1, "tenure"] = np.nan
    expected = sum(w * m.predict(raw)["probability"].to_numpy()
                   for w, m in zip(weights, members, strict=True))
    for rows in (raw.head(1), raw.head(5), raw):  # the members' fast paths and their estimators
        out = loaded.predict(rows)
        np.testing.assert_allclose(out["probability"], expected[:len(rows)], rtol=1e-6)
    assert loaded.family == "ensemble" and loaded.estimator.names == ("x-0", "l-1", "r-2")

    member_encoder = tmp_path / "m/member-02/encoder.json"
    saved = member_encoder.read_text()
    encoding = json.loads(saved)
    encoding["columns"].append("ghost")
    member_encoder.write_text(json.dumps(encoding))
    with pytest.raises(ModelLoadError, match=r"member-02: the member's feature columns .*ghost"):
        TabularModel.load(tmp_path / "m")
    member_encoder.write_text(saved)

    meta = json.loads((tmp_path / "m/model.json").read_text())
    meta["members"][1].pop("weight")
    (tmp_path / "m/model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="valid member list"):
        TabularModel.load(tmp_path / "m")
