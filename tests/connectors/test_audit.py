"""The audit trail without a broker: its records, the refusals the gatekeeper hands it, the
flood throttle, and a buffer that drops rather than waits."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from connectors.audit import (
    AUTH_REFUSED,
    MAX_TEXT,
    OTHER_ADDRESSES,
    AuditTrail,
    RefusalThrottle,
    audit_event,
)
from connectors.http.app import create_app, require
from connectors.http.auth import Gatekeeper, RateLimits, Refusal
from connectors.http.keys import READ, WRITE, KeysFile
from connectors.kafka_clients import KafkaConfig
from schemas.codec import Codec

NOWHERE = KafkaConfig("127.0.0.1:1")  # nothing listens on port 1: a broker that never answers


def _trail(max_pending: int = 10_000) -> AuditTrail:
    """A trail to a broker that never answers: what it records stays pending."""
    return AuditTrail(NOWHERE, "audit", "test", max_pending=max_pending)


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("foresight_audit_dropped_total", {"reason": reason}) or 0.0


def test_an_event_says_who_what_when_where_and_how_and_fits_the_schema(tmp_path: Path) -> None:
    key, _ = KeysFile(tmp_path / "keys.json").create("ops", ["operate"])
    event = audit_event(
        "sql.query",
        "SELECT " + "x" * 10_000,
        "REFUSED",
        service="sink",
        origin="127.0.0.1",
        key=key,
        details={"reason": "y" * 10_000},
        now_ms=5,
    )
    assert (event["key_id"], event["key_name"], event["event_time"]) == (key.id, "ops", 5)
    assert len(event["target"]) == len(event["details"]["reason"]) == MAX_TEXT
    codec = Codec()
    assert codec.decode(codec.encode("audit_event", event)) == ("audit_event", event)
    anonymous = audit_event("auth.refused", "/", "REFUSED", service="x", origin="y")
    assert anonymous["key_id"] == anonymous["key_name"] == ""
    assert anonymous["event_id"] != event["event_id"]


def test_the_gatekeeper_hands_every_refused_authentication_to_the_audit(
    tmp_path: Path,
) -> None:
    keys = KeysFile(tmp_path / "keys.json")
    reader, read_key = keys.create("dashboards", [READ])
    refusals: list[Refusal] = []
    gate = Gatekeeper(
        keys, RateLimits(per_key=1, auth_failures=2), clock=lambda: 0.0, audit=refusals.append
    )
    assert gate.admit("192.0.2.1", None, WRITE, "/api/v1/write").status == 401
    assert gate.admit("192.0.2.1", "wrong", WRITE, "/api/v1/write").status == 401
    assert gate.admit("192.0.2.1", "wrong", WRITE, "/api/v1/write").status == 429
    assert gate.admit("192.0.2.2", read_key, WRITE, "/api/v1/write").status == 403
    assert gate.admit("192.0.2.2", read_key, READ, "/sql").admitted
    assert gate.admit("192.0.2.2", read_key, READ, "/sql").admitted
    assert gate.admit("192.0.2.2", read_key, READ, "/sql").status == 429  # not authentication
    assert [(r.status, r.key, r.target, r.role) for r in refusals] == [
        (401, None, "/api/v1/write", WRITE),
        (401, None, "/api/v1/write", WRITE),
        (429, None, "/api/v1/write", WRITE),
        (403, reader, "/api/v1/write", WRITE),
    ]
    assert "missing API key" in refusals[0].reason and "unknown" in refusals[1].reason
    assert "needs the write role" in refusals[3].reason


async def test_a_door_of_the_http_stack_records_its_refusals(tmp_path: Path) -> None:
    keys = KeysFile(tmp_path / "keys.json")
    _, writer = keys.create("agents", [WRITE])
    trail = _trail()
    app = create_app("test", Gatekeeper(keys, audit=trail.refused))

    @app.get("/read", dependencies=[require(READ)])
    async def read() -> dict[str, str]:
        return {"ok": "yes"}

    transport = httpx.ASGITransport(app=app, client=("192.0.2.9", 4321))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/read", headers={"X-API-Key": writer})).status_code == 403
        assert (await http.get("/read?api_key=fsk_nope")).status_code == 401
        assert (await http.get("/health")).status_code == 200
    recorded = trail.pending()
    assert [(e["action"], e["target"], e["outcome"], e["origin"]) for e in recorded] == [
        (AUTH_REFUSED, "/read", "REFUSED", "192.0.2.9")
    ] * 2
    assert recorded[0]["key_name"] == "agents" and recorded[0]["details"]["status"] == "403"
    assert recorded[1]["key_id"] == "" and recorded[1]["details"]["status"] == "401"
    assert "fsk_nope" not in str(recorded)  # a presented key is never recorded


def test_a_flood_is_recorded_a_few_at_a_time_and_summarised() -> None:
    throttle = RefusalThrottle(per_address=3, total=5, max_addresses=2, clock=lambda: 0.0)
    flood = [throttle.admit("192.0.2.1", 401, now_ms=i) for i in range(100)]
    assert flood.count(True) == 3
    others = [throttle.admit(f"192.0.2.{i}", 429, now_ms=200) for i in range(2, 6)]
    assert others == [True, True, False, False]  # the total allows 5 one by one
    summaries = dict(throttle.summaries())
    assert set(summaries) == {"192.0.2.1", "192.0.2.4", OTHER_ADDRESSES}
    flooded = summaries["192.0.2.1"]
    assert (flooded.count, flooded.first_ms, flooded.last_ms) == (97, 3, 99)
    assert flooded.statuses == {401: 97}
    assert summaries[OTHER_ADDRESSES].count == 1
    assert throttle.summaries() == []  # counted once


def test_the_trail_summarises_refusals_it_did_not_record_one_by_one() -> None:
    trail = AuditTrail(
        NOWHERE,
        "audit",
        "gateway",
        throttle=RefusalThrottle(per_address=2, total=100, clock=lambda: 0.0),
    )
    for _ in range(50):
        trail.refused(Refusal("192.0.2.1", None, 401, READ, "/ws", "unknown API key"))
    assert len(trail.pending()) == 2 and trail.stats.summarised == 48
    trail._summarise()
    summary = trail.pending()[-1]
    assert (summary["action"], summary["count"], summary["origin"]) == (
        AUTH_REFUSED,
        48,
        "192.0.2.1",
    )
    assert summary["details"]["statuses"] == "48 x 401"


def test_recording_never_waits_a_full_buffer_drops_and_counts() -> None:
    trail = _trail(max_pending=3)
    before = _dropped("buffer_full")
    for i in range(5):
        trail.record("sql.query", f"SELECT {i}", "SUCCEEDED")
    assert [e["target"] for e in trail.pending()] == ["SELECT 0", "SELECT 1", "SELECT 2"]
    assert trail.stats.dropped == 2
    assert _dropped("buffer_full") == before + 2


def test_a_trail_whose_broker_never_answers_stops_and_counts_what_it_could_not_send() -> None:
    trail = _trail()
    with trail:
        for i in range(20):
            trail.record("sql.query", f"SELECT {i}", "SUCCEEDED")
    assert (trail.stats.recorded, trail.stats.dropped) == (0, 20)
    assert trail.pending() == []
    with pytest.raises(RuntimeError, match="already started"):
        trail.start()


def test_a_trail_with_nothing_to_send_does_not_try_the_broker_again_to_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trail = _trail()
    with caplog.at_level("WARNING", logger="connectors.audit"), trail:
        deadline = time.monotonic() + 5.0  # the first try to connect, from the trail's thread
        while not any(r.name == "connectors.audit" for r in caplog.records):
            assert time.monotonic() < deadline, "the trail did not try the broker within 5 s"
            time.sleep(0.05)
    warnings = [r.getMessage() for r in caplog.records if r.name == "connectors.audit"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("audit trail: nothing answers as Kafka at 127.0.0.1:1")
