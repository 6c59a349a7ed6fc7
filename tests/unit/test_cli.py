"""The command line: every contract command exists, and failures map to documented exit codes."""

import subprocess
import sys

import typer

from ctloop import cli

CONTRACT = {
    "train": {"--config", "--start", "--end"},
    "select": {"--config", "--run-id"},
    "run": {"--config", "--start", "--end"},
    "serve": {"--config", "--host", "--port"},
    "deploy": {"--config", "--target", "--rollback"},
    "monitor": {"--config", "--current", "--since", "--until", "--retrain", "--every"},
    "demo": {"--config"},
    "status": {"--config"},
    "promote": {"--config", "--version", "--force"},
    "rollback": {"--config"},
    "predict": {"--config", "--input", "--output"},
}


def test_every_contract_command_has_its_options():
    group = typer.main.get_command(cli.app)
    for name, options in CONTRACT.items():
        command = group.commands[name]
        declared = {opt for param in command.params for opt in param.opts}
        assert options <= declared, (name, options - declared)


def ctloop(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctloop", *args], capture_output=True,
                          text=True, timeout=120)


def test_usage_errors_exit_2_and_user_errors_exit_1_with_one_line(tmp_path):
    assert ctloop("train", "--no-such-option").returncode == 2
    assert ctloop("no-such-command").returncode == 2
    done = ctloop("train", "--config", str(tmp_path / "absent.yaml"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'absent.yaml'}: config "
                                                "file not found"]
    assert cli.EXIT_GATE_REJECTED == 3
