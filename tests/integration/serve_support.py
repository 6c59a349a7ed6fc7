"""Helpers for the serve tests: a real `ctloop serve` process on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_config(store: dict, folder: Path, **serve: object) -> Path:
    """A copy of the store's config with its own capture folder and serve settings."""
    body = yaml.safe_load(Path(store["config"]).read_text())
    body["data"]["source"] = str(Path(store["dir"]) / "churn.csv")
    capture = {"directory": str(folder / "capture"), "flush_seconds": 0.2}
    capture.update(serve.pop("capture", {}))  # type: ignore[arg-type]
    body["serve"] = {"poll_seconds": 0.5, "capture": capture, **serve}
    path = folder / "serve.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


class Server:
    """`python -m ctloop serve` in a subprocess; stopped with SIGTERM like a user's Ctrl-C."""

    def __init__(self, config: Path, tracking_uri: str, cwd: Path, workers: int = 1,
                 env: dict[str, str] | None = None, host: str = "127.0.0.1") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"serve-{self.port}.log"
        environment = {k: v for k, v in os.environ.items() if k != "CTLOOP_TOKEN"}
        environment.update({"MLFLOW_TRACKING_URI": tracking_uri, **(env or {})})
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ctloop", "serve", "--config", str(config),
                 "--host", host, "--port", str(self.port), "--workers", str(workers)],
                cwd=cwd, env=environment, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait_ready(self, timeout: float = 120.0) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/ping", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
