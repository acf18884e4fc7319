"""Alerts reach each tool through the real Kafka Connect worker and our HTTP sink.

For every target: a local HTTP receiver stands in for the tool, the target's connector is
applied with a unique name and topic, the JSON twins of a FIRING and a RESOLVED alert (same
dedup key) and of a sentinel alert are produced, and the receiver must get exactly one request
per twin, in order, each the target's payload.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from connectors.alert_payloads import payloads_for
from connectors.alert_sinks import ensure_sink_topics, sink_config
from connectors.kafka_connect import apply_connector, connector_status, delete_connector
from streams.cli import main
from streams.settings import Settings

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class Receiver:
    """A local HTTP endpoint on a free port that records every request and answers 202."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(
                    Request(self.command, self.path, dict(self.headers), json.loads(raw))
                )
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                self._record()

            def do_PUT(self) -> None:
                self._record()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    threading.Thread(target=endpoint.server.serve_forever, daemon=True).start()
    yield endpoint
    endpoint.server.shutdown()
    endpoint.server.server_close()


def alert(key: str, status: str) -> dict[str, Any]:
    resolved = status == "RESOLVED"
    return {
        "dedup_key": key,
        "alert_id": f"{key}@{T0}",
        "status": status,
        "severity": "WARNING",
        "rule": "failure_risk",
        "entity": key.split("/")[1],
        "summary": f"disk of {key.split('/')[1]} fills within 30 minutes",
        "value": 0.91,
        "labels": {"metric": "disk_percent"},
        "starts_at": T0,
        "ends_at": T0 + 60_000 if resolved else None,
        "event_time": T0 + 60_000 if resolved else T0,
    }


async def deliver(
    settings: Settings, receiver: Receiver, target: str, unique: str, routing_key: str = ""
) -> tuple[list[Request], list[dict[str, Any]]]:
    """Apply ``target``'s connector, produce three twins, return the requests and the alerts."""
    sink = sink_config(
        target,
        f"{receiver.url}/{target}",
        routing_key=routing_key,
        topic=f"test.alerts.{target}.{unique}",
        name=f"test-alerts-{target}-{unique}",
    )
    await ensure_sink_topics(settings.kafka_bootstrap_servers, [sink], 1, {})
    config = dict(sink.config, **{"consumer.override.auto.offset.reset": "earliest"})
    apply_connector(settings.kafka_connect_url, sink.name, config)
    alerts = [
        alert(f"failure_risk/db-{unique}", "FIRING"),
        alert(f"failure_risk/db-{unique}", "RESOLVED"),
        alert(f"failure_risk/sentinel-{unique}", "FIRING"),
    ]
    try:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
        await producer.start()
        try:
            for record in alerts:
                _, value = payloads_for(record)[target]
                await producer.send_and_wait(sink.topic, value, key=record["dedup_key"].encode())
        finally:
            await producer.stop()
        deadline = time.monotonic() + 60
        while len(receiver.requests) < len(alerts) and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
        if len(receiver.requests) < len(alerts):
            status = connector_status(settings.kafka_connect_url, sink.name)
            pytest.fail(f"{len(receiver.requests)} of 3 requests arrived; connector: {status}")
    finally:
        delete_connector(settings.kafka_connect_url, sink.name)
    # The sentinel came last, so nothing more for the first key is still on its way.
    assert len(receiver.requests) == len(alerts)
    for request in receiver.requests:
        assert request.method == "POST" and request.path == f"/{target}"
        assert request.headers["Content-Type"] == "application/json"
    return receiver.requests, alerts


async def test_webhook_gets_the_alert(
    stack_settings: Settings, unique: str, receiver: Receiver
) -> None:
    requests, alerts = await deliver(stack_settings, receiver, "webhook", unique)
    firing, resolved, _ = (r.body for r in requests)
    assert firing["dedup_key"] == resolved["dedup_key"] == alerts[0]["dedup_key"]
    assert (firing["status"], resolved["status"]) == ("FIRING", "RESOLVED")
    assert firing["ends_at"] is None and resolved["ends_at"] == "2026-01-01T00:01:00.000Z"
    assert firing["value"] == 0.91 and firing["labels"] == {"metric": "disk_percent"}


async def test_slack_gets_a_message(
    stack_settings: Settings, unique: str, receiver: Receiver
) -> None:
    requests, _ = await deliver(stack_settings, receiver, "slack", unique)
    firing, resolved, _ = (r.body for r in requests)
    assert f"db-{unique}" in firing["text"] and "fills within 30 minutes" in firing["text"]
    assert firing["text"].startswith(":large_orange_circle: WARNING failure_risk firing")
    assert resolved["text"].startswith(":white_check_mark:")
    assert firing["blocks"][0]["type"] == "section"


async def test_pagerduty_gets_trigger_then_resolve(
    stack_settings: Settings, unique: str, receiver: Receiver
) -> None:
    requests, alerts = await deliver(
        stack_settings, receiver, "pagerduty", unique, routing_key=f"key-{unique}"
    )
    trigger, resolve, sentinel = (r.body for r in requests)
    # The routing key is not in the records: the connector inserted it.
    assert trigger["routing_key"] == resolve["routing_key"] == f"key-{unique}"
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"] == alerts[0]["dedup_key"]
    assert sentinel["dedup_key"] == alerts[2]["dedup_key"]
    assert trigger["payload"]["severity"] == "warning"
    assert trigger["payload"]["source"] == f"db-{unique}"
    assert trigger["payload"]["custom_details"]["value"] == 0.91


async def test_alertmanager_gets_arrays_that_resolve(
    stack_settings: Settings, unique: str, receiver: Receiver
) -> None:
    requests, _ = await deliver(stack_settings, receiver, "alertmanager", unique)
    (firing,), (resolved,), _ = (r.body for r in requests)
    assert firing["labels"] == resolved["labels"]
    assert firing["labels"]["alertname"] == "failure_risk"
    assert firing["labels"]["entity"] == f"db-{unique}"
    assert resolved["endsAt"] == "2026-01-01T00:01:00.000Z"
    assert firing["endsAt"] > resolved["endsAt"]


def test_connect_status_lists_every_target(
    stack_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["connect", "status", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert {r["target"] for r in rows} == {"webhook", "slack", "pagerduty", "alertmanager"}
