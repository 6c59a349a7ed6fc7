"""Refused bodies: drained (bounded) before a 413, cut off with a 408 when they arrive too slowly.

The ASGI app is driven directly with scripted `receive()` calls, so each case runs in
milliseconds; `tests/integration/test_serve_limits.py` covers the same over real sockets.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
import pytest

from ctloop.serve.app import DISCARD_BYTES, ScoringApp, Settings
from ctloop.serve.protocol import RequestError

LIMIT = 64 * 1024
JSON = (b"content-type", b"application/json")

Receive = Callable[[], Awaitable[dict[str, Any]]]


def _app(timeout: float = 30.0) -> ScoringApp:
    """No model is needed: every case here is refused before scoring."""
    return ScoringApp(holder=None, settings=Settings(max_body_bytes=LIMIT,  # type: ignore[arg-type]
                                                     body_timeout_seconds=timeout))  # fmt: skip


class Script:
    """A `receive()` that hands out `chunks` (then stalls, or ends the body) and counts calls."""

    def __init__(self, chunks: Iterable[bytes], stall: bool = False, pause: float = 0.0) -> None:
        self.chunks = iter(chunks)
        self.stall = stall
        self.pause = pause
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.pause:
            await asyncio.sleep(self.pause)
        chunk = next(self.chunks, None)
        if chunk is None:
            if self.stall:
                await asyncio.Event().wait()  # the client sends nothing more, ever
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}


def _post(app: ScoringApp, receive: Receive, *headers: tuple[bytes, bytes]) -> list[dict]:
    """POST /invocations through the app; the messages it sent back."""
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/invocations", "method": "POST",
             "headers": [JSON, *headers], "client": ("127.0.0.1", 1)}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return sent


def _answer(sent: list[dict]) -> tuple[int, dict[bytes, bytes], dict]:
    start, body = sent
    return start["status"], dict(start["headers"]), orjson.loads(body["body"])


def test_a_small_body_takes_one_receive() -> None:
    app, body = _app(), b'{"dataframe_split": {"columns": [], "data": []}}'
    calls = []

    async def receive() -> dict[str, Any]:
        calls.append(1)
        return {"type": "http.request", "body": body, "more_body": False}

    async def read() -> bytes:
        return await app._read_body({b"content-length": str(len(body)).encode()}, receive)

    assert asyncio.run(read()) is body and len(calls) == 1


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_oversized_body_is_read_to_its_end_before_the_413(declared: bool) -> None:
    chunks = [b"x" * 50_000] * 40  # 2 MB against a 64 KiB limit
    receive = Script(chunks)
    headers = [(b"content-length", b"2000000")] if declared else []
    status, headers_out, error = _answer(_post(_app(), receive, *headers))
    assert status == 413 and error["error_code"] == "PAYLOAD_TOO_LARGE"
    assert str(LIMIT) in error["message"] and headers_out[b"connection"] == b"close"
    assert receive.calls == len(chunks) + 1  # every chunk, then the end of the body


def test_discarding_stops_at_the_cap() -> None:
    mib = b"x" * (1024 * 1024)
    receive = Script(itertools.repeat(mib))  # a body that never ends
    status, headers, _ = _answer(_post(_app(), receive, (b"content-length", b"999999999999")))
    assert status == 413 and headers[b"connection"] == b"close"
    assert receive.calls == DISCARD_BYTES // len(mib)


def test_an_oversized_body_expecting_100_continue_is_refused_unread() -> None:
    receive = Script([b"x"])
    sent = _post(_app(), receive, (b"content-length", b"2000000"), (b"expect", b"100-continue"))
    assert _answer(sent)[0] == 413 and receive.calls == 0


def test_a_stalled_body_gets_a_408() -> None:
    app, receive = _app(timeout=0.2), Script([b'{"datafr'], stall=True)
    started = time.monotonic()
    status, headers, error = _answer(_post(app, receive, (b"content-length", b"1000")))
    assert time.monotonic() - started < 2
    assert status == 408 and error["error_code"] == "REQUEST_TIMEOUT"
    assert "body_timeout_seconds" in error["message"] and headers[b"connection"] == b"close"


def test_the_timeout_bounds_the_whole_body_not_each_read() -> None:
    app, receive = _app(timeout=0.3), Script(itertools.repeat(b"x"), pause=0.02)
    started = time.monotonic()
    assert _answer(_post(app, receive))[0] == 408
    assert time.monotonic() - started < 2 and receive.calls > 5


def test_running_out_of_time_while_discarding_still_answers_413() -> None:
    app, receive = _app(timeout=0.2), Script([b"x" * 70_000], stall=True)
    assert _answer(_post(app, receive))[0] == 413


def test_a_client_that_leaves_while_discarding_gets_no_answer() -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    assert _post(_app(), receive, (b"content-length", b"2000000")) == []


def test_a_shutdown_cancellation_is_not_mistaken_for_a_timeout() -> None:
    app = _app()

    async def cancel_a_stalled_read() -> None:
        read = asyncio.ensure_future(app._read_body({}, Script([b"x"], stall=True)))
        await asyncio.sleep(0.05)
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read

    asyncio.run(cancel_a_stalled_read())


def test_reads_after_a_timeout_still_work_and_the_timer_stops_when_idle() -> None:
    app = _app(timeout=0.1)

    async def scenario() -> None:
        stalled = app._read_body({}, Script([b"x"], stall=True))
        with pytest.raises(RequestError, match="body_timeout_seconds"):
            await stalled
        assert await app._read_body({}, Script([b"ab", b"cd"])) == b"abcd"
        await asyncio.sleep(0.1)  # more than one tick with nothing in flight
        assert app._deadlines._timer is None

    asyncio.run(scenario())
