"""The shared HTTP stack on a real socket, with bytes no HTTP client library would send: what
the server's parser refuses gets the one error body, like every route's refusals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import Response
from pydantic import BaseModel

from connectors.http import app as http_app
from connectors.http import limits
from connectors.http.app import HttpServer, create_app
from connectors.http.auth import Gatekeeper
from connectors.http.keys import KeysFile
from connectors.http.tls import TlsConfig


class Words(BaseModel):
    words: list[str]


LARGE = 48 << 20  # past what the kernel's socket buffers on both sides take on loopback


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[HttpServer]:
    """A server of the shared stack on a free port, in the test's event loop, with a route
    that reads a JSON body and one with a large answer."""
    app = create_app("test", Gatekeeper(KeysFile(tmp_path / "keys.json")))

    @app.post("/count")
    async def count(body: Words) -> dict[str, int]:
        return {"words": len(body.words)}

    @app.get("/large")
    async def large() -> Response:
        return Response(b"x" * LARGE, media_type="application/octet-stream")

    server = HttpServer(app, "127.0.0.1", 0, TlsConfig())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[int]:
    """:func:`served`'s port."""
    async with served(tmp_path) as server:
        yield server.port


async def _exchange(port: int, request: bytes) -> tuple[int, dict[str, str], Any]:
    """Send ``request`` as it is; the status, headers and JSON body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        with contextlib.suppress(ConnectionError):  # the server may answer and close first
            await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines if line)
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    finally:
        writer.close()
    return int(status_line.split()[1]), headers, json.loads(body)


async def _read_until_closed(
    reader: asyncio.StreamReader, received: bytearray, within_s: float
) -> bool:
    """Add what the server sends to ``received`` until it closes the connection (True) or
    ``within_s`` pass with nothing new (False)."""
    try:
        while chunk := await asyncio.wait_for(reader.read(65_536), timeout=within_s):
            received += chunk
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NOT AN HTTP REQUEST\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    ],
    ids=["no request line", "a header without a colon"],
)
async def test_a_request_the_parser_refuses_gets_the_error_body(
    tmp_path: Path, request_bytes: bytes
) -> None:
    async with serving(tmp_path) as port:
        status, headers, body = await _exchange(port, request_bytes)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert body["error"]["code"] == "bad_request"
    assert "refused" in body["error"]["message"] and body["error"]["details"] == []


@pytest.mark.parametrize(
    ("url_bytes", "header_lines"),
    [(70_000, 0), (10, 1_000)],
    ids=["a 70,000-character URL", "headers without end"],
)
async def test_a_request_head_past_its_limit_gets_431_and_the_connection_closes(
    tmp_path: Path, url_bytes: int, header_lines: int
) -> None:
    """The line and headers are held in memory as they arrive, so past MAX_REQUEST_HEAD
    (64 KiB) the server answers and closes instead of reading on: the headers here would be
    1 MB, and a client sending them without end once grew a server by hundreds of MB."""
    head = b"GET /" + b"a" * url_bytes + b" HTTP/1.1\r\nHost: x\r\n"
    head += b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(header_lines))
    async with serving(tmp_path) as port:
        status, headers, body = await _exchange(port, head + b"\r\n")
    assert (status, body["error"]["code"]) == (431, "request_header_fields_too_large")
    assert body["error"]["message"] == "the request line and headers pass 65,536 bytes"
    assert headers["connection"] == "close"


async def test_an_unknown_route_of_thousands_of_characters_is_named_in_short(
    tmp_path: Path,
) -> None:
    request = b"GET /" + b"b" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    async with serving(tmp_path) as port:
        status, _, body = await _exchange(port, request)
    assert status == 404
    message = body["error"]["message"]
    assert len(message) < 300 and "10,001 characters" in message


async def test_a_good_request_after_a_refused_one_is_served(tmp_path: Path) -> None:
    async with serving(tmp_path) as port:
        await _exchange(port, b"NOT AN HTTP REQUEST\r\n\r\n")
        status, _, body = await _exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (200, {"status": "ok"})


@pytest.mark.parametrize(
    "trickle",
    [[], [b"GET /health HTTP/1.1\r\n", b"Host: x\r\n", b"X-Slow: 1\r\n"]],
    ids=["a connection that sends nothing", "a head a line at a time, too slowly"],
)
async def test_a_request_head_that_does_not_arrive_in_time_gets_408(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trickle: list[bytes]
) -> None:
    """Slow clients cannot hold connections (and file descriptors) for ever."""
    monkeypatch.setattr(http_app, "REQUEST_HEAD_TIMEOUT_S", 0.5)
    async with serving(tmp_path) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            answer = bytearray()
            for line in trickle:  # a line, then the next one when 0.2 s bring no answer
                writer.write(line)
                if await _read_until_closed(reader, answer, within_s=0.2):
                    break
            assert await _read_until_closed(reader, answer, within_s=10)
        finally:
            writer.close()
    head, _, body = bytes(answer).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    error = json.loads(body)["error"]
    assert error == {
        "code": "request_timeout",
        "message": "the request line and headers did not arrive within 0.5 s",
        "details": [],
    }


async def test_a_kept_alive_connection_serves_requests_spaced_past_the_head_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head's clock runs from a request's first byte, not from the connection's opening."""
    monkeypatch.setattr(http_app, "REQUEST_HEAD_TIMEOUT_S", 0.5)
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    async with serving(tmp_path) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(2):
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
                assert head.startswith(b"HTTP/1.1 200 ")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                # Idle longer than the head's timeout (not keep-alive's): nothing comes, no close.
                sent = bytearray()
                assert not await _read_until_closed(reader, sent, within_s=1.0)
                assert sent == b""
        finally:
            writer.close()


def _post_head(length: int) -> bytes:
    return (b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % length)  # fmt: skip


async def test_a_body_that_stops_arriving_gets_408_and_the_connection_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client announcing a body and sending part of it held the request, its task and the
    connection for ever."""
    monkeypatch.setattr(limits, "BODY_TIMEOUT_S", 0.5)
    async with serving(tmp_path) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(_post_head(1_000) + b'{"words": [')
            answer = bytearray()
            assert await _read_until_closed(reader, answer, within_s=10)
        finally:
            writer.close()
    head, _, body = bytes(answer).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in head.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout"
    assert error["message"].startswith("the request body came too slowly: 11 bytes in 0.")


async def test_a_slow_body_that_keeps_the_minimum_pace_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every byte received buys time: a body sent at twice the minimum pace is read to its
    end, though it takes longer than the first wait."""
    monkeypatch.setattr(limits, "BODY_TIMEOUT_S", 0.3)
    monkeypatch.setattr(limits, "BODY_MIN_RATE", 100)
    body = json.dumps({"words": ["slow"] * 30}).encode()
    async with serving(tmp_path) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(_post_head(len(body)))
            for start in range(0, len(body), 20):  # 20 bytes every 0.1 s: 200 bytes a second
                writer.write(body[start : start + 20])
                await writer.drain()
                await asyncio.sleep(0.1)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            answer = await asyncio.wait_for(reader.readexactly(length), timeout=10)
        finally:
            writer.close()
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert json.loads(answer) == {"words": 30}


async def _until(condition: Callable[[], bool], within_s: float) -> bool:
    """Whether ``condition`` holds within ``within_s``, looked at every 10 ms."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def _small_window_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock, limit=1 << 20)


async def test_an_answer_the_client_stops_reading_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that asked and stopped reading held the unsent answer in the server's memory
    for ever (closing waits for it to be sent); now, once the send timeout passes without a
    byte leaving, the server drops the answer and the connection, and the client finds only
    what its kernel and the server's had taken by then."""
    monkeypatch.setattr(http_app, "SEND_TIMEOUT_S", 0.3)
    async with served(tmp_path) as server:
        reader, writer = await _small_window_connection(server.port)
        try:
            writer.write(b"GET /large HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await _until(lambda: server.open_connections == 1, within_s=10)
            assert await _until(lambda: server.open_connections == 0, within_s=10)
            received = bytearray()
            assert await _read_until_closed(reader, received, within_s=10)
        finally:
            writer.close()
    assert received.startswith(b"HTTP/1.1 200 ")
    assert len(received) < LARGE, "the whole answer waited for the client"


async def test_an_answer_read_slowly_is_sent_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait is for the next byte to leave, not for the whole answer: a slow reader that
    keeps reading gets it all, though it takes many times the send timeout."""
    monkeypatch.setattr(http_app, "SEND_TIMEOUT_S", 0.3)
    async with serving(tmp_path) as port:
        reader, writer = await _small_window_connection(port)
        try:
            writer.write(b"GET /large HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            received = 0
            while received < LARGE:
                chunk = await asyncio.wait_for(reader.read(256 << 10), timeout=10)
                assert chunk, f"closed after {received:,} of {LARGE:,} bytes"
                received += len(chunk)
                await asyncio.sleep(0.01)  # at most 256 KB every 10 ms
        finally:
            writer.close()
    assert head.startswith(b"HTTP/1.1 200 ") and received == LARGE
