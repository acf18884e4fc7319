"""Alerts reach each tool through the real Kafka Connect worker and our HTTP sink.

For every target: a local HTTP receiver stands in for the tool, the target's connector is
applied with a unique name and topic, the JSON twins of a FIRING and a RESOLVED alert (same
dedup key) and of a sentinel alert are produced, and the receiver must get exactly one request
per twin, in order, each the target's payload.

Endpoints and the PagerDuty routing key are secrets: they go to the connector's file in the
stack's secrets folder and the worker resolves them. The receiver must get them, and neither
Connect's log nor its topics may hold them, on success, retry, rejection and failure alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectors.alert_payloads import payloads_for
from connectors.alert_sinks import (
    SinkConfig,
    apply_sink,
    ensure_sink_topics,
    remove_sink,
    sink_config,
)
from connectors.audit import AuditTrail
from connectors.http.keys import OPERATE, KeysFile
from connectors.kafka_connect import connector_status
from deploy.local.stack import connect_secrets_dir
from streams.cli import main
from streams.commands.stack import local_stack
from streams.operations import connector_state, remove_alert_connectors
from streams.settings import Settings
from tests.integration.http_receiver import Receiver, Request, serving
from tests.integration.kafka_io import TopicReader, read_topics

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000
DLQ = "alerts.connect.dlq"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving(Receiver()) as endpoint:
        yield endpoint


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


def episode(unique: str) -> list[dict[str, Any]]:
    """A firing and its resolve (one dedup key), then a sentinel: when it arrives, all did."""
    return [
        alert(f"failure_risk/db-{unique}", "FIRING"),
        alert(f"failure_risk/db-{unique}", "RESOLVED"),
        alert(f"failure_risk/sentinel-{unique}", "FIRING"),
    ]


async def apply(
    settings: Settings, target: str, url: str, unique: str, routing_key: str = "", **extra: str
) -> SinkConfig:
    """Apply ``target``'s connector under a unique name and topic, secrets in the stack's folder."""
    sink = sink_config(
        target,
        url,
        secrets_dir=connect_secrets_dir(Path(settings.stack_dir)),
        routing_key=routing_key,
        topic=f"test.alerts.{target}.{unique}",
        name=f"test-alerts-{target}-{unique}",
    )
    config = {**sink.config, "consumer.override.auto.offset.reset": "earliest", **extra}
    sink = dataclasses.replace(sink, config=config)
    await ensure_sink_topics(settings.kafka(), [sink], 1, {})
    apply_sink(settings.kafka_connect_url, sink)
    return sink


def remove(settings: Settings, sink: SinkConfig) -> None:
    remove_sink(settings.kafka_connect_url, sink.name, sink.secrets_file.parent)


async def produce(settings: Settings, sink: SinkConfig, alerts: list[dict[str, Any]]) -> None:
    producer = settings.kafka().producer()
    await producer.start()
    try:
        for record in alerts:
            _, value = payloads_for(record)[sink.target]
            await producer.send_and_wait(sink.topic, value, key=record["dedup_key"].encode())
    finally:
        await producer.stop()


async def wait_for(
    done: Callable[[], bool], settings: Settings, sink: SinkConfig, what: str
) -> None:
    """Poll ``done`` for up to 60 s; fail naming ``what`` and the connector's state."""
    deadline = time.monotonic() + 60
    while not done():
        if time.monotonic() > deadline:
            status = connector_status(settings.kafka_connect_url, sink.name)
            pytest.fail(f"{what} did not happen within 60 s; connector: {status}")
        await asyncio.sleep(0.25)


@dataclass(frozen=True)
class Delivery:
    sink: SinkConfig
    alerts: list[dict[str, Any]]
    requests: list[Request]


async def deliver(
    settings: Settings,
    receiver: Receiver,
    target: str,
    unique: str,
    routing_key: str = "",
    path: str | None = None,
) -> Delivery:
    """Apply ``target``'s connector to ``receiver`` at ``path``, produce an episode, collect it."""
    path = path or f"/{target}"
    sink = await apply(settings, target, receiver.url + path, unique, routing_key)
    alerts = episode(unique)
    try:
        await produce(settings, sink, alerts)
        arrived = f"{len(alerts)} requests at {target}"
        await wait_for(lambda: len(receiver.at(path)) >= len(alerts), settings, sink, arrived)
    finally:
        remove(settings, sink)
    # The sentinel came last, so nothing more for the first key is still on its way.
    requests = receiver.at(path)
    assert len(requests) == len(alerts)
    for request in requests:
        assert request.method == "POST"
        assert request.headers["Content-Type"] == "application/json"
    return Delivery(sink, alerts, requests)


async def test_webhook_gets_the_alert(
    stack_settings: Settings, unique: str, receiver: Receiver
) -> None:
    delivery = await deliver(stack_settings, receiver, "webhook", unique)
    firing, resolved, _ = (r.body for r in delivery.requests)
    assert firing["dedup_key"] == resolved["dedup_key"] == delivery.alerts[0]["dedup_key"]
    assert (firing["status"], resolved["status"]) == ("FIRING", "RESOLVED")
    assert firing["ends_at"] is None and resolved["ends_at"] == "2026-01-01T00:01:00.000Z"
    assert firing["value"] == 0.91 and firing["labels"] == {"metric": "disk_percent"}


async def test_slack_gets_a_message(
    stack_settings: Settings, unique: str, receiver: Receiver
) -> None:
    delivery = await deliver(stack_settings, receiver, "slack", unique)
    firing, resolved, _ = (r.body for r in delivery.requests)
    assert f"db-{unique}" in firing["text"] and "fills within 30 minutes" in firing["text"]
    assert firing["text"].startswith(":large_orange_circle: WARNING failure_risk firing")
    assert resolved["text"].startswith(":white_check_mark:")
    assert firing["blocks"][0]["type"] == "section"


async def test_pagerduty_gets_trigger_then_resolve(
    stack_settings: Settings, unique: str, receiver: Receiver
) -> None:
    delivery = await deliver(
        stack_settings, receiver, "pagerduty", unique, routing_key=f"key-{unique}"
    )
    trigger, resolve, sentinel = (r.body for r in delivery.requests)
    # The routing key is not in the records: the connector inserted it.
    assert trigger["routing_key"] == resolve["routing_key"] == f"key-{unique}"
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"] == delivery.alerts[0]["dedup_key"]
    assert sentinel["dedup_key"] == delivery.alerts[2]["dedup_key"]
    assert trigger["payload"]["severity"] == "warning"
    assert trigger["payload"]["source"] == f"db-{unique}"
    assert trigger["payload"]["custom_details"]["value"] == 0.91


async def test_alertmanager_gets_arrays_that_resolve(
    stack_settings: Settings, unique: str, receiver: Receiver
) -> None:
    delivery = await deliver(stack_settings, receiver, "alertmanager", unique)
    (firing,), (resolved,), _ = (r.body for r in delivery.requests)
    assert firing["labels"] == resolved["labels"]
    assert firing["labels"]["alertname"] == "failure_risk"
    assert firing["labels"]["entity"] == f"db-{unique}"
    assert resolved["endsAt"] == "2026-01-01T00:01:00.000Z"
    assert firing["endsAt"] > resolved["endsAt"]


async def probe(settings: Settings, receiver: Receiver, sink: SinkConfig, name: str) -> list[str]:
    """Produce one alert and wait until it arrives; return the paths it arrived at."""
    record = alert(f"failure_risk/{name}", "FIRING")
    await produce(settings, sink, [record])

    def paths() -> list[str]:
        return [r.path for r in receiver.requests if r.body["dedup_key"] == record["dedup_key"]]

    await wait_for(lambda: bool(paths()), settings, sink, f"alert {name}")
    return paths()


async def test_a_new_url_takes_effect_on_apply(
    stack_settings: Settings, unique: str, receiver: Receiver
) -> None:
    sink = await apply(stack_settings, "webhook", f"{receiver.url}/old", unique)
    try:
        assert await probe(stack_settings, receiver, sink, f"first-{unique}") == ["/old"]
        rotated = await apply(stack_settings, "webhook", f"{receiver.url}/new", unique)
        # The config holds the same reference both times; only the secrets file changed, and
        # the tasks restart to read it. The restart is asynchronous: an alert produced before
        # it completes may still go to the old URL, so probe until one reaches the new.
        assert rotated.config == sink.config
        deadline = time.monotonic() + 60
        probes = 0
        while "/new" not in await probe(stack_settings, receiver, sink, f"{probes}-{unique}"):
            assert time.monotonic() < deadline, f"none of {probes} alerts reached the new URL"
            probes += 1
        assert await probe(stack_settings, receiver, sink, f"last-{unique}") == ["/new"]
    finally:
        remove(stack_settings, sink)


def _rest(settings: Settings, path: str) -> str:
    with urllib.request.urlopen(f"{settings.kafka_connect_url}{path}", timeout=15) as reply:
        return str(reply.read().decode())


async def test_secrets_reach_the_tools_but_not_kafka_or_the_logs(
    stack_settings: Settings, unique: str, receiver: Receiver
) -> None:
    stack = local_stack(stack_settings, quiet=True)
    assert "connect" in dict(stack.managed_pids()), (
        f"the Connect worker on {stack_settings.kafka_connect_url} was not started from the "
        f"stack folder {stack.dir}, so its logs and its secrets folder are elsewhere: run the "
        "tests with FORESIGHT_STACK_DIR set to the folder of the stack that started it"
    )
    worker = stack.connect_config()
    assert worker["config.providers"] == "file"
    assert worker["config.providers.file.param.allowed.paths"] == str(
        connect_secrets_dir(stack.dir)
    )

    token = {
        name: uuid.uuid4().hex
        for name in ("webhook", "slack", "pagerduty", "alertmanager", "key", "reject", "down")
    }
    # A backslash, the properties separators and a non-ASCII letter: the file must keep them.
    routing_key = f"{token['key']} \\=:#!é"
    paths = {
        "webhook": f"/hooks/{token['webhook']}",
        "slack": f"/services/T000/B000/{token['slack']}",
        "pagerduty": f"/v2/enqueue/{token['pagerduty']}",
        "alertmanager": f"/am/{token['alertmanager']}/api/v2/alerts",
    }
    sinks = [
        (await deliver(stack_settings, receiver, target, unique, routing_key, path)).sink
        for target, path in paths.items()
    ]
    pagerduty = [r.body for r in receiver.at(paths["pagerduty"])]
    assert [event["routing_key"] for event in pagerduty] == [routing_key] * 3

    # A tool that rejects (HTTP 400: the records go to the dead letter queue) and one that is
    # down (503 and no retries: the task fails, its trace goes to the status topic).
    with serving(Receiver(lambda path: 400 if path.startswith("/reject/") else 503)) as failing:
        rejected = await apply(
            stack_settings, "webhook", f"{failing.url}/reject/{token['reject']}", f"{unique}-r"
        )
        down = await apply(
            stack_settings,
            "webhook",
            f"{failing.url}/down/{token['down']}",
            f"{unique}-d",
            **{"http.retries": "0", "http.retry.backoff.ms": "100"},
        )
        sinks += [rejected, down]
        try:
            async with TopicReader(stack_settings.kafka(), DLQ) as dead_letters:
                await produce(stack_settings, rejected, episode(f"{unique}-r"))
                await produce(stack_settings, down, episode(f"{unique}-d"))
                sentinel = f"failure_risk/sentinel-{unique}-r".encode()
                await dead_letters.until(lambda rs: any(r[1] == sentinel for r in rs), 60)

            def failed() -> bool:
                status = connector_status(stack_settings.kafka_connect_url, down.name)
                return [t["state"] for t in status["tasks"]] == ["FAILED"]

            await wait_for(failed, stack_settings, down, "the task failure")
            rest = [
                _rest(stack_settings, f"/connectors/{sink.name}/{part}")
                for sink in (rejected, down)
                for part in ("config", "tasks", "status")
            ]
        finally:
            remove(stack_settings, rejected)
            remove(stack_settings, down)

    topics = [worker[f"{kind}.storage.topic"] for kind in ("config", "offset", "status")]
    records = await read_topics(stack_settings.kafka(), [*topics, DLQ, *(s.topic for s in sinks)])
    logs = {path: path.read_bytes() for path in stack.logs("connect")}
    # The right places are searched: they hold our connectors, and the failures name the
    # endpoints by scheme, host and port only.
    assert [s.name for s in sinks if not any(s.name.encode() in t for t in logs.values())] == []
    assert [s.name for s in sinks if not any(s.name.encode() in r for r in records)] == []
    endpoint = f"POST {failing.url}/..."
    assert any(f"{endpoint} returned HTTP 400".encode() in r for r in records)
    assert any(f"{endpoint} failed after 1 attempts: HTTP 503".encode() in r for r in records)
    for name, secret in token.items():
        assert not [str(p) for p, text in logs.items() if secret.encode() in text], name
        assert not [r for r in records if secret.encode() in r], name
        assert not [r for r in rest if secret in r], name


def test_connect_status_lists_every_target(
    stack_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["connect", "status", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert {r["target"] for r in rows} == {
        "webhook",
        "slack",
        "pagerduty",
        "alertmanager",
        "teams",
        "email",
    }


async def test_connect_remove_deletes_the_connector_and_its_secrets_and_records_who(
    stack_settings: Settings, unique: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    operator, key = KeysFile(stack_settings.keys_file).create(f"ops-{unique}", [OPERATE])
    monkeypatch.setenv("FORESIGHT_API_KEY", key)
    sink = await apply(stack_settings, "slack", f"{receiver.url}/slack-{unique}", unique)
    assert sink.secrets_file.exists()
    await wait_for(  # Connect answers the status of a new connector once it has one
        lambda: (
            connector_state(stack_settings.kafka_connect_url, sink.name)["state"] != "NOT_APPLIED"
        ),
        stack_settings,
        sink,
        "the connector's creation",
    )
    trail = AuditTrail(stack_settings.kafka(), "audit", "cli", origin="ada@test")
    secrets_dir = sink.secrets_file.parent
    rows = remove_alert_connectors(stack_settings, trail, [sink.name], secrets_dir, 30.0)
    gone = {"connector": sink.name, "state": "NOT_APPLIED"}
    assert rows == [{**gone, "removed": True, "secrets_removed": True}]
    assert connector_state(stack_settings.kafka_connect_url, sink.name)["state"] == "NOT_APPLIED"
    assert not sink.secrets_file.exists()
    again = remove_alert_connectors(stack_settings, trail, [sink.name], secrets_dir, 30.0)
    assert again == [{**gone, "removed": False, "secrets_removed": False}]
    first, second = trail.pending()
    assert (first["action"], first["target"], first["outcome"]) == (
        "connect.remove",
        sink.name,
        "SUCCEEDED",
    )
    assert first["details"] == {sink.name: "removed"}
    assert second["details"] == {sink.name: "not applied"}
    assert first["key_id"] == second["key_id"] == operator.id
