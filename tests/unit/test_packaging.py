"""The repository keeps its promises to people who install or `mlflow run` it."""

import subprocess
import sys
import tomllib

import yaml

from tests.conftest import REPO


def test_conda_env_has_the_same_pins_as_pyproject():
    result = subprocess.run([sys.executable, str(REPO / "scripts/sync_conda_env.py"), "--check"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout


def test_every_runtime_dependency_is_pinned_exactly():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert deps and all("==" in dep for dep in deps), deps


def test_mlproject_declares_main_and_train_with_typed_parameters():
    project = yaml.safe_load((REPO / "MLproject").read_text())
    assert project["conda_env"] == "conda.yaml"
    for entry in ("main", "train"):
        params = project["entry_points"][entry]["parameters"]
        assert {"config", "start", "end"} <= set(params)
        assert all("type" in spec for spec in params.values())
