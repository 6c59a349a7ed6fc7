"""The champion/challenger gate and the registry, on a user's own CSV in a temporary store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from ctloop import loop, registry
from ctloop.config import load_config
from tests.conftest import make_churn, write_config

pytestmark = pytest.mark.slow

WEAK = {"plots": False, "candidates": {"xgboost": {"trials": 1, "search": {
    "n_estimators": [2], "max_depth": [1], "learning_rate": [0.05]}}}}
STRONG = {"plots": False, "candidates": {"logistic_regression": {"trials": 1, "search": {
    "C": [1.0]}}}}


def config(folder: Path, training: dict, csv: str = "churn.csv", name: str = "churn") -> Path:
    if not (folder / "churn.csv").exists():
        make_churn(2000, seed=1).to_csv(folder / "churn.csv", index=False)
    sub = folder / f"cfg-{len(list(folder.glob('cfg-*')))}"
    sub.mkdir()
    return write_config(sub, {
        "name": name,
        "data": {"source": str(folder / csv), "target": "churn", "positive_label": "Yes",
                 "features": {"exclude": ["customer_id"]}},
        "training": training,
        # A generous latency budget: CI machines are shared; the gate itself is tested below.
        "gate": {"floors": {"roc_auc": 0.55}, "bootstrap_resamples": 300,
                 "latency_budget_ms": 500},
    })


def ctloop(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctloop", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ})


def stages(name: str) -> dict[int, str]:
    return {mv.version: mv.stage for mv in registry.versions(name)}


def test_two_runs_give_a_champion_then_a_gated_second_version(tmp_path, mlflow_store):
    cfg_path = config(tmp_path, STRONG)
    _, first = loop.run(load_config(cfg_path))
    assert first.promoted and first.version == 1 and first.champion_version is None
    assert {g.name for g in first.gates} >= {"loads", "signature", "floors", "latency"}
    assert registry.aliases("churn")["champion"] == 1 and stages("churn") == {1: "Production"}
    v1 = registry.get_version("churn", 1)
    for tag in ("ctloop.holdout_metrics", "ctloop.gates", "ctloop.training_run_id",
                "ctloop.config_hash", "ctloop.git_commit", "ctloop.trigger",
                "ctloop.decision_record", "ctloop.champion_since"):
        assert v1.tags.get(tag), tag
    assert Path(v1.tags["ctloop.decision_record"].removeprefix("file://")).read_text().startswith(
        "# churn v1: PROMOTED")

    # The same data and seed give the same model: no improvement, so the gate says no (exit 3).
    done = ctloop("run", "--config", str(cfg_path), cwd=tmp_path)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "failed no_regression" in done.stderr
    assert registry.aliases("churn") == {"champion": 1, "challenger": 2}
    assert stages("churn") == {1: "Production", 2: "Staging"}
    v2 = registry.get_version("churn", 2)
    assert v2.tags["ctloop.decision"] == "rejected" and v2.tags["ctloop.compared_with"] == "v1"

    probe = ("import mlflow, sys; m = mlflow.pyfunc.load_model('models:/churn@champion');"
             "print(len(m.predict(m.input_example)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ}, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("3"), done.stderr[-1000:]


def test_a_better_challenger_is_promoted_and_rollback_and_manual_promotion_are_recorded(
        tmp_path, mlflow_store):
    _, weak = loop.run(load_config(config(tmp_path, WEAK)))
    assert weak.promoted
    _, strong = loop.run(load_config(config(tmp_path, STRONG)))
    assert strong.promoted, [(g.name, g.detail) for g in strong.gates]
    regression = next(g for g in strong.gates if g.name == "no_regression")
    assert regression.evidence["lower_one_sided"] > 0
    assert registry.aliases("churn") == {"champion": 2, "previous-champion": 1, "challenger": 2}
    assert stages("churn") == {1: "Archived", 2: "Production"}
    production = mlflow.pyfunc.load_model("models:/churn/Production")
    assert production.metadata.run_id == strong.trial_run_id

    cfg = load_config(config(tmp_path, STRONG))
    assert loop.rollback(cfg) == (2, 1)
    assert registry.aliases("churn")["champion"] == 1 and stages("churn") == {
        1: "Production", 2: "Archived"}
    assert registry.get_version("churn", 2).tags["ctloop.rolled_back_at"]

    again = loop.promote(cfg, 2)  # gated: v2 still beats v1 on v2's holdout
    assert again.promoted and registry.aliases("churn")["champion"] == 2
    forced = loop.promote(cfg, 1, force=True)
    assert forced.promoted and registry.get_version("churn", 1).tags["ctloop.forced"] == "true"
    assert stages("churn") == {1: "Production", 2: "Archived"}
    with pytest.raises(loop.UserError, match="no version 7"):
        loop.promote(cfg, 7)


def test_the_gate_says_whether_its_rows_lie_outside_the_champions_training_data(
        tmp_path, mlflow_store):
    loop.run(load_config(config(tmp_path, WEAK)))
    _, same_split = loop.run(load_config(config(tmp_path, STRONG)))
    unseen = next(g for g in same_split.gates if g.name == "unseen_rows")
    assert unseen.evidence["inside"] == 0 and unseen.detail.startswith("all 300 holdout rows")
    # another split of the same table: part of the new holdout trained the champion
    body = load_config(config(tmp_path, WEAK)).model_dump(mode="json")
    body["split"]["seed"] = 7
    reshuffled = write_config(tmp_path / "cfg-0", body)
    _, other = loop.run(load_config(reshuffled))
    unseen = next(g for g in other.gates if g.name == "unseen_rows")
    assert unseen.passed and 0 < unseen.evidence["inside"] < 300
    assert f"identical to rows champion v{other.champion_version} was trained on" in unseen.detail


def test_bad_challengers_are_never_promoted(tmp_path, mlflow_store):
    assert loop.run(load_config(config(tmp_path, STRONG)))[1].promoted
    shuffled = make_churn(2000, seed=1)
    shuffled["churn"] = np.random.default_rng(0).permutation(shuffled["churn"].to_numpy())
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    _, noise = loop.run(load_config(config(tmp_path, STRONG, csv="shuffled.csv")))
    assert not noise.promoted and "floors" in noise.failed

    # A model whose files are corrupted in the artifact store fails to load: rejected.
    cfg = load_config(config(tmp_path, STRONG))
    result = loop.train(cfg)
    model_id = mlflow.get_run(result.best.run_id).data.tags["ctloop.model_uri"].split("/")[-1]
    store = Path(mlflow.get_logged_model(model_id).artifact_location.removeprefix("file://"))
    corrupted = list((store / "data" / "ctloop_model").glob("estimator.*"))
    assert corrupted
    for path in corrupted:
        path.write_bytes(b"garbage")
    broken = loop.select(cfg, result.run_id)
    assert not broken.promoted and "loads" in broken.failed
    assert registry.aliases("churn")["champion"] == 1
    assert stages("churn")[1] == "Production"
    assert all(stage != "Production" for v, stage in stages("churn").items() if v != 1)


def test_two_racing_selects_end_with_one_champion_and_consistent_stages(tmp_path, mlflow_store):
    loop.run(load_config(config(tmp_path, WEAK)))
    runs = [loop.train(load_config(config(tmp_path, STRONG))).run_id for _ in range(2)]
    cfg_path = config(tmp_path, STRONG)
    procs = [subprocess.Popen([sys.executable, "-m", "ctloop", "select", "--config",
                               str(cfg_path), "--run-id", run], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for run in runs]
    codes = [p.wait(timeout=600) for p in procs]
    assert sorted(codes) == [0, 3], [p.stderr.read()[-1500:] for p in procs]
    champion = registry.aliases("churn")["champion"]
    current = stages("churn")
    assert [v for v, s in current.items() if s == "Production"] == [champion]
    assert current[1] == "Archived" and len(current) == 3


def test_select_errors_and_exit_codes(tmp_path, mlflow_store):
    cfg_path = config(tmp_path, STRONG, name="never-trained")
    done = ctloop("select", "--config", str(cfg_path), cwd=tmp_path)
    assert done.returncode == 1
    assert "no finished training run in experiment 'never-trained'" in done.stderr
    done = ctloop("rollback", "--config", str(cfg_path), cwd=tmp_path)
    assert done.returncode == 1 and "nothing to roll back" in done.stderr
    done = ctloop("status", "--config", str(cfg_path), cwd=tmp_path)
    assert done.returncode == 0 and "no champion yet" in done.stdout
