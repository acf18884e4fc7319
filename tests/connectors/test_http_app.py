"""The shared HTTP stack, in process: the one error body, keys and roles, rate limits, body
size. Requests go through httpx's ASGI transport (no socket), from addresses given per client.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.types import Message, Receive, Scope, Send

from connectors.http import limits
from connectors.http.app import create_app, require
from connectors.http.auth import Gatekeeper, RateLimits
from connectors.http.keys import READ, WRITE, KeysFile

ATTACKER, FRIEND = "192.0.2.66", "192.0.2.7"  # documentation addresses, never contacted


@pytest.fixture
def keys(tmp_path: Path) -> KeysFile:
    return KeysFile(tmp_path / "keys.json")


class Names(BaseModel):
    names: list[str]


def make_app(keys: KeysFile, limits: RateLimits | None = None, **options: Any) -> FastAPI:
    """An app whose rate limits see a clock that stands still (no token comes back), and
    answer 429 at once."""
    limits = dataclasses.replace(limits or RateLimits(), refusal_delay_s=0.0)
    app = create_app("test", Gatekeeper(keys, limits, clock=lambda: 0.0), **options)

    @app.post("/write", dependencies=[require(WRITE)])
    async def write(size: int = 1) -> dict[str, int]:
        return {"size": size}

    @app.get("/read", dependencies=[require(READ)])
    async def read() -> dict[str, str]:
        return {"ok": "yes"}

    @app.post("/names", dependencies=[require(WRITE)])
    async def names(body: Names) -> dict[str, int]:
        return {"names": len(body.names)}

    @app.post("/echo", dependencies=[require(WRITE)])
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/boom", dependencies=[require(READ)])
    async def boom() -> None:
        raise RuntimeError("secret internals")

    return app


@asynccontextmanager
async def client(app: FastAPI, address: str = FRIEND) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(address, 4321))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]  # type: ignore[no-any-return]


async def test_every_refusal_has_the_one_error_body(keys: KeysFile) -> None:
    _, writer = keys.create("writer", [WRITE])
    auth = {"Authorization": f"Bearer {writer}"}
    app = make_app(keys, max_body_bytes=100)
    async with client(app) as http:
        cases: list[tuple[Callable[[], Any], int, str]] = [
            (lambda: http.get("/nowhere"), 404, "not_found"),
            (lambda: http.get("/write", headers=auth), 405, "method_not_allowed"),
            (lambda: http.post("/write", headers=auth, content=b"x" * 101), 413, ""),
            (lambda: http.post("/write?size=big", headers=auth), 422, "unprocessable"),
            (lambda: http.post("/write"), 401, "unauthorized"),
            (lambda: http.get("/read", headers=auth), 403, "forbidden"),
        ]
        for request, status, code in cases:
            response = await request()
            assert response.status_code == status, response.text
            assert error_of(response)["code"].startswith(code)
        invalid = error_of(await http.post("/write?size=big", headers=auth))
        assert invalid["details"][0]["field"] == "query.size"
        assert (await http.get("/write", headers=auth)).headers["Allow"] == "POST"
        unauthorized = await http.post("/write")
        assert unauthorized.headers["WWW-Authenticate"].startswith("Bearer")
        assert "missing API key" in error_of(unauthorized)["message"]


async def test_a_streamed_body_over_the_limit_gets_413(keys: KeysFile) -> None:
    _, writer = keys.create("writer", [WRITE])

    def chunks(count: int) -> Callable[[], AsyncIterator[bytes]]:
        async def stream() -> AsyncIterator[bytes]:
            for _ in range(count):
                yield b"x" * 40

        return stream

    async with client(make_app(keys, max_body_bytes=100)) as http:
        for count, status in ((2, 200), (5, 413)):  # no Content-Length: counted as read
            response = await http.post(
                "/echo", headers={"X-API-Key": writer}, content=chunks(count)()
            )
            assert response.status_code == status, response.text
        assert "100 bytes" in error_of(response)["message"]
        # A route with a body model: FastAPI, reading it, once turned the 413 into a 400.
        response = await http.post(
            "/names", headers={"X-API-Key": writer, "Content-Type": "application/json"},
            content=chunks(5)(),
        )  # fmt: skip
        assert response.status_code == 413, response.text
        assert "100 bytes" in error_of(response)["message"]


async def test_a_server_error_answers_without_internals(keys: KeysFile) -> None:
    _, reader = keys.create("reader", [READ])
    async with client(make_app(keys)) as http:
        response = await http.get("/boom", headers={"X-API-Key": reader})
    assert response.status_code == 500
    assert "secret internals" not in response.text and "Traceback" not in response.text
    assert error_of(response)["code"] == "internal_server_error"


async def test_a_wrong_key_flood_is_throttled_while_a_valid_key_gets_through(
    keys: KeysFile,
) -> None:
    _, reader = keys.create("reader", [READ])
    app = make_app(keys, RateLimits(per_key=1000, per_address=1000, auth_failures=10))
    async with client(app, ATTACKER) as attacker, client(app, FRIEND) as friend:
        statuses = [
            (await attacker.get("/read", headers={"X-API-Key": f"guess-{i}"})).status_code
            for i in range(200)
        ]
        assert statuses[:10] == [401] * 10
        assert set(statuses[10:]) == {429}
        throttled = await attacker.get("/read", headers={"X-API-Key": "guess"})
        assert int(throttled.headers["Retry-After"]) >= 1
        assert "failed authentications" in error_of(throttled)["message"]
        # The legitimate key still gets in, from another address and from the same one.
        assert (await friend.get("/read", headers={"X-API-Key": reader})).status_code == 200
        assert (await attacker.get("/read", headers={"X-API-Key": reader})).status_code == 200
        assert (await friend.get("/read", headers={"X-API-Key": "typo"})).status_code == 401


async def test_requests_beyond_the_rates_get_429_with_retry_after(keys: KeysFile) -> None:
    _, reader = keys.create("reader", [READ])
    _, other = keys.create("other", [READ])
    per_key = make_app(keys, RateLimits(per_key=5, per_address=0))
    async with client(per_key) as http:
        statuses = [
            (await http.get("/read", headers={"X-API-Key": reader})).status_code
            for _ in range(2000)
        ]
        assert statuses[:10] == [200] * 10  # the burst: twice the rate
        assert statuses.count(429) == 1990
        limited = await http.get("/read", headers={"X-API-Key": reader})
        assert limited.headers["Retry-After"] == "1"
        assert (await http.get("/read", headers={"X-API-Key": other})).status_code == 200
    per_address = make_app(keys, RateLimits(per_key=0, per_address=5))
    async with client(per_address, ATTACKER) as attacker, client(per_address) as friend:
        statuses = [(await attacker.get("/health")).status_code for _ in range(2000)]
        assert statuses[:10] == [200] * 10 and statuses.count(429) == 1990
        assert (await friend.get("/health")).status_code == 200


async def test_zero_means_no_limit(keys: KeysFile) -> None:
    _, reader = keys.create("reader", [READ])
    app = make_app(keys, RateLimits(per_key=0, per_address=0, auth_failures=0))
    async with client(app) as http:
        for _ in range(300):
            assert (await http.get("/read", headers={"X-API-Key": reader})).status_code == 200
            assert (await http.get("/read", headers={"X-API-Key": "no"})).status_code == 401


def test_a_refusal_for_going_too_fast_is_held_back_a_second(keys: KeysFile) -> None:
    _, reader = keys.create("reader", [READ])
    gatekeeper = Gatekeeper(keys, RateLimits(per_key=4, auth_failures=1), clock=lambda: 0.0)
    assert gatekeeper.admit(ATTACKER, "wrong", READ).status == 401
    throttled = gatekeeper.admit(ATTACKER, "wrong", READ)
    assert (throttled.status, throttled.delay) == (429, 1.0)  # the wait is 60 s: held 1 s
    for _ in range(8):  # the burst
        assert gatekeeper.admit(FRIEND, reader, READ).delay == 0.0
    too_fast = gatekeeper.admit(FRIEND, reader, READ)
    assert (too_fast.status, too_fast.delay) == (429, 1.0)  # 0.25 s to the next token: 1 s


async def test_what_follows_a_complete_body_is_not_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pace applies to the body alone: an app waiting for the client's disconnect after
    it (as a streamed answer does) may wait longer than a body may take. Here a body's time
    is up as soon as it has come, so a timed wait would fail at its first suspension."""
    monkeypatch.setattr(limits, "BODY_TIMEOUT_S", 0.0)
    monkeypatch.setattr(limits, "BODY_MIN_RATE", 10**12)
    messages: list[Message] = []

    async def receive() -> Message:
        if not messages:
            messages.append({"type": "http.request", "body": b"{}", "more_body": False})
            return messages[-1]
        for _ in range(5):  # the client disconnects a few turns of the loop later
            await asyncio.sleep(0)
        messages.append({"type": "http.disconnect"})
        return messages[-1]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["body"] == b"{}"
        assert (await receive())["type"] == "http.disconnect"

    async def send(message: Message) -> None:
        raise AssertionError(f"nothing is refused: {message}")

    scope: Scope = {"type": "http", "headers": [(b"content-length", b"2")]}
    await limits.BodyLimit(app, max_bytes=100)(scope, receive, send)
    assert len(messages) == 2
