"""The audit trail on the real stack: what a process records lands on the audit topic.

Everything runs on a topic of its own (``FORESIGHT_AUDIT_TOPIC``) and a keys file of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from connectors.audit import AuditTrail, RefusalThrottle
from connectors.http.auth import Gatekeeper
from connectors.http.keys import READ, KeysFile
from connectors.kafka_admin import TopicRequest, ensure_topics
from schemas.codec import Codec
from streams.settings import Settings

pytestmark = pytest.mark.integration


async def _read_all(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every record of the one-partition ``topic``, decoded."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        records = []
        while await consumer.position(tp) < end:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                records += [Codec().decode(m.value)[1] for m in messages]
        return records
    finally:
        await consumer.stop()


def test_a_flood_of_wrong_keys_is_summarised_not_recorded_one_by_one(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    """200 wrong keys from one address: 10 events one by one, the other 190 in summaries."""
    topic = f"test.audit.flood.{unique}"
    bootstrap = stack_settings.kafka_bootstrap_servers
    asyncio.run(ensure_topics(bootstrap, [TopicRequest(topic, 1, {})]))
    keys = KeysFile(tmp_path / "keys.json")
    keys.create("someone", [READ])
    trail = AuditTrail(
        bootstrap, topic, "gateway", summary_interval_s=0.5, throttle=RefusalThrottle(10, 100)
    )
    gate = Gatekeeper(keys, audit=trail.refused)
    with trail:
        for i in range(200):
            assert gate.admit("192.0.2.50", f"fsk_flood_{i}", READ, "/ws").status in (401, 429)
        deadline = time.monotonic() + 30
        while trail.stats.recorded < 11 and time.monotonic() < deadline:
            time.sleep(0.1)
    events = asyncio.run(_read_all(bootstrap, topic))
    counts = Counter("summary" if e["count"] > 1 else "one" for e in events)
    assert counts["one"] == 10
    assert sum(e["count"] for e in events) == 200
    assert {e["origin"] for e in events} == {"192.0.2.50"}
    assert trail.stats.dropped == 0
