"""The GitHub workflows call real `ctloop` commands with real options, and document secrets.

Parsed with PyYAML; each `ctloop ...` line of a `run:` step is checked against typer's click
object (typer 0.29 vendors click, hence duck typing rather than click classes), so renaming
a command or an option breaks this test instead of a 3 a.m. CT job.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from ctloop import cli

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
NAMES = ("ci.yml", "ct.yml", "cd.yml")


def _load(name: str) -> dict:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as the boolean True.
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def _steps(doc: dict) -> list[dict]:
    return [step for job in doc["jobs"].values() for step in job.get("steps", [])]


def _ctloop_calls(doc: dict) -> list[list[str]]:
    """Argument lists of every ctloop invocation in the run steps (line continuations joined)."""
    calls = []
    for step in _steps(doc):
        script = step.get("run", "").replace("\\\n", " ")
        for line in script.splitlines():
            words = shlex.split(line, comments=True)
            for i, word in enumerate(words):
                if word == "ctloop" or word.endswith("bin/ctloop"):  # not src/ctloop
                    calls.append(words[i + 1:])
                    break
    return calls


def _check_call(group: Any, args: list[str]) -> None:
    assert args, "a bare `ctloop` call"
    command = group.commands.get(args[0])
    assert command is not None, f"`ctloop {args[0]}` does not exist"
    options = {opt: param for param in command.params if param.param_type_name == "option"
               for opt in (*param.opts, *param.secondary_opts)}
    rest = args[1:]
    i = 0
    while i < len(rest):
        word = rest[i]
        assert word.startswith("-"), f"`ctloop {args[0]}`: unexpected argument {word!r}"
        name, _, inline = word.partition("=")
        param = options.get(name)
        assert param is not None, f"`ctloop {args[0]}` has no option {name}"
        takes_value = not param.is_flag
        assert not (inline and not takes_value), f"{name} is a flag"
        if takes_value and not inline:
            assert i + 1 < len(rest), f"{name} needs a value"
            i += 1
        i += 1
    required = [p for p in command.params if p.required]
    for param in required:
        assert any(o in options and options[o] is param for o in
                   (w.partition("=")[0] for w in rest)), f"`ctloop {args[0]}` needs {param.opts}"


@pytest.fixture(scope="module")
def group() -> Any:
    command = typer.main.get_command(cli.app)
    assert command.commands, "the ctloop app has no subcommands"
    return command


@pytest.mark.parametrize("name", NAMES)
def test_workflow_parses_and_every_ctloop_call_exists(name: str, group: Any) -> None:
    doc = _load(name)
    assert doc["on"] and doc["jobs"]
    for args in _ctloop_calls(doc):
        _check_call(group, args)


@pytest.mark.parametrize("name", NAMES)
def test_every_secret_used_is_documented_and_none_is_inline(name: str) -> None:
    text = (WORKFLOWS / name).read_text()
    header = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    for secret in set(re.findall(r"secrets\.([A-Z0-9_]+)", text)):
        assert re.search(rf"#\s+{secret}\s", header), f"{name}: secret {secret} not documented"
    for variable in set(re.findall(r"vars\.([A-Z0-9_]+)", text)):
        assert re.search(rf"#\s+{variable}\s", header), f"{name}: variable {variable} undocumented"
    # Credentials come from secrets or OIDC, never literal values or long-lived AWS keys.
    assert "AWS_SECRET_ACCESS_KEY" not in text
    assert not re.search(r"PASSWORD:\s*[^$\s]", text)


def test_ci_lints_typechecks_and_runs_the_suite() -> None:
    runs = [step.get("run", "") for step in _steps(_load("ci.yml"))]
    assert any("make lint" in r for r in runs)
    assert any("mypy" in r for r in runs)
    assert any(r.strip() in (".ci/run", "make test") for r in runs)
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_ct_is_scheduled_and_retrains(group: Any) -> None:
    doc = _load("ct.yml")
    assert doc["on"]["schedule"][0]["cron"]
    calls = _ctloop_calls(doc)
    assert any(args[0] == "monitor" and "--retrain" in args for args in calls)
    assert doc["env"]["MLFLOW_TRACKING_URI"] == "${{ secrets.MLFLOW_TRACKING_URI }}"


def test_cd_deploys_the_champion_to_sagemaker_on_dispatch_and_after_ct() -> None:
    doc = _load("cd.yml")
    assert "workflow_dispatch" in doc["on"]
    assert doc["on"]["workflow_run"]["workflows"] == [_load("ct.yml")["name"]]
    calls = _ctloop_calls(doc)
    assert any(args[:1] == ["deploy"] and "--target" in args
               and args[args.index("--target") + 1] == "sagemaker" for args in calls)


@pytest.mark.parametrize("name", ("ct.yml", "cd.yml"))
def test_the_config_the_automation_uses_exists(name: str) -> None:
    assert (REPO / _load(name)["env"]["CTLOOP_CONFIG"]).is_file()


def test_the_checker_rejects_unknown_commands_and_options(group: Any) -> None:
    with pytest.raises(AssertionError, match="does not exist"):
        _check_call(group, ["retrain-everything"])
    with pytest.raises(AssertionError, match="has no option --target-env"):
        _check_call(group, ["deploy", "--target-env", "prod"])
    with pytest.raises(AssertionError, match="is a flag"):
        _check_call(group, ["monitor", "--retrain=yes"])


def test_the_compose_stack_is_mlflows_server_with_postgres_s3_and_auth() -> None:
    """No Docker engine here: check what the compose file would run, and its pins."""
    deploy = REPO / "deploy"
    compose = yaml.safe_load((deploy / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "minio", "mlflow"} <= set(services)
    server = (deploy / "mlflow" / "entrypoint.sh").read_text()
    for flag in ("--app-name basic-auth", "--serve-artifacts", "--artifacts-destination \"s3://",
                 "--backend-store-uri \"${DB}/mlflow\"", "MLFLOW_AUTH_CONFIG_PATH"):
        assert flag in server, flag
    assert "postgresql+psycopg2://" in server
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    # No credential has a literal value in the compose file: all come from deploy/.env.
    for service in services.values():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in ("PASSWORD", "SECRET")):
                assert str(value).startswith("${"), f"{key} has a literal value"
    pins = (deploy / "mlflow" / "Dockerfile").read_text()
    project = (REPO / "pyproject.toml").read_text()
    for pin in re.findall(r"([A-Za-z0-9_-]+==[0-9.]+)", pins):
        assert f'"{pin}"' in project, f"{pin} in the server image differs from pyproject.toml"
    assert ".env" in (deploy / ".gitignore").read_text().split()
