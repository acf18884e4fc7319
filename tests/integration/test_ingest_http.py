"""HTTP ingestion on the real broker: remote_write and agent events land as Avro records."""

from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from connectors.http.auth import Gatekeeper
from connectors.http.keys import WRITE, KeysFile
from connectors.ingest_http import AGENT_EVENTS_PATH, WRITE_PATH, IngestConfig, IngestServer
from connectors.kafka_admin import TopicRequest, ensure_topics
from connectors.kafka_clients import KafkaConfig
from connectors.pii import Scrubber, shipped_rules
from schemas.codec import Codec
from streams.settings import Settings
from tests.connectors.prometheus_proto import snappy, write_request
from tests.integration.kafka_io import read_topics

pytestmark = pytest.mark.integration

KEY = "test-key"
SCRUBBER = Scrubber(shipped_rules(), secret=b"integration-test-secret-0123456789")
REMOTE_WRITE_HEADERS = {
    "Authorization": f"Bearer {KEY}",
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}


@dataclass
class Ingest:
    """A running ingestion server on fresh topics, and an HTTP client for it."""

    url: str
    kafka: KafkaConfig
    metrics_topic: str
    events_topic: str
    http: aiohttp.ClientSession

    async def end_offsets(self, topic: str) -> int:
        consumer = self.kafka.consumer()
        await consumer.start()
        try:
            partition = TopicPartition(topic, 0)
            offsets = await consumer.end_offsets([partition])
            return int(offsets[partition])
        finally:
            await consumer.stop()

    async def consume(self, topic: str, count: int) -> list[tuple[bytes, dict[str, Any]]]:
        """The first ``count`` records of ``topic``, decoded, with their keys."""
        consumer = self.kafka.consumer(topic, auto_offset_reset="earliest")
        await consumer.start()
        got: list[tuple[bytes, dict[str, Any]]] = []
        try:
            deadline = time.monotonic() + 30
            while len(got) < count and time.monotonic() < deadline:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    got += [(m.key, Codec().decode(m.value)[1]) for m in batch]
        finally:
            await consumer.stop()
        assert len(got) == count, f"{len(got)} of {count} records arrived on {topic}"
        return got


@asynccontextmanager
async def _ingest(settings: Settings, unique: str) -> AsyncIterator[Ingest]:
    metrics, events = f"test.ingest.metrics.{unique}", f"test.ingest.events.{unique}"
    kafka = settings.kafka()
    await ensure_topics(kafka, [TopicRequest(metrics, 1, {}), TopicRequest(events, 1, {})])
    with tempfile.TemporaryDirectory() as folder:
        keys = KeysFile(f"{folder}/keys.json")
        for name in (KEY, "other-key"):
            keys.create(name, [WRITE], key=name)
        config = IngestConfig(
            kafka=kafka,
            metrics_topic=metrics,
            agent_events_topic=events,
            gatekeeper=Gatekeeper(keys),
            entity_labels=("entity", "instance", "host", "job"),
            scrubber=SCRUBBER,
            port=0,
        )
        async with IngestServer(config) as server, aiohttp.ClientSession() as http:
            yield Ingest(f"http://127.0.0.1:{server.port}", kafka, metrics, events, http)


async def test_remote_write_lands_as_metric_batches(stack_settings: Settings, unique: str) -> None:
    now = int(time.time() * 1000)
    body = snappy(
        write_request(
            [
                ({"__name__": "node_load1", "instance": "web-1", "job": "node"}, [(now, 0.5)]),
                (
                    {"__name__": "http_requests_total", "code": "500", "instance": "web-1"},
                    [(now, 3.0)],
                ),
                ({"__name__": "node_load1", "instance": "web-2", "job": "node"}, [(now, 1.5)]),
            ],
            metadata={"http_requests_total": 1},  # a counter
        )
    )
    async with _ingest(stack_settings, unique) as ingest:
        async with ingest.http.post(
            ingest.url + WRITE_PATH, data=body, headers=REMOTE_WRITE_HEADERS
        ) as reply:
            assert reply.status == 204, await reply.text()
        records = await ingest.consume(ingest.metrics_topic, 2)
    assert records == [
        (
            b"web-1",
            {
                "entity": "web-1",
                "event_time": now,
                "labels": {"instance": "web-1"},
                "names": ['node_load1{job="node"}', 'http_requests_total{code="500"}'],
                "values": [0.5, 3.0],
                "source": "remote_write",
                "kinds": ["UNKNOWN", "COUNTER"],
                "ended": [],
            },
        ),
        (
            b"web-2",
            {
                "entity": "web-2",
                "event_time": now,
                "labels": {"instance": "web-2", "job": "node"},
                "names": ["node_load1"],
                "values": [1.5],
                "source": "remote_write",
                "kinds": [],
                "ended": [],
            },
        ),
    ]


async def test_bad_remote_write_gets_a_reason_and_produces_nothing(
    stack_settings: Settings, unique: str
) -> None:
    valid = write_request([({"__name__": "up", "instance": "web-1"}, [(0, 1.0)])])
    async with _ingest(stack_settings, unique) as ingest:
        before = await ingest.end_offsets(ingest.metrics_topic)
        for body, headers, status, reason in [
            (b"not snappy at all", REMOTE_WRITE_HEADERS, 400, "not snappy"),
            (snappy(valid[:-4]), REMOTE_WRITE_HEADERS, 400, "truncated protobuf"),
            (b"", REMOTE_WRITE_HEADERS, 400, "empty body"),
            (valid, {**REMOTE_WRITE_HEADERS, "Content-Encoding": "identity"}, 415, "snappy"),
            (snappy(valid), {**REMOTE_WRITE_HEADERS, "Content-Type": "text/plain"}, 415, "1.0"),
        ]:
            async with ingest.http.post(
                ingest.url + WRITE_PATH, data=body, headers=headers
            ) as reply:
                assert (reply.status, reason in await reply.text()) == (status, True)
        assert await ingest.end_offsets(ingest.metrics_topic) == before


def _event(now: int, **changes: Any) -> dict[str, Any]:
    return {
        "agent": "agent-07",
        "task_id": "t-42",
        "task_type": "deploy",
        "phase": "SUCCEEDED",
        "event_time": now,
        "duration_ms": 950.5,
        "cost": 0.02,
        **changes,
    }


async def test_agent_events_valid_invalid_and_unauthenticated(
    stack_settings: Settings, unique: str
) -> None:
    now = int(time.time() * 1000)
    async with _ingest(stack_settings, unique) as ingest:
        url = ingest.url + AGENT_EVENTS_PATH
        async with ingest.http.post(
            url, json=_event(now), headers={"Authorization": f"Bearer {KEY}"}
        ) as reply:
            assert (reply.status, await reply.json()) == (202, {"accepted": 1})
        async with ingest.http.post(
            url,
            json=[
                _event(now, agent="agent-08"),
                _event(now, phase="FAILED", error_class="oom", workflow_id="wf-1", step=2),
            ],
            headers={"X-API-Key": "other-key"},
        ) as reply:
            assert (reply.status, await reply.json()) == (202, {"accepted": 2})
        produced = await ingest.end_offsets(ingest.events_topic)

        async with ingest.http.post(
            url, json=[_event(now), _event(now, phase="DONE")], headers={"X-API-Key": KEY}
        ) as reply:
            assert reply.status == 400
            (error,) = (await reply.json())["error"]["details"]
            assert (error["index"], error["field"]) == (1, "phase")
            assert "STARTED, SUCCEEDED, FAILED" in error["reason"]
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": ""}):
            async with ingest.http.post(url, json=_event(now), headers=headers) as reply:
                assert reply.status == 401
                assert "API key" in (await reply.json())["error"]["message"]
        async with ingest.http.post(url, data=b"{not json", headers={"X-API-Key": KEY}) as reply:
            assert reply.status == 400
            assert "not JSON" in (await reply.json())["error"]["message"]
        assert await ingest.end_offsets(ingest.events_topic) == produced == 3

        records = await ingest.consume(ingest.events_topic, 3)
        async with ingest.http.get(ingest.url + "/health") as reply:
            assert reply.status == 200
        async with ingest.http.get(ingest.url + "/metrics") as reply:
            exposition = await reply.text()
    assert [key for key, _ in records] == [b"agent-07", b"agent-08", b"agent-07"]
    no_workflow = {"workflow_id": None, "parent_task_id": None, "step": None}
    assert records[0][1] == {**_event(now), "error_class": None, "labels": {}, **no_workflow}
    assert records[2][1]["error_class"] == "oom"
    assert (records[2][1]["workflow_id"], records[2][1]["step"]) == ("wf-1", 2)
    requests = {
        (s.labels["endpoint"], s.labels["code"]): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == "foresight_ingest_requests_total"
    }
    assert requests[(AGENT_EVENTS_PATH, "401")] >= 3


def _scrubbed_counts(exposition: str) -> dict[str, float]:
    return {
        s.labels["rule"]: s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == "foresight_pii_scrubbed_total"
    }


async def test_pii_never_reaches_the_topics(stack_settings: Settings, unique: str) -> None:
    """Addresses, e-mails and tokens sent through both doors: what lands on Kafka holds none
    of them (read as raw bytes), and a hashed address is the same token wherever it was."""
    now = int(time.time() * 1000)
    ip, email, jwt = (
        "10.20.30.40",
        f"ada.{unique}@example.com",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2ln",
    )
    body = snappy(
        write_request(
            [
                (
                    {"__name__": "node_load1", "instance": f"{ip}:9100", "entity": ip,
                     "owner": email, "api_token": "s3cr3t-value"},
                    [(now, 0.5)],
                ),
            ]
        )
    )  # fmt: skip
    event = _event(
        now,
        agent=email,
        error_class=f"Authorization: Bearer {jwt}",
        labels={"client": ip, "session_token": "plain-secret"},
    )
    async with _ingest(stack_settings, unique) as ingest:
        async with ingest.http.get(ingest.url + "/metrics") as reply:
            before = _scrubbed_counts(await reply.text())
        async with ingest.http.post(
            ingest.url + WRITE_PATH, data=body, headers=REMOTE_WRITE_HEADERS
        ) as reply:
            assert reply.status == 204, await reply.text()
        async with ingest.http.post(
            ingest.url + AGENT_EVENTS_PATH, json=event, headers={"X-API-Key": KEY}
        ) as reply:
            assert reply.status == 202, await reply.text()
        async with ingest.http.get(ingest.url + "/metrics") as reply:
            after = _scrubbed_counts(await reply.text())
        ((_, batch),) = await ingest.consume(ingest.metrics_topic, 1)
        ((agent, recorded),) = await ingest.consume(ingest.events_topic, 1)
        raw = b"\n".join(
            await read_topics(ingest.kafka, [ingest.metrics_topic, ingest.events_topic])
        )
    for secret in (ip, email, jwt, "s3cr3t-value", "plain-secret"):
        assert secret.encode() not in raw, f"{secret!r} reached Kafka"
    token = SCRUBBER.token(ip)
    assert batch["entity"] == token
    assert batch["labels"] == {"entity": token, "instance": f"{token}:9100"}
    assert batch["names"] == [
        f'node_load1{{api_token="[redacted]",owner="{SCRUBBER.token(email)}"}}'
    ]
    assert agent == SCRUBBER.token(email).encode() == recorded["agent"].encode()
    assert recorded["error_class"] == "Authorization: [redacted]"
    assert recorded["labels"] == {"client": token, "session_token": "[redacted]"}
    gained = {rule: after[rule] - before.get(rule, 0) for rule in after}
    assert {rule: n for rule, n in gained.items() if n} == {
        "secret_labels": 2,
        "bearer_tokens": 1,
        "emails": 2,
        "ipv4": 3,
    }
