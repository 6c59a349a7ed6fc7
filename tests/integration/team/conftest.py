"""The team stack, started once per session: PostgreSQL, moto S3, `mlflow server` with auth.

PostgreSQL comes from Debian's packages, installed by `scripts/postgres.sh` when missing (CI
runs as root on a fresh machine). `ctloop` itself runs in subprocesses with only the three
client variables set, exactly as a user would.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[3]
FLIGHTS = REPO / "configs" / "flights.yaml"
# Three weeks of January keep the run short; the config file itself is used unedited.
WINDOW = ("2013-01-01", "2013-01-22")


def _team_server_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("team_server",
                                                  REPO / "scripts" / "team_server.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["team_server"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def team_server() -> ModuleType:
    return _team_server_module()


@pytest.fixture(scope="session")
def team_stack(team_server: ModuleType, tmp_path_factory: pytest.TempPathFactory):
    with team_server.running(tmp_path_factory.mktemp("team-stack")) as stack:
        yield stack


def user_env(stack, **overrides: str) -> dict[str, str]:
    """This process's environment without any MLflow/AWS/token settings, plus the team's."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "AWS_")) and k != "CTLOOP_TOKEN"}
    env.update(stack.client_env())
    env.update(overrides)
    return env


def ctloop(args: list[str], env: dict[str, str], cwd: Path,
           timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctloop", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def team_champion(team_stack, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`ctloop run` on the unedited flights config against the team server (once)."""
    cwd = tmp_path_factory.mktemp("team-run")
    done = ctloop(["run", "--config", str(FLIGHTS), "--start", WINDOW[0], "--end", WINDOW[1]],
                  user_env(team_stack), cwd)
    assert done.returncode == 0, f"ctloop run failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return {"cwd": cwd, "stdout": done.stdout, "stderr": done.stderr}
