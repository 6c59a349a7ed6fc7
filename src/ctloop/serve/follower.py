"""Follow `models:/<name>@champion`: load, check and swap in new versions off the request path.

The request path reads `holder.current` once per request (a single attribute read, atomic under
the GIL), so a swap never blocks or fails a request: requests already running finish on the
model they started with. A version that fails to load or to score its own input example is
never swapped in; it is remembered so the server does not retry it on every poll.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from ctloop import registry, tracking
from ctloop.model import TabularModel
from ctloop.serve.protocol import JSON, encode_request

log = logging.getLogger(__name__)

EXAMPLE_FILE = "serving_input_example.json"  # written by MLflow next to the MLmodel file


@dataclass(frozen=True)
class Served:
    """A loaded, checked model version and what /version reports about it."""

    model: TabularModel
    name: str
    version: int
    run_id: str | None
    loaded_at: str

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "run_id": self.run_id,
                "model_uri": f"models:/{self.name}/{self.version}",
                "family": self.model.family, "loaded_at": self.loaded_at}  # fmt: skip


class ChampionSource:
    """Where versions come from: the registry alias and the logged model's files."""

    def __init__(self, name: str) -> None:
        self.name = name

    def champion(self) -> tuple[int, str | None] | None:
        mv = registry.champion(self.name)
        return None if mv is None else (mv.version, mv.run_id)

    def load(self, version: int, run_id: str | None) -> Served:
        """Download the pinned version (not the alias, which may move meanwhile) and check it."""
        with tempfile.TemporaryDirectory(prefix="ctloop-serve-") as tmp:
            data_dir = tracking.download_model_dir(f"models:/{self.name}/{version}", tmp)
            model = TabularModel.load(data_dir)
            example = data_dir.parent.parent / EXAMPLE_FILE
            check_model(model, example.read_bytes() if example.exists() else None)
        stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return Served(model, self.name, version, run_id, stamp)


def check_model(model: TabularModel, example: bytes | None) -> None:
    """Score the version's input example through the request path; raise if anything is off."""
    if example is None:  # an all-missing row is valid input for every family
        example = b'{"dataframe_records": [{%s}]}' % b",".join(
            b'"%s": null' % c.encode() for c in model.feature_columns
        )
    X = encode_request(example, JSON, model.encoder)
    problem = model.task.check_scores(model.scores_encoded(X), len(X))
    if problem:
        raise ValueError(f"scoring the input example: {problem}")


class ModelHolder:
    """The model currently serving; `current` is replaced whole, never mutated."""

    def __init__(self, served: Served) -> None:
        self.current = served
        self.last_error: str | None = None
        self.last_check: float = time.time()


class ChampionFollower:
    """A daemon thread that polls the champion alias and hot-swaps new versions."""

    def __init__(self, holder: ModelHolder, source: ChampionSource, poll_seconds: float) -> None:
        self.holder = holder
        self.source = source
        self.poll_seconds = poll_seconds
        self.failed: dict[int, str] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Condition()
        self._checks = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ctloop-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def check_now(self, timeout: float = 60.0) -> bool:
        """Ask for an immediate check (forgetting past failures) and wait for it to finish."""
        with self._done:
            target = self._checks + 1
            self.failed.clear()
            self._wake.set()
            return self._done.wait_for(lambda: self._checks >= target, timeout=timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            self.check()
            with self._done:
                self._checks += 1
                self._done.notify_all()

    def check(self) -> bool:
        """One poll: True when a new version was swapped in."""
        self.holder.last_check = time.time()
        try:
            found = self.source.champion()
        except Exception as exc:  # registry down: keep serving what we have
            log.warning("serve: cannot read the champion alias (%s); keeping version %d",
                        exc, self.holder.current.version)  # fmt: skip
            return False
        if found is None:
            log.warning("serve: '%s' has no champion alias; keeping version %d",
                        self.source.name, self.holder.current.version)  # fmt: skip
            return False
        version, run_id = found
        if version == self.holder.current.version or version in self.failed:
            return False
        started = time.perf_counter()
        try:
            served = self.source.load(version, run_id)
        except Exception as exc:
            message = f"version {version} failed to load or score its example: {exc}"
            self.failed[version] = message
            self.holder.last_error = message
            log.error("serve: %s; still serving version %d", message,
                      self.holder.current.version)  # fmt: skip
            return False
        old = self.holder.current.version
        self.holder.current = served
        self.holder.last_error = None
        log.warning("serve: now serving %s version %d (was %d), loaded in %.2f s",
                    served.name, version, old, time.perf_counter() - started)  # fmt: skip
        return True
