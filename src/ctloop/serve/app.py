"""The scoring server as a raw ASGI callable, run by uvicorn (uvloop + httptools).

A framework's routing, middleware and request objects cost more than scoring one row does
(an XGBoost single-row predict is ~50 us), so the five routes are dispatched by hand here;
`bench/bench_serve.py` measures the result against `mlflow models serve`.

Small requests are parsed and scored inline on the event loop (no thread hop); bodies above
`INLINE_BYTES` are scored in a worker thread so one big batch cannot stall other clients.

A body over `serve.max_body_bytes` is read and dropped (up to `DISCARD_BYTES`) before the 413
goes out: a client that is still sending would otherwise see a reset connection instead of the
answer. Reading a body may take at most `serve.body_timeout_seconds` (then 408), so a client
that trickles its body cannot hold a request open forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ctloop.serve.capture import CaptureWriter, Event
from ctloop.serve.follower import ChampionFollower, ModelHolder
from ctloop.serve.protocol import RequestError, encode_request, media_type, predictions_body

log = logging.getLogger(__name__)

INLINE_BYTES = 64 * 1024
DISCARD_BYTES = 64 * 1024 * 1024  # at least this much of an oversized body is read and dropped
CLOSING_STATUSES = (408, 413)  # the body was not read to its end: the connection cannot be reused
LOOPBACK_CLIENTS = ("127.0.0.1", "::1", "localhost")
ROUTES: dict[str, tuple[str, ...]] = {
    "/invocations": ("POST",), "/ping": ("GET", "HEAD"), "/health": ("GET",),
    "/version": ("GET",), "/admin/reload": ("POST",),
}  # fmt: skip

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Settings:
    max_body_bytes: int
    token: str | None = None
    body_timeout_seconds: float = 30.0


class _Disconnected(Exception):
    pass


class _Deadlines:
    """Cancels body reads that outlive their time, with one timer for all of them.

    Measured on uvloop: `asyncio.timeout` around each read adds ~7 us, this ~1 us, to a
    single-row request of ~500 us. The timer runs only while reads are in flight; a read may
    overrun its deadline by at most one tick.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._tick = min(seconds / 4, 0.5)
        self._reads: dict[asyncio.Task, float] = {}
        self._expired: set[asyncio.Task] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def enter(self, task: asyncio.Task) -> None:
        loop = asyncio.get_running_loop()
        self._reads[task] = loop.time() + self.seconds
        if self._timer is None or self._loop is not loop:
            self._loop = loop
            self._timer = loop.call_later(self._tick, self._sweep)

    def leave(self, task: asyncio.Task) -> None:
        del self._reads[task]
        self._expired.discard(task)

    def absorb(self, task: asyncio.Task) -> bool:
        """Undo `task`'s cancellation if it was this timer's (not the server shutting down)."""
        if task not in self._expired:
            return False
        task.uncancel()
        return True

    def _sweep(self) -> None:
        loop = self._loop
        now = loop.time()
        for task, deadline in list(self._reads.items()):
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._timer = loop.call_later(self._tick, self._sweep) if self._reads else None


class ScoringApp:
    """MLflow's scoring protocol plus /version, capture and champion following."""

    def __init__(self, holder: ModelHolder, settings: Settings,
                 follower: ChampionFollower | None = None,
                 capture: CaptureWriter | None = None) -> None:  # fmt: skip
        self.holder = holder
        self.settings = settings
        self.follower = follower
        self.capture = capture
        self.started = time.time()
        self.scored_rows = 0
        self._token = settings.token.encode() if settings.token else None
        self._deadlines = _Deadlines(settings.body_timeout_seconds)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            with contextlib.suppress(_Disconnected):  # the client left; nothing to answer
                await self._http(scope, receive, send)
            return
        if kind == "lifespan":
            await self._lifespan(receive, send)

    # -- lifecycle -------------------------------------------------------------------------
    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.capture is not None:
                    self.capture.start()
                if self.follower is not None:
                    self.follower.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def close(self) -> None:
        """Stop following and write every captured request still buffered."""
        if self.follower is not None:
            self.follower.stop()
        if self.capture is not None:
            self.capture.close()

    # -- routing ---------------------------------------------------------------------------
    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        allowed = ROUTES.get(path)
        if allowed is None:
            return await _error(send, RequestError(404, "ENDPOINT_NOT_FOUND",
                                                   f"no such endpoint '{path}'; try POST "
                                                   "/invocations"))  # fmt: skip
        if method not in allowed:
            return await _error(send, RequestError(405, "METHOD_NOT_ALLOWED",
                                                   f"{method} is not allowed on {path}; use "
                                                   f"{' or '.join(allowed)}"),
                                extra=[(b"allow", ", ".join(allowed).encode())])  # fmt: skip
        headers = dict(scope["headers"])
        if path == "/ping":
            return await _respond(send, 200, b'{"status":"ok"}')
        if self._token is not None and not self._authorised(headers):
            return await _error(send, RequestError(401, "UNAUTHENTICATED",
                                                   "missing or wrong bearer token"),
                                extra=[(b"www-authenticate", b"Bearer")])  # fmt: skip
        if path == "/invocations":
            return await self._invocations(headers, receive, send)
        if path == "/version":
            return await _respond(send, 200, orjson.dumps(self.holder.current.describe()))
        if path == "/health":
            return await _respond(send, 200, orjson.dumps(self._health()))
        return await self._reload(scope, send)

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        given = headers.get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._token)

    def _health(self) -> dict[str, Any]:
        capture = self.capture
        return {
            "status": "ok", "model": self.holder.current.describe(),
            "last_error": self.holder.last_error, "uptime_s": round(time.time() - self.started),
            "scored_rows": self.scored_rows,
            "capture": None if capture is None else {
                "directory": str(capture.root), "written": capture.written,
                "dropped": capture.dropped},
        }  # fmt: skip

    async def _reload(self, scope: dict[str, Any], send: Send) -> None:
        client = (scope.get("client") or ("",))[0]
        if client not in LOOPBACK_CLIENTS:
            return await _error(send, RequestError(403, "PERMISSION_DENIED",
                                                   "/admin/reload only answers loopback "
                                                   "clients"))  # fmt: skip
        if self.follower is None:
            return await _error(send, RequestError(409, "INVALID_STATE",
                                                   "this server does not follow the registry"))
        finished = await asyncio.to_thread(self.follower.check_now)
        body = {"reloaded": finished, "model": self.holder.current.describe(),
                "last_error": self.holder.last_error}  # fmt: skip
        return await _respond(send, 200, orjson.dumps(body))

    # -- scoring ---------------------------------------------------------------------------
    async def _invocations(self, headers: dict[bytes, bytes], receive: Receive,
                           send: Send) -> None:  # fmt: skip
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        try:
            mime = media_type(content_type).kind
            body = await self._read_body(headers, receive)
            served = self.holder.current  # one read: the whole request uses this version
            if len(body) <= INLINE_BYTES:
                scores = _score(served.model, body, mime)
            else:
                scores = await asyncio.to_thread(_score, served.model, body, mime)
        except RequestError as exc:
            close = exc.status in CLOSING_STATUSES
            return await _error(send, exc, extra=[(b"connection", b"close")] if close else None)
        out = predictions_body(served.model.task, scores)
        event_id = str(uuid.uuid4())
        self.scored_rows += len(scores)
        if self.capture is not None:
            inference_id = headers.get(b"x-amzn-sagemaker-inference-id")
            self.capture.record(Event(event_id, time.time(), content_type, body, out,
                                      served.version,
                                      inference_id.decode("latin-1") if inference_id else None))
        await _respond(send, 200, out, extra=[
            (b"x-event-id", event_id.encode()),
            (b"x-model-version", str(served.version).encode()),
        ])  # fmt: skip

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        """The whole body, or 413/408 once it proves too big or too slow to arrive."""
        task = asyncio.current_task()
        self._deadlines.enter(task)
        try:
            return await self._receive_body(headers, receive)
        except asyncio.CancelledError:
            if not self._deadlines.absorb(task):
                raise
            raise _timed_out(self._deadlines.seconds) from None
        finally:
            self._deadlines.leave(task)

    async def _receive_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        limit = self.settings.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            if headers.get(b"expect", b"").lower() != b"100-continue":  # else it waits for us
                await self._discard(receive, 0, limit)
            raise _too_large(int(declared), limit)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > limit:
                if more:
                    await self._discard(receive, size, limit)
                raise _too_large(size, limit)
            chunks.append(chunk)
            if not more:
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _discard(self, receive: Receive, size: int, limit: int) -> None:
        """Read and drop the rest of a refused body, so a client still sending reads the answer.

        Bounded: past `max(4 * limit, DISCARD_BYTES)` bytes or the body deadline, stop and
        answer anyway (the connection is closed after it).
        """
        cap = max(4 * limit, DISCARD_BYTES)
        task = asyncio.current_task()
        try:
            while size < cap:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected
                size += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
        except asyncio.CancelledError:
            if not self._deadlines.absorb(task):
                raise
            # out of time while discarding: the 413 is still the better answer


def _score(model, body: bytes, mime: str):
    return model.scores_encoded(encode_request(body, mime, model.encoder))


def _too_large(size: int, limit: int) -> RequestError:
    return RequestError(413, "PAYLOAD_TOO_LARGE",
                        f"request body of {size}+ bytes exceeds serve.max_body_bytes = {limit}")


def _timed_out(seconds: float) -> RequestError:
    return RequestError(408, "REQUEST_TIMEOUT",
                        f"the request body did not arrive within serve.body_timeout_seconds = "
                        f"{seconds:g}")  # fmt: skip


async def _respond(send: Send, status: int, body: bytes,
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:  # fmt: skip
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, exc: RequestError,
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:  # fmt: skip
    await _respond(send, exc.status, exc.body(), extra)
