"""Local deployment: a detached `ctloop serve` process per model, tracked in `.ctloop/`.

`deploy` starts the server in the background (its own session, so it outlives the caller) and
waits until it answers; if one is already running for the model it asks it to re-read the
champion alias now (`POST /admin/reload`, loopback only) instead of starting another.
The state file `.ctloop/serve-<name>.json` holds pid, host, port, config and log file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from ctloop.config import Config
from ctloop.serve.server import TOKEN_ENV, ServeError, is_loopback

STATE_DIR = Path(".ctloop")


def _paths(name: str) -> dict[str, Path]:
    return {kind: STATE_DIR / f"serve-{name}.{ext}"
            for kind, ext in (("state", "json"), ("config", "yaml"), ("log", "log"))}  # fmt: skip


def _client_host(host: str) -> str:
    return host if is_loopback(host) else "127.0.0.1"


def _request(url: str, method: str = "GET", timeout: float = 5.0) -> dict[str, Any]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    token = os.environ.get(TOKEN_ENV)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"{}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(cfg: Config) -> dict[str, Any] | None:
    """The state of a live server for this model, or None (stale state files are ignored)."""
    path = _paths(cfg.name)["state"]
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not _alive(int(state.get("pid", 0))):
        return None
    try:
        _request(f"{state['url']}/ping", timeout=2)
    except (OSError, urllib.error.URLError):
        return None
    return state


def deploy(cfg: Config, wait_seconds: float = 180.0) -> dict[str, Any]:
    """Start the local server for the champion, or make the running one reload now."""
    state = running(cfg)
    if state is not None:
        try:
            answer = _request(f"{state['url']}/admin/reload", method="POST", timeout=120)
        except (OSError, urllib.error.URLError) as exc:
            raise ServeError(f"the server at {state['url']} refused the reload: {exc}") from None
        return {**state, "action": "reloaded", "model": answer["model"],
                "last_error": answer.get("last_error")}  # fmt: skip
    paths = _paths(cfg.name)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    paths["config"].write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    host, port = cfg.serve.host, cfg.serve.port
    url = f"http://{_client_host(host)}:{port}"
    command = [sys.executable, "-m", "ctloop", "serve", "--config", str(paths["config"]),
               "--host", host, "--port", str(port)]  # fmt: skip
    with open(paths["log"], "ab") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServeError(f"the server exited with code {process.returncode}: "
                             f"{_tail(paths['log'])}")  # fmt: skip
        try:
            model = _request(f"{url}/version", timeout=2)
            break
        except (OSError, urllib.error.URLError, ValueError):
            time.sleep(0.3)
    else:
        _terminate(process.pid)
        raise ServeError(f"the server did not answer on {url} within {wait_seconds:.0f} s; "
                         f"see {paths['log']}")  # fmt: skip
    state = {"name": cfg.name, "pid": process.pid, "host": host, "port": port, "url": url,
             "config": str(paths["config"]), "log": str(paths["log"]),
             "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    paths["state"].write_text(json.dumps(state, indent=1))
    return {**state, "action": "started", "model": model, "last_error": None}


def stop(cfg: Config, timeout: float = 15.0) -> bool:
    """Stop the background server of this model (SIGTERM: it flushes capture first)."""
    state = running(cfg)
    path = _paths(cfg.name)["state"]
    if state is None:
        path.unlink(missing_ok=True)
        return False
    _terminate(int(state["pid"]), timeout)
    path.unlink(missing_ok=True)
    return True


def _terminate(pid: int, timeout: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
