"""Every route of the one HTTP stack, in process: ingest (``/api/v1/write``,
``/api/v1/agent-events``, ``/health``, ``/metrics``) and the sink's SQL endpoint (``/``).

Requests of any method, path, query, key, content headers and body: each gets an answer below
500 (a 4xx in the one error body when refused), never a server error. The ingest app runs
without Kafka here, so a request it would produce is left to the integration tests
(``tests/integration/test_ingest_http.py``); every other one is answered in full.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import assume, event, example, given
from hypothesis import strategies as st

from connectors.audit import AuditTrail
from connectors.clickhouse import ChdbStore
from connectors.clickhouse_sink import SqlEndpoint
from connectors.http.auth import Gatekeeper, RateLimits
from connectors.http.keys import READ, WRITE, KeysFile
from connectors.ingest_http import (
    AGENT_EVENTS_PATH,
    WRITE_PATH,
    IngestConfig,
    IngestServer,
    validate_agent_events,
)
from connectors.kafka_clients import KafkaConfig
from connectors.pii import Scrubber, shipped_rules
from connectors.remote_write import RemoteWriteDecoder, RemoteWriteError
from connectors.user_sql import SqlLimits, UserSql
from tests.fuzz.budget import fuzz
from tests.fuzz.strategies import NOW_MS, ODD
from tests.fuzz.test_json_doors_fuzz import payloads
from tests.fuzz.test_remote_write_fuzz import ENTITY_LABELS, bodies
from tests.fuzz.test_sql_guard_fuzz import READS, harmful_cased

NO_LIMITS = RateLimits(per_key=0, per_address=0, auth_failures=0)
KEYS = {"writer": WRITE, "reader": READ}


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeysFile:
    keys = KeysFile(tmp_path_factory.mktemp("keys") / "keys.json")
    for name, role in KEYS.items():
        keys.create(name, [role], key=f"{name}-key")
    return keys


def _ingest_app(gatekeeper: Gatekeeper) -> FastAPI:
    scrubber = Scrubber(shipped_rules(), secret=b"0" * 32)
    unused = KafkaConfig("unused:9092")
    config = IngestConfig(unused, "m", "e", gatekeeper, ENTITY_LABELS, scrubber, port=0)
    return IngestServer(config).app()


def _send(app: FastAPI, call: Call, address: str = "192.0.2.1") -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(address, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://fuzz") as http:
            return await http.request(
                call.method, call.path, headers=call.headers, content=call.body
            )

    return asyncio.run(send())


def _answered(response: httpx.Response) -> None:
    """The property of every route: below 500, and a refusal in the one error body."""
    assert response.status_code < 500, response.text
    event(f"answered {response.status_code}")
    if response.status_code >= 400 and response.request.method != "HEAD":
        error = response.json()["error"]
        assert set(error) == {"code", "message", "details"} and error["message"]


_credentials: st.SearchStrategy[dict[str, str]] = st.one_of(
    st.just({}),
    st.sampled_from(sorted(KEYS)).map(lambda k: {"Authorization": f"Bearer {k}-key"}),
    st.sampled_from(sorted(KEYS)).map(lambda k: {"X-API-Key": f"{k}-key"}),
    st.sampled_from(
        ["Bearer", "Bearer  ", "Basic !!!", "Basic Og==", "Digest x", "Bearer " + "k" * 600]
    ).map(lambda v: {"Authorization": v}),
    st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=40).map(
        lambda v: {"X-API-Key": v}
    ),
)
_content = st.fixed_dictionaries(
    {},
    optional={
        "Content-Encoding": st.sampled_from(["snappy", "SNAPPY", "gzip", "", "snappy, gzip"]),
        "Content-Type": st.sampled_from(
            [
                "application/x-protobuf",
                "application/x-protobuf; proto=prometheus.WriteRequest",
                "application/x-protobuf;proto=io.prometheus.write.v2.Request",
                "application/json",
                "text/plain",
                "",
                ";;;=",
            ]
        ),
        "Content-Length": st.sampled_from(["0", "99999999999", "-1", "x"]),
    },
)
_paths = st.one_of(
    st.sampled_from(["/", "/health", "/metrics", WRITE_PATH, AGENT_EVENTS_PATH]),
    st.sampled_from(
        [WRITE_PATH + "/", "/api/v1/../health", "//health", "/%00", "/api/v1/write?x=1"]
    ),
    st.sampled_from(ODD).map(lambda s: "/api/" + quote(s, safe="")),  # decoded by the server
    st.sampled_from(["?api_key=writer-key", "?api_key=", "?api_key=a&api_key=b", "?%zz"]).map(
        lambda q: AGENT_EVENTS_PATH + q
    ),
)
_json_bodies = payloads.map(
    lambda p: json.dumps(p, allow_nan=True).encode("utf-8", "surrogatepass")
)


_WRITER = {"X-API-Key": "writer-key"}
_REMOTE_WRITE = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf", **_WRITER}


def _calls(
    body: st.SearchStrategy[bytes], path: str, headers: dict[str, str]
) -> st.SearchStrategy[Call]:
    """Calls of any shape, and calls that pass the door's checks up to their body."""
    anything = st.builds(
        lambda m, p, c, h, b: Call(m, p, {**c, **h}, b),
        st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]),
        _paths,
        _credentials,
        _content,
        body,
    )
    to_the_body = body.map(lambda b: Call("POST", path, headers, b))
    return st.one_of(anything, to_the_body, to_the_body)


requests = st.one_of(
    _calls(st.one_of(st.binary(max_size=100), _json_bodies), AGENT_EVENTS_PATH, _WRITER),
    _calls(st.one_of(st.binary(max_size=100), bodies), WRITE_PATH, _REMOTE_WRITE),
)
"""Requests to the ingest server."""


def _would_produce(call: Call) -> bool:
    """Whether the ingest app, given a producer, would produce this call's records."""
    path, key = (
        call.path.split("?")[0],
        call.headers.get("Authorization", "") + call.headers.get("X-API-Key", ""),
    )
    if call.method != "POST" or "writer-key" not in key + call.path:
        return False
    if path == AGENT_EVENTS_PATH:
        try:
            return not validate_agent_events(json.loads(call.body), NOW_MS)[1]
        except (ValueError, RecursionError):
            return False
    if path == WRITE_PATH:
        try:
            RemoteWriteDecoder(ENTITY_LABELS).decode(call.body, NOW_MS)
        except RemoteWriteError:
            return False
        return True
    return False


@fuzz(200)
@given(requests)
@example(  # found: an event_time past a double overflowed the message's arithmetic (a 500)
    Call(
        "POST",
        AGENT_EVENTS_PATH,
        {"X-API-Key": "writer-key"},
        b'{"event_time": 1' + b"0" * 400 + b"}",
    )
)
@example(Call("POST", AGENT_EVENTS_PATH, {"X-API-Key": "writer-key"}, b"[" * 100_000))
@example(Call("POST", AGENT_EVENTS_PATH, {"X-API-Key": "writer-key"}, b'{"agent": "\\ud800"}'))
@example(  # found: a field named with a lone surrogate is quoted in the refusal, which had no
    # UTF-8 form: the error handler failed (a 500)
    Call("POST", AGENT_EVENTS_PATH, {"X-API-Key": "writer-key"}, b'{"\\ud800": null}')
)
def test_every_ingest_request_is_answered_below_500(keys: KeysFile, call: Call) -> None:
    assume(not _would_produce(call))
    _answered(_send(_ingest_app(Gatekeeper(keys, NO_LIMITS)), call))


@pytest.fixture(scope="module")
def sql_app(keys: KeysFile, store: ChdbStore) -> FastAPI:
    sql = UserSql(store.session, SqlLimits(timeout_s=5.0, max_rows=100))
    # Never started: events wait in memory.
    audit = AuditTrail(KafkaConfig("unused:9092"), "audit", "sink")
    return SqlEndpoint(sql, 0, Gatekeeper(keys, NO_LIMITS), audit).app


def _statements() -> st.SearchStrategy[bytes]:
    text = st.one_of(harmful_cased, st.sampled_from(READS), st.text(max_size=80))
    return st.one_of(
        text.map(
            lambda s: str(s).replace("{written}", "/tmp/fuzz").encode("utf-8", "surrogatepass")
        ),
        st.binary(max_size=60),
    )


@fuzz(150)
@given(_calls(_statements(), "/", {"X-API-Key": "reader-key"}))
@example(Call("POST", "/", {"X-API-Key": "reader-key"}, b"SELECT '\xed\xa0\x80'"))
def test_every_sql_endpoint_request_is_answered_below_500(sql_app: FastAPI, call: Call) -> None:
    _answered(_send(sql_app, call))


def test_2000_wrong_keys_get_429_after_the_limit_and_the_right_key_still_gets_in(
    keys: KeysFile,
) -> None:
    """Issue 16: a wrong-key flood is throttled, and the flood alone."""
    # A clock that stands still: no failure token comes back during the flood.
    limits = RateLimits(auth_failures=10, refusal_delay_s=0.0)
    app = _ingest_app(Gatekeeper(keys, limits, clock=lambda: 0.0))
    wrong = [
        _send(app, Call("POST", AGENT_EVENTS_PATH, {"X-API-Key": f"guess-{i}"}, b"{}"))
        for i in range(2000)
    ]
    statuses = [r.status_code for r in wrong]
    assert statuses[:10] == [401] * 10
    assert statuses.count(429) == 1990
    assert all(int(r.headers["Retry-After"]) >= 1 for r in wrong if r.status_code == 429)
    # From another address, the right key gets in: the body is what is wrong.
    right = Call("POST", AGENT_EVENTS_PATH, {"X-API-Key": "writer-key"}, b"{}")
    assert _send(app, right, address="192.0.2.2").status_code == 400
