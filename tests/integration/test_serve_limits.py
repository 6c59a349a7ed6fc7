"""Body limits over real sockets: ordinary clients read the 413, slow bodies get a 408.

Before, a body over `serve.max_body_bytes` was answered unread, and Python clients sending
the whole of it saw a reset connection instead of the JSON error.
"""

from __future__ import annotations

import select
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.integration.serve_support import Server, serve_config
from tests.unit.serve.test_protocol import PAYLOADS

pytestmark = pytest.mark.slow

LIMIT = 64 * 1024
TIMEOUT_S = 1.0
# 128x the limit, whitespace so only its size is wrong. Big enough not to fit in loopback socket
# buffers: below ~4 MB urllib got the 413 even when the server answered without reading.
BIG = b" " * (8 * 1024 * 1024)


@pytest.fixture(scope="module")
def server(champion_store: dict, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("serve-limits")
    config = serve_config(champion_store, folder, max_body_bytes=LIMIT,
                          body_timeout_seconds=TIMEOUT_S)  # fmt: skip
    running = Server(config, champion_store["uri"], folder).wait_ready()
    yield running
    running.stop()
    assert "Exception in ASGI application" not in running.log.read_text()


def _pieces(size: int = 64 * 1024) -> Iterator[bytes]:
    return (BIG[i:i + size] for i in range(0, len(BIG), size))


def _urllib_post(url: str, data: bytes | Iterator[bytes]) -> tuple[int, str, dict]:
    request = urllib.request.Request(f"{url}/invocations", data=data,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("connection", ""), {}
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("connection", ""), orjson.loads(exc.read())


def _httpx_post(url: str, content: bytes | Iterator[bytes]) -> tuple[int, str, dict]:
    response = httpx.post(f"{url}/invocations", content=content, timeout=10,
                          headers={"Content-Type": "application/json"})  # fmt: skip
    return response.status_code, response.headers.get("connection", ""), response.json()


def _assert_too_large(answer: tuple[int, str, dict]) -> None:
    status, connection, error = answer
    assert status == 413 and connection == "close", answer
    assert error["error_code"] == "PAYLOAD_TOO_LARGE" and str(LIMIT) in error["message"]


@pytest.mark.parametrize("post", [_urllib_post, _httpx_post], ids=["urllib", "httpx"])
def test_a_client_sending_an_oversized_body_whole_reads_the_413(server, post):
    _assert_too_large(post(server.url, BIG))


@pytest.mark.parametrize("post", [_urllib_post, _httpx_post], ids=["urllib", "httpx"])
def test_an_oversized_chunked_upload_reads_the_413(server, post):
    _assert_too_large(post(server.url, _pieces()))


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], dict]:
    """Everything until the server closes; (status, headers, JSON body)."""
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, orjson.loads(body)


def _start_post(port: int, declared: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % declared)  # fmt: skip
    return sock


def _assert_timed_out(answer: tuple[int, dict[str, str], dict], started: float) -> None:
    status, headers, error = answer
    assert status == 408 and headers["connection"] == "close", answer
    assert error["error_code"] == "REQUEST_TIMEOUT" and "body_timeout_seconds" in error["message"]
    assert TIMEOUT_S <= time.monotonic() - started < TIMEOUT_S + 3


def test_a_stalled_body_gets_a_408_and_the_server_stays_healthy(server):
    with _start_post(server.port, 1000) as sock:
        started = time.monotonic()
        sock.sendall(b'{"dataframe_split": ')  # ...and nothing more
        _assert_timed_out(_read_answer(sock), started)
    assert httpx.get(f"{server.url}/ping").status_code == 200
    mime, body = PAYLOADS["dataframe_split"]
    response = httpx.post(f"{server.url}/invocations", content=body,
                          headers={"Content-Type": mime})  # fmt: skip
    assert response.status_code == 200 and len(response.json()["predictions"]) == 2


def test_a_body_trickled_forever_is_cut_off_at_the_timeout(server):
    with _start_post(server.port, 10_000) as sock:
        started = time.monotonic()
        while not select.select([sock], [], [], 0.1)[0]:  # one byte every 0.1 s until answered
            sock.sendall(b" ")
        _assert_timed_out(_read_answer(sock), started)
    assert httpx.get(f"{server.url}/ping").status_code == 200
