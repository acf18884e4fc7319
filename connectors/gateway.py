"""The WebSocket gateway: predictions and alerts from Kafka to browsers and dashboards, live.

One asyncio process, one port (``FORESIGHT_GATEWAY_PORT``), over TLS (https and wss) when the
configuration has a certificate:

* ``/ws``: the live feed. A client connects with its API key, sends a subscribe message (see
  :mod:`connectors.gateway_filters`), and gets ``{"type": "subscribed"}``, the latest state
  matching its filter as ``{"type": "snapshot"}`` messages (cached predictions from Redis,
  firing alerts), any missed messages after ``last_id``, then live
  ``{"type": "prediction" | "alert", "id": n, "data": {...}}``.
* ``/``: the live page (``connectors/gateway_static``); ``/api/entities/<entity>/predictions``
  and ``/api/alerts/firing``: the read API; ``/health`` and ``/metrics``.

The Kafka consumer is raw aiokafka without a consumer group: every gateway replica reads every
partition, because every replica serves its own clients. Predictions are read from the end
(a live feed); alerts are read from the beginning once at start, without dispatching, to
rebuild which alerts are firing. The alerts topic is at-least-once, so it is folded with
:class:`~models.alerts.FiringAlerts`: a state change already read (the same episode and
status, re-sent) is neither relayed nor counted again. Ids are a sequence per gateway process
that starts at its start time in microseconds, so a restarted gateway's ids are above any its
predecessor gave out: a client resumes against the process it was connected to, and after a
restart it is told of the gap and gets a snapshot.

The consumer loop never awaits a client: it offers each message to each matching client's
:class:`~connectors.gateway_feed.ClientOutbox` and moves on; a sender task per client drains
its outbox into its socket, so a slow client only loses (coalesced or oldest) messages of its
own and is told how many.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from connectors.gateway_feed import ClientOutbox, Dispatched, ReplayBuffer
from connectors.gateway_filters import (
    ALERTS,
    PREDICTIONS,
    Subscription,
    SubscriptionError,
    read_subscription,
)
from connectors.gateway_http import (
    StaticFiles,
    error_response,
    json_response,
    respond,
    to_json,
)
from connectors.http.auth import Admission, Gatekeeper
from connectors.http.keys import READ, presented_key
from connectors.http.tls import TlsConfig
from connectors.kafka_clients import KafkaConfig
from connectors.prometheus import (
    GATEWAY_CLIENTS,
    GATEWAY_DROPPED,
    GATEWAY_QUEUE_DEPTH,
    GATEWAY_REPEATED_ALERTS,
    GATEWAY_SENT,
    GATEWAY_UNDECODABLE,
)
from connectors.redis_store import FeatureStore
from models.alerts import FiringAlerts
from schemas.codec import Codec, DeadLetter, Message
from schemas.predictions import as_rows

log = logging.getLogger(__name__)

_POLL_TIMEOUT_MS = 500
_GLOB_CACHE_LIMIT = 100_000


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway needs, passed explicitly (``foresight gateway`` maps settings).

    Parameters
    ----------
    kafka
        The brokers and how to reach them (``KAFKA_BOOTSTRAP_SERVERS`` and the security
        settings).
    gatekeeper
        Checks the key (``read`` role) of ``/ws`` and ``/api/`` requests, and the rate limits.
    host, port
        Where to listen (``FORESIGHT_BIND_HOST``, ``FORESIGHT_GATEWAY_PORT``); port 0 picks a
        free one, see :attr:`Gateway.port`.
    predictions_topic, alerts_topic
        The topics to relay (default ``predictions`` and ``alerts``).
    queue_size
        Messages held per client before dropping (``FORESIGHT_GATEWAY_QUEUE``, default 1000).
    coalesce
        Let a newer prediction of an entity replace its unsent older one (default ``True``).
    replay_size
        Messages kept for resuming clients (default 10,000).
    max_poll_records
        Records handled per poll before the client senders get a turn (default 500).
    snapshot_limit
        Most cached predictions sent as a snapshot on subscribe (default 1,000).
    compress
        Offer permessage-deflate to clients (default ``False``: it costs CPU per client per
        message; turn it on when clients sit behind slow links).
    tls
        With a certificate (``FORESIGHT_TLS_CERT``), every route and the feed are served over
        TLS only (``https``, ``wss``); without, plain (the default).
    """

    kafka: KafkaConfig
    gatekeeper: Gatekeeper
    host: str = "127.0.0.1"
    port: int = 8765
    predictions_topic: str = "predictions"
    alerts_topic: str = "alerts"
    queue_size: int = 1000
    coalesce: bool = True
    replay_size: int = 10_000
    max_poll_records: int = 500
    snapshot_limit: int = 1000
    compress: bool = False
    tls: TlsConfig = field(default_factory=TlsConfig)


class _Client:
    """One subscribed WebSocket connection."""

    def __init__(
        self, connection: ServerConnection, subscription: Subscription, outbox: ClientOutbox
    ) -> None:
        self.connection = connection
        self.subscription = subscription
        self.outbox = outbox


class GatewayStartError(RuntimeError):
    """The gateway could not start (a topic is missing, Kafka does not answer)."""


class Gateway:
    """Relays the predictions and alerts topics to subscribed WebSocket clients.

    Use :meth:`start` and :meth:`stop` (tests, embedding) or :meth:`run` (the command).
    """

    def __init__(self, config: GatewayConfig, store: FeatureStore, codec: Codec | None = None):
        self.config = config
        self._store = store
        self._codec = codec or Codec()
        self._static = StaticFiles()
        # Above every id of an earlier process while it relayed under a million messages/s.
        self._last_id = time.time_ns() // 1000
        self._ring = ReplayBuffer(config.replay_size, origin=self._last_id)
        self._alerts = FiringAlerts()
        self._exact: dict[str, set[_Client]] = {}
        self._globbed: set[_Client] = set()
        self._glob_matches: dict[str, list[_Client]] = {}
        self._connections = 0
        self._history_end: dict[TopicPartition, int] = {}
        self._started_at = time.monotonic()
        self._last_poll = 0.0
        self._consumer: AIOKafkaConsumer | None = None
        self._consumer_task: asyncio.Task[None] | None = None
        self._server: Server | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start consuming and listening; returns once both are ready."""
        await self._start_consumer()
        self._server = await serve(
            self._serve_client,
            self.config.host,
            self.config.port,
            process_request=self._route,
            max_size=64 * 1024,  # clients only send subscribe messages
            # permessage-deflate would compress each message once per client: CPU that grows
            # with the fan-out, for messages that are small already.
            compression="deflate" if self.config.compress else None,
            ssl=self.config.tls.server_context(),
        )
        log.info(
            "gateway on %s relaying %s and %s",
            self.config.tls.url(self.config.host, self.port),
            self.config.predictions_topic,
            self.config.alerts_topic,
        )

    @property
    def port(self) -> int:
        """The port listened on (the real one when configured with port 0)."""
        if self._server is None:
            raise RuntimeError("the gateway is not started; call start() first")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        """Close every client with 1001 (going away), then stop the consumer."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._consumer_task is not None:
            self._consumer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer_task
        if self._consumer is not None:
            await self._consumer.stop()

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully."""
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await self.start()
        try:
            await stopping.wait()
            log.info("gateway shutting down: closing %d clients", self._connections)
        finally:
            await self.stop()

    # -- Kafka -----------------------------------------------------------------------------

    async def _start_consumer(self) -> None:
        topics = [self.config.predictions_topic, self.config.alerts_topic]
        consumer = self.config.kafka.consumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        try:
            await consumer.start()
        except Exception as error:
            raise GatewayStartError(
                f"cannot reach Kafka at {self.config.kafka.describe()}: {error!r}; "
                "is the stack up (foresight stack up)?"
            ) from error
        self._consumer = consumer
        existing = await consumer.topics()
        missing = [t for t in topics if t not in existing]
        if missing:
            await consumer.stop()
            raise GatewayStartError(
                f"topics {missing} do not exist on {self.config.kafka.bootstrap_servers}; "
                "create them with `foresight topics create`"
            )
        consumer.subscribe(topics)
        # Without a consumer group aiokafka assigns every partition on its next metadata
        # refresh and offers no event for it, so poll the assignment, briefly.
        deadline = time.monotonic() + 30
        while not {tp.topic for tp in consumer.assignment()} >= set(topics):
            if time.monotonic() > deadline:
                await consumer.stop()
                raise GatewayStartError(f"no partitions of {topics} were assigned within 30 s")
            await asyncio.sleep(0.01)
        assigned = consumer.assignment()
        alert_partitions = [tp for tp in assigned if tp.topic == self.config.alerts_topic]
        prediction_partitions = [tp for tp in assigned if tp.topic != self.config.alerts_topic]
        self._history_end = await consumer.end_offsets(alert_partitions)
        await consumer.seek_to_beginning(*alert_partitions)
        await consumer.seek_to_end(*prediction_partitions)
        for tp in consumer.assignment():  # resolve the lazy seeks before reporting ready
            await consumer.position(tp)
        self._last_poll = time.monotonic()
        self._consumer_task = asyncio.create_task(self._consume(consumer), name="gateway-kafka")

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(
                timeout_ms=_POLL_TIMEOUT_MS, max_records=self.config.max_poll_records
            )
            self._last_poll = time.monotonic()
            for records in batches.values():
                for record in records:
                    self._handle_record(record)
            if batches:
                GATEWAY_QUEUE_DEPTH.set(sum(len(c.outbox) for c in self._clients()))
                await asyncio.sleep(0)  # let the client senders drain before the next poll

    def _handle_record(self, record: ConsumerRecord) -> None:
        expect = "alert" if record.topic == self.config.alerts_topic else "prediction_batch"
        message = Message(record.topic, record.partition, record.offset, record.key, record.value)
        decoded = self._codec.decode_message(message, expect)
        if isinstance(decoded, DeadLetter):
            GATEWAY_UNDECODABLE.labels(record.topic).inc()
            log.warning(
                "skipping %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                decoded.reason,
            )
            return
        if expect == "alert":
            news = self._alerts.apply(decoded)
            end = self._history_end.get(TopicPartition(record.topic, record.partition))
            if end is not None and record.offset < end:
                return  # history read at start: state only, clients never saw it live
            if news:
                self.dispatch_alert(decoded)
            else:
                GATEWAY_REPEATED_ALERTS.inc()
        else:  # clients get one record per prediction, whichever version wrote the batch
            self.dispatch_predictions(as_rows(decoded))

    # -- fan-out ---------------------------------------------------------------------------

    def _next_id(self, topic: str, record: dict[str, Any]) -> int:
        self._last_id += 1
        self._ring.append(Dispatched(self._last_id, topic, record))
        return self._last_id

    def _candidates(self, entity: str) -> Iterable[_Client]:
        """Clients whose entity glob matches ``entity``: an exact-name index, plus a cache of
        glob matches per entity (rebuilt when glob subscribers change), so a record costs a
        dict lookup rather than one ``fnmatch`` per client."""
        matches = self._glob_matches.get(entity)
        if matches is None:
            if len(self._glob_matches) >= _GLOB_CACHE_LIMIT:
                self._glob_matches.clear()
            matches = [c for c in self._globbed if c.subscription.matches_entity(entity)]
            self._glob_matches[entity] = matches
        exact = self._exact.get(entity)
        return [*exact, *matches] if exact else matches

    def _offer(self, client: _Client, key: tuple[str, Any], text: str) -> None:
        if client.outbox.offer(key, text):
            GATEWAY_DROPPED.inc()

    def dispatch_predictions(self, batch: dict[str, Any]) -> None:
        """Give a PredictionBatch an id and queue it, filtered, for every matching client."""
        message_id = self._next_id(PREDICTIONS, batch)
        entity = batch["entity"]
        encoded: dict[tuple[Any, ...], str | None] = {}
        for client in self._candidates(entity):
            subscription = client.subscription
            variant = (subscription.kinds, subscription.labels, PREDICTIONS in subscription.topics)
            if variant not in encoded:
                kept = subscription.filter_predictions(batch)
                encoded[variant] = (
                    None
                    if kept is None
                    else to_json({"type": "prediction", "id": message_id, "data": kept})
                )
            text = encoded[variant]
            if text is not None:
                self._offer(client, ("prediction", entity), text)

    def dispatch_alert(self, alert: dict[str, Any]) -> None:
        """Give an Alert an id and queue it for every matching client (never coalesced)."""
        message_id = self._next_id(ALERTS, alert)
        text: str | None = None
        for client in self._candidates(alert["entity"]):
            if client.subscription.accepts_alert(alert):
                if text is None:
                    text = to_json({"type": "alert", "id": message_id, "data": alert})
                self._offer(client, ("alert", message_id), text)

    # -- clients ---------------------------------------------------------------------------

    def _clients(self) -> list[_Client]:
        return [c for group in self._exact.values() for c in group] + list(self._globbed)

    def _register(self, client: _Client) -> None:
        exact = client.subscription.exact_entity
        if exact is None:
            self._globbed.add(client)
            self._glob_matches.clear()
        else:
            self._exact.setdefault(exact, set()).add(client)

    def _unregister(self, client: _Client) -> None:
        exact = client.subscription.exact_entity
        if exact is None:
            self._globbed.discard(client)
            self._glob_matches.clear()
        else:
            group = self._exact.get(exact, set())
            group.discard(client)
            if not group:
                self._exact.pop(exact, None)

    async def _serve_client(self, connection: ServerConnection) -> None:
        self._connections += 1
        GATEWAY_CLIENTS.set(self._connections)
        client: _Client | None = None
        sender: asyncio.Task[None] | None = None
        try:
            async for raw in connection:
                try:
                    subscription = read_subscription(raw)
                except SubscriptionError as error:
                    await connection.send(to_json({"type": "error", "message": str(error)}))
                    continue
                if sender is not None and client is not None:
                    sender.cancel()
                    self._unregister(client)
                client = _Client(
                    connection,
                    subscription,
                    ClientOutbox(self.config.queue_size, self.config.coalesce),
                )
                # Registering and reading the ring happen with no await in between, so each
                # message after this point is either replayed or queued live, exactly once.
                self._register(client)
                last_id = subscription.last_id
                gap, replay = (True, []) if last_id is None else self._ring.resume(last_id)
                sender = asyncio.create_task(
                    self._send(client, self._last_id, gap, replay, resumed=last_id is not None)
                )
        except ConnectionClosed:
            pass
        finally:
            if sender is not None:
                sender.cancel()
            if client is not None:
                self._unregister(client)
            self._connections -= 1
            GATEWAY_CLIENTS.set(self._connections)

    async def _send(
        self,
        client: _Client,
        subscribed_at: int,
        gap: bool,
        replay: list[Dispatched],
        resumed: bool,
    ) -> None:
        connection, outbox = client.connection, client.outbox
        try:
            snapshot = await self._snapshot(client.subscription) if gap else []
            await connection.send(
                to_json(
                    {
                        "type": "subscribed",
                        "id": subscribed_at,
                        "resumed": resumed and not gap,
                        "snapshot": len(snapshot),
                        "replay": len(replay),
                    }
                )
            )
            for text in snapshot:
                await connection.send(text)
            for text in self._replay_texts(client.subscription, replay):
                await connection.send(text)
            reported = 0
            while True:
                texts = await outbox.wait()
                if outbox.dropped > reported:
                    notice = {"type": "dropped", "count": outbox.dropped - reported}
                    await connection.send(to_json({**notice, "total": outbox.dropped}))
                    reported = outbox.dropped
                for text in texts:
                    await connection.send(text)
                GATEWAY_SENT.inc(len(texts))
        except ConnectionClosed:
            pass

    async def _snapshot(self, subscription: Subscription) -> list[str]:
        """The latest state for a subscription: cached predictions, then firing alerts."""
        texts: list[str] = []
        if PREDICTIONS in subscription.topics:
            exact = subscription.exact_entity
            if exact is not None:
                entities = [exact]
            else:
                known = await self._store.entities_with_predictions(limit=100_000)
                entities = fnmatch.filter(known, subscription.entity)
            entities = entities[: self.config.snapshot_limit]
            for batch in await self._store.predictions(entities):
                kept = None if batch is None else subscription.filter_predictions(batch)
                if kept is not None:
                    texts.append(to_json({"type": "snapshot", "topic": PREDICTIONS, "data": kept}))
        for alert in self._alerts.firing():
            if subscription.accepts_alert(alert):
                texts.append(to_json({"type": "snapshot", "topic": ALERTS, "data": alert}))
        return texts

    @staticmethod
    def _replay_texts(subscription: Subscription, replay: list[Dispatched]) -> Iterable[str]:
        for message in replay:
            if not subscription.matches_entity(message.record["entity"]):
                continue
            if message.topic == ALERTS:
                if subscription.accepts_alert(message.record):
                    yield to_json({"type": "alert", "id": message.id, "data": message.record})
            else:
                kept = subscription.filter_predictions(message.record)
                if kept is not None:
                    yield to_json({"type": "prediction", "id": message.id, "data": kept})

    # -- HTTP ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """What /health reports: whether the consumer polls, clients, uptime, ids, drops."""
        task = self._consumer_task
        alive = (
            task is not None
            and not task.done()
            and time.monotonic() - self._last_poll < 10 * _POLL_TIMEOUT_MS / 1000
        )
        clients = self._clients()
        return {
            "status": "ok" if alive else "degraded",
            "kafka_consumer_alive": alive,
            "topics": [self.config.predictions_topic, self.config.alerts_topic],
            "connections": self._connections,
            "clients": len(clients),
            "uptime_s": round(time.monotonic() - self._started_at, 3),
            "last_id": self._last_id,
            "firing_alerts": len(self._alerts),
            "queued": sum(len(c.outbox) for c in clients),
            "dropped": sum(c.outbox.dropped for c in clients),
        }

    def firing_alerts(self) -> list[dict[str, Any]]:
        """Alerts firing now, as the alerts topic says, oldest episode first."""
        return self._alerts.firing()

    async def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path = url.path
        address = str(connection.remote_address[0])
        arrival = self.config.gatekeeper.arrive(address)
        if not arrival.admitted:
            return await _refusal(arrival)
        if path == "/ws" or path.startswith("/api/"):
            presented = presented_key(request.headers, url.query)
            admission = self.config.gatekeeper.admit(address, presented, READ, path)
            if not admission.admitted:
                return await _refusal(admission)
        if path == "/ws":
            return None  # go on with the WebSocket upgrade
        if request.method != "GET":
            return error_response(HTTPStatus.METHOD_NOT_ALLOWED, f"{request.method} not allowed")
        if path == "/health":
            report = self.health()
            ok = report["kafka_consumer_alive"]
            return json_response(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, report)
        if path == "/metrics":
            return respond(HTTPStatus.OK, generate_latest(), CONTENT_TYPE_LATEST)
        if path == "/":
            return self._static.response("index.html")
        if path.startswith("/static/"):
            found = self._static.response(path.removeprefix("/static/"))
            return found or error_response(HTTPStatus.NOT_FOUND, f"no static file {path!r}")
        if path.startswith("/api/"):
            return await self._api(path)
        return error_response(
            HTTPStatus.NOT_FOUND,
            f"no route {path!r}; try /, /ws, /health, /metrics, "
            "/api/entities/<entity>/predictions or /api/alerts/firing",
        )

    async def _api(self, path: str) -> Response:
        if path == "/api/alerts/firing":
            return json_response(HTTPStatus.OK, self.firing_alerts())
        parts = path.split("/")  # "", "api", "entities", <entity>, "predictions"
        if len(parts) == 5 and parts[2] == "entities" and parts[4] == "predictions" and parts[3]:
            entity = unquote(parts[3])
            try:
                (cached,) = await self._store.predictions([entity])
            except RedisError as error:
                log.warning("Redis read for %r failed: %s", entity, error)
                return error_response(
                    HTTPStatus.SERVICE_UNAVAILABLE, f"the prediction cache did not answer: {error}"
                )
            if cached is None:
                return error_response(
                    HTTPStatus.NOT_FOUND,
                    f"no cached prediction for entity {entity!r}: none yet, or older than "
                    "the cache TTL (PREDICTION_CACHE_TTL)",
                )
            return json_response(HTTPStatus.OK, cached)
        return error_response(
            HTTPStatus.NOT_FOUND,
            f"no API route {path!r}; try /api/entities/<entity>/predictions or /api/alerts/firing",
        )


async def _refusal(admission: Admission) -> Response:
    await asyncio.sleep(admission.delay)
    return error_response(HTTPStatus(admission.status), admission.message, admission.headers)
