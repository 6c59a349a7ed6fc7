"""Regenerate conda.yaml from pyproject.toml, so the pins live in one place.

Usage: python scripts/sync_conda_env.py [--check]
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADER = """\
# The MLflow project environment for `mlflow run . --env-manager conda|virtualenv`.
# Generated from pyproject.toml by scripts/sync_conda_env.py: edit the pins there.
name: ctloop
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - pip:
"""


def render() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return HEADER + "".join(f"      - {dep}\n" for dep in deps) + "      - -e .\n"


def main() -> int:
    target = REPO / "conda.yaml"
    if "--check" in sys.argv:
        if target.read_text() != render():
            print("conda.yaml is out of step with pyproject.toml; run scripts/sync_conda_env.py")
            return 1
        return 0
    target.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
