"""The WebSocket gateway: filters and buffers alone, then the gateway on real Kafka and Redis."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidMessage, InvalidStatus

from connectors.gateway import Gateway, GatewayConfig
from connectors.gateway_feed import ClientOutbox, Dispatched, ReplayBuffer
from connectors.gateway_filters import Subscription, SubscriptionError, parse_subscription
from connectors.http.auth import Gatekeeper
from connectors.http.keys import READ, WRITE, KeysFile
from connectors.http.tls import TlsConfig
from connectors.kafka_admin import TopicRequest, ensure_topics
from connectors.live_feed import FeedConfig
from connectors.prometheus import GATEWAY_DROPPED, GATEWAY_REPEATED_ALERTS
from connectors.redis_store import FeatureStore
from deploy.local.certs import make_dev_certs
from schemas.codec import Codec
from schemas.predictions import as_rows
from streams.settings import Settings
from tests.schemas.samples import T0

KEY = "test-key"
WRITER_KEY = "writer-key"  # a key without the read role


def prediction(
    entity: str,
    kinds: tuple[str, ...] = ("ANOMALY", "FORECAST"),
    value: float = 1.0,
    metrics: int = 1,
) -> dict[str, Any]:
    """A PredictionBatch for ``entity`` with one prediction per kind and metric."""
    return {
        "prediction_id": f"{entity}@{T0}",
        "entity": entity,
        "event_time": T0,
        "emitted_at": T0 + 5,
        "latency_ms": 5.0,
        "predictions": [
            {
                "metric": f"m{m}",
                "kind": kind,
                "model": "test",
                "model_version": "1",
                "horizon_s": 0 if kind == "ANOMALY" else 300,
                "value": value,
                "score": 0.5,
                "lower": None if kind == "ANOMALY" else value - 1,
                "upper": None if kind == "ANOMALY" else value + 1,
            }
            for m in range(metrics)
            for kind in kinds
        ],
    }


def alert(
    entity: str,
    severity: str = "WARNING",
    status: str = "FIRING",
    labels: dict[str, str] | None = None,
    rule: str = "anomaly",
) -> dict[str, Any]:
    """An Alert about ``entity``."""
    return {
        "dedup_key": f"{rule}/{entity}",
        "alert_id": f"{rule}/{entity}@{T0}",
        "status": status,
        "severity": severity,
        "rule": rule,
        "entity": entity,
        "summary": f"{rule} on {entity}",
        "value": 0.97,
        "labels": labels or {},
        "starts_at": T0,
        "ends_at": None if status == "FIRING" else T0 + 60_000,
        "event_time": T0,
    }


# -- filters, outbox and replay ring (no services) ------------------------------------------


def test_subscription_defaults_take_everything() -> None:
    subscription = parse_subscription({"type": "subscribe"})
    assert subscription == Subscription()
    batch = prediction("db-1")
    assert subscription.filter_predictions(batch) == batch
    assert subscription.accepts_alert(alert("db-1", severity="INFO"))


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        ({"type": "hello"}, "expected"),
        ({"type": "subscribe", "kinds": ["ANOMALY", "GUESS"]}, "GUESS"),
        ({"type": "subscribe", "topics": []}, "non-empty list"),
        ({"type": "subscribe", "topics": ["metrics"]}, "metrics"),
        ({"type": "subscribe", "min_severity": "LOUD"}, "LOUD"),
        ({"type": "subscribe", "labels": {"region": 1}}, "labels"),
        ({"type": "subscribe", "last_id": "7"}, "last_id"),
        ({"type": "subscribe", "last_id": -1}, "last_id"),
        ({"type": "subscribe", "entity": ""}, "entity"),
        ({"type": "subscribe", "entitty": "web-*"}, "entitty"),
        (["subscribe"], "JSON object"),
    ],
)
def test_bad_subscriptions_say_what_is_wrong(message: Any, complaint: str) -> None:
    with pytest.raises(SubscriptionError, match=complaint):
        parse_subscription(message)


def test_kinds_cut_a_batch_down_and_drop_it_when_nothing_is_left() -> None:
    subscription = parse_subscription({"type": "subscribe", "kinds": ["ANOMALY"]})
    kept = subscription.filter_predictions(prediction("web-1"))
    assert kept is not None and [p["kind"] for p in kept["predictions"]] == ["ANOMALY"]
    assert subscription.filter_predictions(prediction("web-1", kinds=("FORECAST",))) is None


def test_entity_globs_labels_and_severity() -> None:
    subscription = parse_subscription(
        {
            "type": "subscribe",
            "entity": "web-*",
            "labels": {"region": "eu"},
            "min_severity": "WARNING",
        }
    )
    assert subscription.exact_entity is None
    assert subscription.matches_entity("web-1") and not subscription.matches_entity("db-1")
    assert subscription.accepts_alert(alert("web-1", "CRITICAL", labels={"region": "eu"}))
    assert not subscription.accepts_alert(alert("web-1", "INFO", labels={"region": "eu"}))
    assert not subscription.accepts_alert(alert("web-1", "CRITICAL", labels={"region": "us"}))
    assert not subscription.accepts_alert(alert("db-1", "CRITICAL", labels={"region": "eu"}))
    # A PredictionBatch carries no labels: a label matcher never lets it through.
    assert subscription.filter_predictions(prediction("web-1")) is None
    assert parse_subscription({"type": "subscribe", "entity": "web-1"}).exact_entity == "web-1"


def test_topics_select_predictions_or_alerts() -> None:
    alerts_only = parse_subscription({"type": "subscribe", "topics": ["alerts"]})
    assert alerts_only.filter_predictions(prediction("web-1")) is None
    assert alerts_only.accepts_alert(alert("web-1"))
    predictions_only = parse_subscription({"type": "subscribe", "topics": ["predictions"]})
    assert not predictions_only.accepts_alert(alert("web-1"))


def test_outbox_keeps_everything_until_full_then_coalesces_per_entity() -> None:
    box = ClientOutbox(max_messages=3)
    for text in ("a1", "a2"):
        assert box.offer(("prediction", "a"), text) == 0  # room left: nothing coalesced
    box.offer(("alert", 1), "x1")
    assert box.offer(("prediction", "a"), "a3") == 1  # full: replaces a2, a's newest unsent
    assert box.offer(("prediction", "b"), "b1") == 1  # full, nothing of b queued: a1 goes
    assert box.offer(("alert", 2), "x2") == 1  # alerts never coalesce: the oldest goes
    assert box.take() == ["a3", "b1", "x2"]
    assert box.dropped == 3
    assert len(box) == 0


def test_outbox_without_coalescing_drops_the_oldest() -> None:
    box = ClientOutbox(max_messages=2, coalesce=False)
    for text in ("a1", "a2", "a3"):
        box.offer(("prediction", "a"), text)
    assert box.take() == ["a2", "a3"]
    assert box.dropped == 1
    with pytest.raises(ValueError, match="at least 1"):
        ClientOutbox(max_messages=0)


def test_replay_ring_resumes_or_reports_a_gap() -> None:
    ring = ReplayBuffer(capacity=3)
    assert ring.resume(0) == (False, [])
    for i in range(1, 6):
        ring.append(Dispatched(i, "alerts", {"n": i}))
    gap, messages = ring.resume(3)
    assert not gap and [m.id for m in messages] == [4, 5]
    assert ring.resume(5) == (False, [])
    gap, messages = ring.resume(1)  # 2 already left the ring
    assert gap and [m.id for m in messages] == [3, 4, 5]
    gap, messages = ring.resume(99)  # from an earlier gateway process
    assert gap and [m.id for m in messages] == [3, 4, 5]


# -- the gateway on Kafka and Redis ---------------------------------------------------------


@asynccontextmanager
async def running_gateway(
    settings: Settings, unique: str, **overrides: Any
) -> AsyncIterator[tuple[Gateway, Callable[[str, dict[str, Any]], Any]]]:
    """A gateway on its own one-partition topics, and a function producing to them."""
    topics = {"prediction_batch": f"test.predictions.{unique}", "alert": f"test.alerts.{unique}"}
    kafka = settings.kafka()
    await ensure_topics(kafka, [TopicRequest(t, 1, {}) for t in topics.values()])
    codec = Codec()
    producer = kafka.producer(linger_ms=5)
    await producer.start()

    async def produce(schema: str, record: dict[str, Any]) -> None:
        await producer.send(topics[schema], codec.encode(schema, record), key=b"k")

    produce_before = overrides.pop("before_start", [])
    for schema, record in produce_before:
        await produce(schema, record)
    await producer.flush()
    store = FeatureStore(settings.feature_store_url)
    folder = tempfile.TemporaryDirectory()
    keys = KeysFile(f"{folder.name}/keys.json")
    for key, role in ((KEY, READ), ("other-key", READ), (WRITER_KEY, WRITE)):
        keys.create(key, [role], key=key)
    served = {name: overrides.pop(name) for name in ("compress", "tls") if name in overrides}
    feed = FeedConfig(
        kafka=kafka,
        predictions_topic=topics["prediction_batch"],
        alerts_topic=topics["alert"],
        **overrides,
    )
    config = GatewayConfig(feed=feed, gatekeeper=Gatekeeper(keys), port=0, **served)
    gateway = Gateway(config, store)
    await gateway.start()
    try:
        yield gateway, produce
    finally:
        await gateway.stop()
        await producer.stop()
        await store.close()
        folder.cleanup()


async def subscribe(gateway: Gateway, request: dict[str, Any], **kwargs: Any) -> ClientConnection:
    """A client connected with the API key that has sent ``request`` and got "subscribed"."""
    ws = await connect(f"ws://127.0.0.1:{gateway.port}/ws?api_key={KEY}", **kwargs)
    await ws.send(json.dumps({"type": "subscribe", **request}))
    return ws


async def receive_until(
    ws: ClientConnection, done: Callable[[list[dict[str, Any]]], bool], seconds: float = 20
) -> list[dict[str, Any]]:
    """Messages received until ``done(messages)`` holds; fails after ``seconds``."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while not done(got):
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"gave up after {seconds} s with {len(got)} messages: {got[-3:]}")
        try:
            got.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
        except TimeoutError:
            continue
    return got


def subscribed(got: list[dict[str, Any]]) -> bool:
    return bool(got) and got[-1]["type"] == "subscribed"


def has(kind: str, entity: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda got: any(
        m["type"] == kind and m.get("data", {}).get("entity") == entity for m in got
    )


def http_get(
    url: str, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.integration
async def test_each_client_gets_exactly_what_its_filter_matches(
    stack_settings: Settings, unique: str
) -> None:
    async with running_gateway(stack_settings, unique) as (gateway, produce):
        web = await subscribe(
            gateway, {"topics": ["predictions"], "entity": "web-*", "kinds": ["ANOMALY"]}
        )
        eu = await subscribe(
            gateway,
            {"topics": ["alerts"], "labels": {"region": "eu"}, "min_severity": "WARNING"},
        )
        everything = await subscribe(gateway, {})
        for ws in (web, eu, everything):
            await receive_until(ws, subscribed)
        mix = [
            ("prediction_batch", prediction("web-1")),
            ("prediction_batch", prediction("web-2", kinds=("FORECAST",))),  # no ANOMALY
            ("prediction_batch", prediction("db-1")),
            ("alert", alert("web-1", "CRITICAL", labels={"region": "eu"})),
            ("alert", alert("web-2", "INFO", labels={"region": "eu"})),  # below WARNING
            ("alert", alert("db-1", "WARNING", labels={"region": "us"})),
            ("prediction_batch", prediction("web-3", kinds=("ANOMALY", "DURATION"))),
            ("alert", alert("db-2", "WARNING", labels={"region": "eu"})),
            ("prediction_batch", prediction("web-last")),  # the end marker for web
            ("alert", alert("end", "CRITICAL", labels={"region": "eu"})),  # and for eu
        ]
        for schema, record in mix:
            await produce(schema, record)

        got_web = await receive_until(web, has("prediction", "web-last"))
        got_eu = await receive_until(eu, has("alert", "end"))
        # The two topics' records interleave freely: wait for the last of each.
        got_all = await receive_until(
            everything, lambda got: has("alert", "end")(got) and has("prediction", "web-last")(got)
        )

    kinds_seen = [
        (m["data"]["entity"], [p["kind"] for p in m["data"]["predictions"]]) for m in got_web
    ]
    assert kinds_seen == [("web-1", ["ANOMALY"]), ("web-3", ["ANOMALY"]), ("web-last", ["ANOMALY"])]
    assert [(m["type"], m["data"]["entity"]) for m in got_eu] == [
        ("alert", "web-1"),
        ("alert", "db-2"),
        ("alert", "end"),
    ]
    live = [m for m in got_all if m["type"] in ("prediction", "alert")]
    for kind, schema in (("prediction", "prediction_batch"), ("alert", "alert")):
        # Each topic in its order; the two topics' partitions interleave freely.
        sent = [as_rows(r) if kind == "prediction" else r for s, r in mix if s == schema]
        assert [m["data"] for m in live if m["type"] == kind] == sent
    ids = [m["id"] for m in live]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


@pytest.mark.integration
async def test_a_client_without_the_right_key_is_refused_before_the_upgrade(
    stack_settings: Settings, unique: str
) -> None:
    async with running_gateway(stack_settings, unique) as (gateway, _):
        base = f"127.0.0.1:{gateway.port}"
        for url in (f"ws://{base}/ws", f"ws://{base}/ws?api_key=wrong"):
            with pytest.raises(InvalidStatus) as refused:
                await connect(url)
            assert refused.value.response.status_code == 401
        for header in ({"Authorization": "Bearer other-key"}, {"X-API-Key": KEY}):
            ws = await connect(f"ws://{base}/ws", additional_headers=header)
            await ws.send(json.dumps({"type": "subscribe", "entity": f"nobody-{unique}"}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            await ws.close()
        status, body = await asyncio.to_thread(http_get, f"http://{base}/api/alerts/firing")
        assert status == 401 and b"API key" in body
        assert set(json.loads(body)["error"]) == {"code", "message", "details"}
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"ws://{base}/ws?api_key={WRITER_KEY}")
        assert refused.value.response.status_code == 403
        status, body = await asyncio.to_thread(
            http_get, f"http://{base}/api/alerts/firing?api_key={WRITER_KEY}"
        )
        assert status == 403 and json.loads(body)["error"]["code"] == "forbidden"
        # Wrong keys from this address are throttled (10 a minute, 3 failed above; each 429 is
        # held back a second); the right key still gets in.
        flood = [
            (await asyncio.to_thread(http_get, f"http://{base}/api/alerts/firing?api_key=w{i}"))[0]
            for i in range(12)
        ]
        assert flood.count(429) >= 3 and set(flood) == {401, 429}
        status, _ = await asyncio.to_thread(
            http_get, f"http://{base}/api/alerts/firing?api_key={KEY}"
        )
        assert status == 200
        ws = await connect(f"ws://{base}/ws?api_key={KEY}")
        await ws.send(json.dumps({"type": "subscribe", "kinds": ["GUESS"]}))
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and "GUESS" in error["message"]
        await ws.close()


@pytest.mark.integration
async def test_a_stalled_client_loses_its_own_messages_and_slows_nobody(
    stack_settings: Settings, unique: str
) -> None:
    async with running_gateway(stack_settings, unique, queue_size=50, max_poll_records=20) as (
        gateway,
        produce,
    ):
        # The stalled client reads nothing: a tiny receive buffer, and a client library that
        # stops reading from the socket after one unread frame.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gateway.port))
        stalled = await subscribe(gateway, {}, sock=sock, max_queue=1)
        fast = await subscribe(gateway, {})
        await receive_until(fast, subscribed)
        dropped_before = GATEWAY_DROPPED._value.get()

        received: list[str] = []

        async def read_fast() -> None:
            async for raw in fast:
                message = json.loads(raw)
                if message["type"] == "prediction":
                    received.append(message["data"]["entity"])

        reader = asyncio.create_task(read_fast())
        produced: list[str] = []
        deadline = time.monotonic() + 90
        while gateway.health()["dropped"] == 0:
            assert time.monotonic() < deadline, "the stalled client never lost a message"
            for _ in range(200):
                produced.append(f"e{len(produced)}")
                await produce("prediction_batch", prediction(produced[-1], metrics=10))
            deadline_round = time.monotonic() + 30
            while len(received) < len(produced):  # the fast client keeps up, round by round
                assert time.monotonic() < deadline_round, (
                    f"the fast client got {len(received)} of {len(produced)}"
                )
                await asyncio.sleep(0.05)
        reader.cancel()
        stalled_outbox_dropped = gateway.health()["dropped"]
        await stalled.close()

    assert received == produced
    assert stalled_outbox_dropped > 0
    assert GATEWAY_DROPPED._value.get() - dropped_before >= stalled_outbox_dropped


@pytest.mark.integration
async def test_subscribing_sends_the_latest_state_first(
    stack_settings: Settings, unique: str
) -> None:
    store = FeatureStore(stack_settings.feature_store_url)
    cached = [prediction(f"snap-{unique}-{i}", value=float(i)) for i in range(3)]
    try:
        await store.put_predictions([*cached, prediction(f"other-{unique}")])
    finally:
        await store.close()
    history = [
        ("alert", alert(f"snap-{unique}-0", "CRITICAL", rule="hot")),
        ("alert", alert(f"snap-{unique}-1", "WARNING", rule="hot")),
        ("alert", alert(f"snap-{unique}-1", "WARNING", status="RESOLVED", rule="hot")),
    ]
    async with running_gateway(stack_settings, unique, before_start=history) as (gateway, _):
        ws = await subscribe(gateway, {"entity": f"snap-{unique}-*", "kinds": ["FORECAST"]})
        first = json.loads(await ws.recv())
        assert first["type"] == "subscribed" and first["snapshot"] == 4
        snapshot = [json.loads(await ws.recv()) for _ in range(4)]
        await ws.close()
        base = f"http://127.0.0.1:{gateway.port}"
        firing = await asyncio.to_thread(
            http_get, f"{base}/api/alerts/firing", {"Authorization": f"Bearer {KEY}"}
        )
        found = await asyncio.to_thread(
            http_get, f"{base}/api/entities/snap-{unique}-2/predictions?api_key={KEY}"
        )
        missing = await asyncio.to_thread(
            http_get, f"{base}/api/entities/nobody-{unique}/predictions?api_key={KEY}"
        )
        health = await asyncio.to_thread(http_get, f"{base}/health")
        metrics = await asyncio.to_thread(http_get, f"{base}/metrics")
        page = await asyncio.to_thread(http_get, f"{base}/")

    predictions = sorted(
        (m["data"] for m in snapshot if m["topic"] == "predictions"), key=lambda b: b["entity"]
    )
    assert all(m["type"] == "snapshot" for m in snapshot)
    assert predictions == [
        {**batch, "predictions": [p for p in batch["predictions"] if p["kind"] == "FORECAST"]}
        for batch in map(as_rows, cached)
    ]
    assert [m["data"]["entity"] for m in snapshot if m["topic"] == "alerts"] == [f"snap-{unique}-0"]
    assert firing[0] == 200 and [a["entity"] for a in json.loads(firing[1])] == [f"snap-{unique}-0"]
    assert found[0] == 200 and json.loads(found[1]) == as_rows(cached[2])
    assert missing[0] == 404 and f"nobody-{unique}" in json.loads(missing[1])["error"]["message"]
    report = json.loads(health[1])
    assert health[0] == 200 and report["kafka_consumer_alive"] is True
    assert {"clients", "uptime_s", "firing_alerts"} <= set(report)
    assert metrics[0] == 200 and b"foresight_gateway_clients" in metrics[1]
    assert page[0] == 200 and b"<canvas" in page[1]


@pytest.mark.integration
async def test_an_alert_state_change_sent_twice_is_shown_once(
    stack_settings: Settings, unique: str
) -> None:
    """Two workers fed the same telemetry, or one replaying its last steps after a restart,
    send the same state change again: the feed relays it once and firing counts it once."""
    gone, held, new, end = (f"{name}-{unique}" for name in ("gone", "held", "new", "end"))
    history = [
        ("alert", alert(gone)),
        ("alert", alert(gone, status="RESOLVED")),
        ("alert", alert(gone)),  # its FIRING again, after it resolved
        ("alert", alert(held)),
        ("alert", alert(held)),
    ]
    async with running_gateway(stack_settings, unique, before_start=history) as (gateway, produce):
        ws = await subscribe(gateway, {"topics": ["alerts"]})
        got = await receive_until(ws, lambda got: len(got) == 2)
        repeated_before = GATEWAY_REPEATED_ALERTS._value.get()
        for record in (
            alert(held),
            alert(new),
            alert(new),
            alert(gone, status="RESOLVED"),
            alert(end),
        ):
            await produce("alert", record)
        got += await receive_until(ws, has("alert", end))
        await ws.close()
        base = f"http://127.0.0.1:{gateway.port}"
        status, body = await asyncio.to_thread(
            http_get, f"{base}/api/alerts/firing", {"X-API-Key": KEY}
        )
        health = gateway.health()

    assert got[0]["type"] == "subscribed" and got[0]["snapshot"] == 1
    assert (got[1]["type"], got[1]["data"]["entity"]) == ("snapshot", held)
    live = [(m["data"]["entity"], m["data"]["status"]) for m in got if m["type"] == "alert"]
    assert live == [(new, "FIRING"), (end, "FIRING")]
    assert status == 200 and [a["entity"] for a in json.loads(body)] == [end, held, new]
    assert health["firing_alerts"] == 3
    assert GATEWAY_REPEATED_ALERTS._value.get() - repeated_before == 3


@pytest.mark.integration
async def test_a_client_resumes_after_its_last_id(stack_settings: Settings, unique: str) -> None:
    async with running_gateway(stack_settings, unique) as (gateway, produce):
        first = await subscribe(gateway, {"topics": ["predictions"], "entity": "r-*"})
        for i in range(5):
            await produce("prediction_batch", prediction(f"r-{i}"))
        got = await receive_until(first, has("prediction", "r-4"))
        live = [m for m in got if m["type"] == "prediction"]
        last_seen = live[2]["id"]  # r-2: pretend the connection broke here
        await first.close()
        for i in range(5, 8):
            await produce("prediction_batch", prediction(f"r-{i}"))
            await produce("prediction_batch", prediction(f"skip-{i}"))
        watcher = await subscribe(gateway, {"entity": "r-7"})
        await receive_until(watcher, has("prediction", "r-7"))
        await watcher.close()

        again = await subscribe(
            gateway, {"topics": ["predictions"], "entity": "r-*", "last_id": last_seen}
        )
        resumed = await receive_until(again, has("prediction", "r-7"))
        await again.close()

    assert resumed[0]["type"] == "subscribed" and resumed[0]["resumed"] is True
    assert resumed[0]["snapshot"] == 0
    assert [m["data"]["entity"] for m in resumed[1:]] == [f"r-{i}" for i in range(3, 8)]
    assert all(m["type"] == "prediction" and m["id"] > last_seen for m in resumed[1:])


@pytest.mark.integration
async def test_a_client_back_from_a_restarted_gateway_gets_a_fresh_snapshot(
    stack_settings: Settings, unique: str
) -> None:
    """Ids of a restarted gateway are above its predecessor's, so an old ``last_id`` is a gap
    even once the new process has relayed as many messages (a page left open across two
    ``foresight demo`` runs)."""
    watched = f"old-{unique}-*"
    async with running_gateway(stack_settings, unique) as (gateway, produce):
        ws = await subscribe(gateway, {"topics": ["predictions"], "entity": watched})
        for i in range(3):
            await produce("prediction_batch", prediction(f"old-{unique}-{i}"))
        got = await receive_until(ws, has("prediction", f"old-{unique}-2"))
        last_seen = got[-1]["id"]
        await ws.close()
    async with running_gateway(stack_settings, unique) as (restarted, produce):
        ws = await subscribe(restarted, {"topics": ["predictions"], "entity": f"new-{unique}-*"})
        for i in range(5):
            await produce("prediction_batch", prediction(f"new-{unique}-{i}"))
        newer = await receive_until(ws, has("prediction", f"new-{unique}-4"))
        await ws.close()
        back = await subscribe(
            restarted, {"topics": ["predictions"], "entity": watched, "last_id": last_seen}
        )
        answer = json.loads(await back.recv())
        await back.close()

    assert answer["type"] == "subscribed" and answer["resumed"] is False
    assert min(m["id"] for m in newer if m["type"] == "prediction") > last_seen


@pytest.mark.integration
async def test_with_a_certificate_the_feed_and_routes_are_tls_only(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    certs = make_dev_certs(tmp_path / "certs")
    tls = TlsConfig(str(certs.cert), str(certs.key), str(certs.ca))
    async with running_gateway(stack_settings, unique, tls=tls) as (gateway, produce):
        url = f"wss://127.0.0.1:{gateway.port}/ws?api_key={KEY}"
        async with connect(url, ssl=tls.client_context()) as ws:
            await ws.send(json.dumps({"type": "subscribe", "entity": f"web-{unique}"}))
            await receive_until(ws, subscribed)
            await produce("prediction_batch", prediction(f"web-{unique}"))
            await receive_until(ws, has("prediction", f"web-{unique}"))
        health = tls.url("127.0.0.1", gateway.port, "/health")
        status, _ = await asyncio.to_thread(http_get, health, None, tls.client_context())
        assert status == 200
        with pytest.raises(ssl.SSLCertVerificationError):  # a client without the CA
            await connect(url, ssl=ssl.create_default_context())
        with pytest.raises((InvalidMessage, ConnectionError)):  # no plain WebSocket
            await connect(f"ws://127.0.0.1:{gateway.port}/ws?api_key={KEY}")
