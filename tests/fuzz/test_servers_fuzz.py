"""The servers as a user runs them (``foresight ingest``, ``foresight gateway``), each in its
own process on the real stack, under hostile traffic over real sockets: HTTP requests of any
shape, bytes that are not HTTP at all, and WebSocket messages of any kind. Each gets an answer
below 500 (or the connection closed with a reason); no process dies, and each still answers
``/health`` at the end.

The ingest server produces to the stack's own topics, so the requests it would accept are
left out here (``tests/integration/test_ingest_http.py`` produces to topics of its own).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import assume, event, example, given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from connectors.http.keys import KeysFile
from connectors.kafka_admin import TopicRequest, ensure_topics
from deploy.local.processes import free_port
from streams.settings import Settings
from streams.worker_process import ForesightProcess
from tests.fuzz.budget import fuzz
from tests.fuzz.test_http_fuzz import KEYS, Call, _answered, _would_produce, requests
from tests.fuzz.test_json_doors_fuzz import messages

pytestmark = pytest.mark.integration


def _server(
    command: list[str], port: int, folder: Path, settings: Settings, **env: str
) -> Iterator[str]:
    """``foresight <command>`` with its own keys file, serving on ``port``; yields its URL and
    checks, when the module's tests are done, that it is alive and healthy."""
    keys = KeysFile(folder / "keys.json")
    for name, role in KEYS.items():
        keys.create(name, [role], key=f"{name}-key")
    process = ForesightProcess(
        command,
        folder / "server.log",
        {
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "FORESIGHT_KEYS_FILE": str(keys.path),
            "FORESIGHT_CREDENTIALS_FILE": str(folder / "credentials"),
            "FORESIGHT_RATE_LIMIT_PER_ADDRESS": "0",
            "FORESIGHT_RATE_LIMIT_PER_KEY": "0",
            "FORESIGHT_AUTH_FAILURE_LIMIT": "0",
            **env,
        },
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _healthy(url):
            assert process.alive(), (folder / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not answer /health within 60 s"
            time.sleep(0.2)
        yield url
        assert process.alive(), (folder / "server.log").read_text()[-3000:]
        assert _healthy(url)
    finally:
        process.stop()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def ingest(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    folder = tmp_path_factory.mktemp("ingest")
    yield from _server(["ingest"], port, folder, stack_settings, FORESIGHT_INGEST_PORT=str(port))


@pytest.fixture(scope="module")
def gateway(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    suffix = tmp_path_factory.mktemp("gateway").name
    predictions, alerts = f"test.fuzz.predictions.{suffix}", f"test.fuzz.alerts.{suffix}"
    kafka = stack_settings.kafka()
    asyncio.run(ensure_topics(kafka, [TopicRequest(t, 1, {}) for t in (predictions, alerts)]))
    port = free_port()
    command = ["gateway", "--port", str(port), "--predictions-topic", predictions,
               "--alerts-topic", alerts]  # fmt: skip
    yield from _server(command, port, tmp_path_factory.mktemp("gateway-run"), stack_settings)


@fuzz(60)
@given(requests)
def test_the_ingest_process_answers_every_request_below_500(ingest: str, call: Call) -> None:
    assume(not _would_produce(call))
    # A Content-Length that lies is for the raw-bytes test: the HTTP client refuses to send one.
    headers = {k: v for k, v in call.headers.items() if k != "Content-Length"}
    response = httpx.request(
        call.method, ingest + call.path, headers=headers, content=call.body, timeout=30
    )
    _answered(response)


def _raw_exchange(url: str, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; what came back before the server closed it or
    went quiet for a second."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.settimeout(1)
        try:
            sock.sendall(data)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        except (TimeoutError, ConnectionError):
            pass
    return reply


@fuzz(30)
@given(
    st.one_of(
        st.binary(max_size=300).map(lambda b: b + b"\r\n\r\n"),
        st.sampled_from([b"GET / HTTP/9.9", b"GET /\x00 HTTP/1.1", b"\x16\x03\x01\x02\x00"]).map(
            lambda line: line + b"\r\nHost: x\r\n\r\n"
        ),
        st.integers(1, 2000).map(lambda n: b"GET /health HTTP/1.1\r\n" + b"X: y\r\n" * n + b"\r\n"),
    )
)
@example(b"POST /api/v1/write HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n")
@example(b"POST /api/v1/write HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
def test_bytes_that_are_not_http_get_a_4xx_or_a_closed_connection(
    ingest: str, gateway: str, data: bytes
) -> None:
    for server, url in (("ingest", ingest), ("gateway", gateway)):
        reply = _raw_exchange(url, data)
        status = reply.split(b" ", 2)[1] if reply.startswith(b"HTTP/1.") else b"closed"
        event(f"{server}: {status.decode(errors='replace')}")
        assert not status.startswith(b"5"), reply[:300]


gateway_paths = st.one_of(
    st.sampled_from(["/", "/health", "/metrics", "/api/alerts/firing", "/static/app.js"]),
    st.sampled_from(["/static/../keys.json", "/static/%2e%2e/x", "/api/entities//predictions"]),
    st.text(max_size=40).map(lambda s: f"/api/entities/{quote(s, safe='')}/predictions"),
)


@fuzz(60)
@given(
    st.sampled_from(["GET", "POST", "HEAD"]),
    gateway_paths,
    st.sampled_from(
        [{}, {"X-API-Key": "reader-key"}, {"X-API-Key": "writer-key"}, {"X-API-Key": "x"}]
    ),
)
def test_the_gateway_process_answers_every_request_below_500(
    gateway: str, method: str, path: str, headers: dict[str, str]
) -> None:
    response = httpx.request(method, gateway + path, headers=headers, timeout=30)
    assert response.status_code < 500, response.text
    event(f"answered {response.status_code}")


@pytest.fixture(scope="module")
def websocket(gateway: str) -> Iterator[ClientConnection]:
    url = gateway.replace("http://", "ws://") + "/ws?api_key=reader-key"
    with connect(url, max_size=None) as ws:
        yield ws


def _fits(raw: str | bytes) -> bool:
    """Within the gateway's 64 KiB message limit (past it: the test below)."""
    size = len(raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass"))
    return size <= 64 * 1024


@fuzz(80)
@given(messages.filter(_fits))
@example("[" * 65_000)  # found: nested too deeply for the JSON reader (the socket was closed)
@example('{"type": "subscribe", "entity": "\\ud800"}')  # found: the sender task died on it,
# looking the entity up in Redis, and the client waited for ever
def test_every_websocket_message_gets_an_answer_on_a_socket_that_stays_open(
    websocket: ClientConnection, raw: str | bytes
) -> None:
    websocket.send(raw)
    answer = json.loads(websocket.recv(timeout=30))
    # A subscription is answered "subscribed", then a snapshot may follow: take it all.
    while answer["type"] not in ("error", "subscribed"):
        answer = json.loads(websocket.recv(timeout=30))
    event(answer["type"])
    assert answer["type"] == "subscribed" or answer["message"]
    if answer["type"] == "subscribed":
        for _ in range(answer["snapshot"] + answer["replay"]):
            websocket.recv(timeout=30)


def test_a_message_over_the_size_limit_closes_that_socket_alone(gateway: str) -> None:
    url = gateway.replace("http://", "ws://") + "/ws?api_key=reader-key"
    with connect(url) as ws:
        ws.send("x" * (64 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
    with connect(url) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": ["alerts"]}))
        assert json.loads(ws.recv(timeout=30))["type"] == "subscribed"
