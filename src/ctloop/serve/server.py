"""Start the scoring server: load the champion, check the bind address, run uvicorn.

With one worker the app is built in this process (load errors surface as a clear error);
with several, uvicorn spawns processes that each build the app from the config passed in an
environment variable, each loading the champion and following the alias on its own.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Callable

from ctloop import tracking
from ctloop.config import Config
from ctloop.serve.app import ScoringApp, Settings
from ctloop.serve.capture import CaptureWriter
from ctloop.serve.follower import ChampionFollower, ChampionSource, ModelHolder

log = logging.getLogger(__name__)

TOKEN_ENV = "CTLOOP_TOKEN"
CONFIG_ENV = "CTLOOP_SERVE_CONFIG"
MAX_AUTO_WORKERS = 4


class ServeError(RuntimeError):
    """The server cannot start (no champion, unsafe bind, port taken); the message says why."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, port: int, token: str | None) -> None:
    if not is_loopback(host) and not token:
        raise ServeError(f"refusing to listen on {host} without a token: set {TOKEN_ENV} "
                         "(clients then send 'Authorization: Bearer <token>') or bind "
                         "127.0.0.1")  # fmt: skip
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def resolve_workers(workers: int) -> int:
    return workers if workers > 0 else max(1, min(os.cpu_count() or 1, MAX_AUTO_WORKERS))


THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def pin_threads() -> None:
    """One native thread per worker (unless the environment says otherwise).

    Single requests are far too small to parallelise, and OpenMP/BLAS pools sized to every
    core, in each of several workers, only fight each other (HistGradientBoosting opened
    an OpenMP region per tree per request). The variables reach spawned workers before
    their libraries load; threadpoolctl resizes pools already loaded in this process (for
    OpenMP, in the calling thread: where small requests are scored).
    """
    for name in THREAD_ENV:
        os.environ.setdefault(name, "1")
    try:
        from threadpoolctl import threadpool_limits

        threads = int(os.environ["OMP_NUM_THREADS"])
    except (ImportError, ValueError):  # scikit-learn requires threadpoolctl; "4,2" is legal
        return
    threadpool_limits(threads)


def freeze_heap() -> None:
    """Move everything loaded so far (MLflow, pandas, scikit-learn, the model: ~200,000
    objects) out of the garbage collector's sight: a full collection walks all of them
    (~0.2 s measured here), and one now and then lands on a request. (It did not, by itself,
    bring bench_serve's p99 under 10 ms: scheduling on two shared cores dominates it.)"""
    import gc

    gc.collect()
    gc.freeze()


def build_app(cfg: Config, token: str | None = None) -> ScoringApp:
    """Load the current champion and wire the follower and capture writer around it."""
    source = ChampionSource(cfg.name)
    found = source.champion()
    if found is None:
        raise ServeError(f"registered model '{cfg.name}' has no champion yet; run "
                         "`ctloop run` (or `ctloop select`) first")  # fmt: skip
    served = source.load(*found)
    holder = ModelHolder(served)
    follower = ChampionFollower(holder, source, cfg.serve.poll_seconds)
    capture = None
    if cfg.serve.capture.enabled:
        capture = CaptureWriter(cfg.serve.capture.directory, endpoint=cfg.name,
                                model_name=cfg.name,
                                flush_seconds=cfg.serve.capture.flush_seconds)  # fmt: skip
    settings = Settings(max_body_bytes=cfg.serve.max_body_bytes, token=token,
                        body_timeout_seconds=cfg.serve.body_timeout_seconds)  # fmt: skip
    return ScoringApp(holder, settings, follower, capture)


def app_from_environment() -> ScoringApp:
    """uvicorn's factory in each worker process."""
    tracking.configure()
    cfg = Config.model_validate_json(os.environ[CONFIG_ENV])
    app = build_app(cfg, os.environ.get(TOKEN_ENV) or None)
    pin_threads()  # after the load: the model's libraries are loaded now
    freeze_heap()
    return app


def _uvicorn_options(host: str, port: int) -> dict:
    return {"host": host, "port": port, "loop": "uvloop", "http": "httptools",
            "lifespan": "on", "access_log": False, "log_level": "warning",
            "server_header": False, "date_header": False,
            "timeout_graceful_shutdown": 10}  # fmt: skip


def run(cfg: Config, host: str, port: int, workers: int,
        announce: Callable[[str], None] | None = None) -> None:  # fmt: skip
    """Serve until interrupted; returns after a clean shutdown (capture flushed)."""
    import uvicorn

    token = os.environ.get(TOKEN_ENV) or None
    check_bind(host, port, token)
    pin_threads()  # the variables, before any worker is spawned
    workers = resolve_workers(workers)
    if workers == 1:
        app = build_app(cfg, token)
        pin_threads()  # after the load: the model's libraries are loaded now
        freeze_heap()
        current = app.holder.current
        if announce:
            announce(f"serving {current.name} version {current.version} on "
                     f"http://{host}:{port} (1 worker)")  # fmt: skip
        uvicorn.Server(uvicorn.Config(app, **_uvicorn_options(host, port))).run()
        return
    if ChampionSource(cfg.name).champion() is None:
        raise ServeError(f"registered model '{cfg.name}' has no champion yet; run "
                         "`ctloop run` (or `ctloop select`) first")  # fmt: skip
    os.environ[CONFIG_ENV] = cfg.model_dump_json()
    if announce:
        announce(f"serving the {cfg.name} champion on http://{host}:{port} ({workers} workers)")
    uvicorn.run("ctloop.serve.server:app_from_environment", factory=True, workers=workers,
                **_uvicorn_options(host, port))  # fmt: skip
