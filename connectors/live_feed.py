"""The live feed: predictions and alerts from Kafka, fanned out to subscribers as they come.

One :class:`LiveFeed` serves every live client of a process, whatever carries it: the
gateway's WebSocket clients (:mod:`connectors.gateway`) and the intelligence API's GraphQL
subscriptions. A subscriber gives a :class:`~connectors.gateway_filters.Subscription` and
gets a :class:`Subscriber`: its outbox of encoded messages (JSON text, the gateway's
protocol), and what it missed since a ``last_id`` it names.

The Kafka consumer comes from the :class:`~connectors.kafka_clients.KafkaConfig` (so it uses
the brokers' TLS and SASL like every client) and has no consumer group: every process reads
every partition, because every process serves its own clients. Predictions are read from the end
(a live feed); alerts are read from the beginning once at start, without dispatching, to
rebuild which alerts are firing. The alerts topic is at-least-once, so it is folded with
:class:`~models.alerts.FiringAlerts`: a state change already read (the same episode and
status, re-sent) is neither relayed nor counted again. Ids are a sequence per process that
starts at its start time in microseconds, so a restarted process's ids are above any its
predecessor gave out: a client resumes against the process it was connected to, and after a
restart it is told of the gap and gets a snapshot.

The consumer loop never awaits a subscriber: it offers each message to each matching
subscriber's :class:`~connectors.gateway_feed.ClientOutbox` and moves on; each subscriber's
own task drains its outbox, so a slow one only loses (coalesced or oldest) messages of its
own and is told how many.

The feed watches Kafka and Redis (:mod:`connectors.dependencies`): its :meth:`LiveFeed.health`
says ``"degraded"`` and what is down. Without Redis a new subscription's snapshot has no
cached predictions and says so first (``{"type": "snapshot_degraded", "message": ...}``); the
firing alerts and the live messages do not need Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from redis.exceptions import RedisError

from connectors.dependencies import Check, Dependency, KafkaProbe, health_report, watch
from connectors.gateway_feed import ClientOutbox, Dispatched, ReplayBuffer
from connectors.gateway_filters import ALERTS, PREDICTIONS, Subscription
from connectors.json_text import dumps
from connectors.kafka_clients import KafkaConfig
from connectors.prometheus import (
    GATEWAY_DROPPED,
    GATEWAY_QUEUE_DEPTH,
    GATEWAY_REPEATED_ALERTS,
    GATEWAY_UNDECODABLE,
)
from connectors.redis_store import FeatureStore
from models.alerts import FiringAlerts
from schemas.codec import Codec, DeadLetter, Message
from schemas.predictions import as_rows

log = logging.getLogger(__name__)

_POLL_TIMEOUT_MS = 500
_GLOB_CACHE_LIMIT = 100_000


def to_json(payload: Any) -> str:
    """Compact JSON that browsers can parse: NaN and infinities become ``null``."""
    return dumps(payload).decode()


@dataclass(frozen=True)
class FeedConfig:
    """Where the feed reads and how it buffers.

    Parameters
    ----------
    kafka
        The brokers and how to reach them (``KAFKA_BOOTSTRAP_SERVERS`` and the security
        settings).
    predictions_topic, alerts_topic
        The topics to relay (default ``predictions`` and ``alerts``).
    queue_size
        Messages held per subscriber before dropping (``FORESIGHT_GATEWAY_QUEUE``, 1000).
    coalesce
        Let a newer prediction of an entity replace its unsent older one (default ``True``).
    replay_size
        Messages kept for resuming subscribers (default 10,000).
    max_poll_records
        Records handled per poll before the subscribers get a turn (default 500).
    snapshot_limit
        Most cached predictions sent as a snapshot on subscribe (default 1,000).
    """

    kafka: KafkaConfig
    predictions_topic: str = "predictions"
    alerts_topic: str = "alerts"
    queue_size: int = 1000
    coalesce: bool = True
    replay_size: int = 10_000
    max_poll_records: int = 500
    snapshot_limit: int = 1000


class FeedStartError(RuntimeError):
    """The feed could not start (a topic is missing, Kafka does not answer)."""


@dataclass(eq=False)
class Subscriber:
    """One subscription to the feed: its filter and outbox, the newest id when it subscribed,
    and, when it asked to resume, whether messages were lost (``gap``) and what it missed."""

    subscription: Subscription
    outbox: ClientOutbox
    subscribed_at: int
    gap: bool = True
    replay: list[Dispatched] = field(default_factory=list)


class LiveFeed:
    """Relays the predictions and alerts topics to subscribers (see the module docstring).

    Use :meth:`start` and :meth:`stop`; :meth:`subscribe` and :meth:`unsubscribe` around a
    subscriber's life.
    """

    def __init__(self, config: FeedConfig, store: FeatureStore, codec: Codec | None = None):
        self.config = config
        self._store = store
        self._codec = codec or Codec()
        # Above every id of an earlier process while it relayed under a million messages/s.
        self._last_id = time.time_ns() // 1000
        self._ring = ReplayBuffer(config.replay_size, origin=self._last_id)
        self._alerts = FiringAlerts()
        self._exact: dict[str, set[Subscriber]] = {}
        self._globbed: set[Subscriber] = set()
        self._glob_matches: dict[str, list[Subscriber]] = {}
        self._history_end: dict[TopicPartition, int] = {}
        self._started_at = time.monotonic()
        self._last_poll = 0.0
        self._consumer: AIOKafkaConsumer | None = None
        self._consumer_task: asyncio.Task[None] | None = None
        self.kafka = Dependency("kafka", config.kafka.bootstrap_servers)
        self.redis = Dependency("redis", store.where)
        self._probe = KafkaProbe(config.kafka)
        self._watch: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start consuming; returns once the alert history is being read and predictions are
        read from their end. Raises :class:`FeedStartError`."""
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
            raise FeedStartError(self.config.kafka.failure(error)) from error
        self._consumer = consumer
        existing = await consumer.topics()
        missing = [t for t in topics if t not in existing]
        if missing:
            await consumer.stop()
            raise FeedStartError(
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
                raise FeedStartError(f"no partitions of {topics} were assigned within 30 s")
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
        self._consumer_task = asyncio.create_task(self._consume(consumer), name="live-feed")
        checks: dict[Dependency, Check] = {self.kafka: self._probe, self.redis: self._store.ping}
        self._watch = asyncio.create_task(watch(checks), name="live-feed-dependencies")

    async def stop(self) -> None:
        for task in (self._consumer_task, self._watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._consumer_task = self._watch = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        await self._probe.close()

    # -- Kafka -----------------------------------------------------------------------------

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
                GATEWAY_QUEUE_DEPTH.set(sum(len(c.outbox) for c in self.subscribers()))
                await asyncio.sleep(0)  # let the subscribers drain before the next poll

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
                return  # history read at start: state only, subscribers never saw it live
            if news:
                self.dispatch_alert(decoded)
            else:
                GATEWAY_REPEATED_ALERTS.inc()
        else:  # subscribers get one record per prediction, whichever version wrote the batch
            self.dispatch_predictions(as_rows(decoded))

    # -- fan-out ---------------------------------------------------------------------------

    def _next_id(self, topic: str, record: dict[str, Any]) -> int:
        self._last_id += 1
        self._ring.append(Dispatched(self._last_id, topic, record))
        return self._last_id

    def _candidates(self, entity: str) -> Iterable[Subscriber]:
        """Subscribers whose entity glob matches ``entity``: an exact-name index, plus a cache
        of glob matches per entity (rebuilt when glob subscribers change), so a record costs a
        dict lookup rather than one ``fnmatch`` per subscriber."""
        matches = self._glob_matches.get(entity)
        if matches is None:
            if len(self._glob_matches) >= _GLOB_CACHE_LIMIT:
                self._glob_matches.clear()
            matches = [c for c in self._globbed if c.subscription.matches_entity(entity)]
            self._glob_matches[entity] = matches
        exact = self._exact.get(entity)
        return [*exact, *matches] if exact else matches

    @staticmethod
    def _offer(subscriber: Subscriber, key: tuple[str, Any], text: str) -> None:
        if subscriber.outbox.offer(key, text):
            GATEWAY_DROPPED.inc()

    def dispatch_predictions(self, batch: dict[str, Any]) -> None:
        """Give a PredictionBatch an id and queue it, filtered, for every matching subscriber."""
        message_id = self._next_id(PREDICTIONS, batch)
        entity = batch["entity"]
        encoded: dict[tuple[Any, ...], str | None] = {}
        for subscriber in self._candidates(entity):
            subscription = subscriber.subscription
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
                self._offer(subscriber, ("prediction", entity), text)

    def dispatch_alert(self, alert: dict[str, Any]) -> None:
        """Give an Alert an id and queue it for every matching subscriber (never coalesced)."""
        message_id = self._next_id(ALERTS, alert)
        text: str | None = None
        for subscriber in self._candidates(alert["entity"]):
            if subscriber.subscription.accepts_alert(alert):
                if text is None:
                    text = to_json({"type": "alert", "id": message_id, "data": alert})
                self._offer(subscriber, ("alert", message_id), text)

    # -- subscribers -----------------------------------------------------------------------

    def subscribers(self) -> list[Subscriber]:
        return [s for group in self._exact.values() for s in group] + list(self._globbed)

    def subscribe(self, subscription: Subscription) -> Subscriber:
        """Register a subscriber; from now on every matching message is queued for it.

        With ``subscription.last_id``, its ``replay`` holds what it missed that the ring
        still has, and ``gap`` says whether that is less than all it missed.
        """
        subscriber = Subscriber(
            subscription,
            ClientOutbox(self.config.queue_size, self.config.coalesce),
            subscribed_at=self._last_id,
        )
        # Registering and reading the ring happen with no await in between, so each message
        # after this point is either replayed or queued live, exactly once.
        exact = subscription.exact_entity
        if exact is None:
            self._globbed.add(subscriber)
            self._glob_matches.clear()
        else:
            self._exact.setdefault(exact, set()).add(subscriber)
        if subscription.last_id is not None:
            subscriber.gap, subscriber.replay = self._ring.resume(subscription.last_id)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        exact = subscriber.subscription.exact_entity
        if exact is None:
            self._globbed.discard(subscriber)
            self._glob_matches.clear()
        else:
            group = self._exact.get(exact, set())
            group.discard(subscriber)
            if not group:
                self._exact.pop(exact, None)

    async def opening(self, subscriber: Subscriber) -> list[str]:
        """What a subscriber gets before its live messages: ``{"type": "subscribed"}``, then
        the latest state matching its filter when it did not resume (or could not), then what
        it missed."""
        snapshot = await self.snapshot(subscriber.subscription) if subscriber.gap else []
        resumed = subscriber.subscription.last_id is not None and not subscriber.gap
        subscribed = {
            "type": "subscribed",
            "id": subscriber.subscribed_at,
            "resumed": resumed,
            "snapshot": len(snapshot),
            "replay": len(subscriber.replay),
        }
        replayed = self._replay_texts(subscriber.subscription, subscriber.replay)
        return [to_json(subscribed), *snapshot, *replayed]

    async def snapshot(self, subscription: Subscription) -> list[str]:
        """The latest state for a subscription: cached predictions, then firing alerts.

        Without Redis the snapshot has no predictions, and says so in a ``snapshot_degraded``
        message first; the firing alerts and the live feed do not need Redis.
        """
        texts: list[str] = []
        if PREDICTIONS in subscription.topics:
            try:
                texts += await self._cached_predictions(subscription)
            except RedisError as error:
                self.redis.failed(error)
                message = (
                    f"the prediction cache (Redis at {self.redis.where}) did not answer, so "
                    "this snapshot has no predictions; live predictions follow, and a new "
                    f"subscribe message gets the cached ones once Redis is back ({error})"
                )
                texts.append(to_json({"type": "snapshot_degraded", "message": message}))
        for alert in self._alerts.firing():
            if subscription.accepts_alert(alert):
                texts.append(to_json({"type": "snapshot", "topic": ALERTS, "data": alert}))
        return texts

    async def _cached_predictions(self, subscription: Subscription) -> list[str]:
        exact = subscription.exact_entity
        if exact is not None:
            entities = [exact]
        else:
            known = await self._store.entities_with_predictions(limit=100_000)
            entities = fnmatch.filter(known, subscription.entity)
        texts = []
        for batch in await self._store.predictions(entities[: self.config.snapshot_limit]):
            kept = None if batch is None else subscription.filter_predictions(batch)
            if kept is not None:
                texts.append(to_json({"type": "snapshot", "topic": PREDICTIONS, "data": kept}))
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

    # -- state -----------------------------------------------------------------------------

    @property
    def last_id(self) -> int:
        return self._last_id

    def consumer_alive(self) -> bool:
        """Whether the consumer task runs and polled lately."""
        task = self._consumer_task
        return (
            task is not None
            and not task.done()
            and time.monotonic() - self._last_poll < 10 * _POLL_TIMEOUT_MS / 1000
        )

    def health(self) -> dict[str, Any]:
        """Whether the consumer polls, which services are down, subscribers, uptime, ids,
        queued and dropped. ``status`` is ``ok``, ``degraded`` (Kafka or Redis does not
        answer: the feed goes on and picks up when they are back) or ``consumer_stopped``."""
        alive = self.consumer_alive()
        subscribers = self.subscribers()
        dependencies = health_report(self.kafka, self.redis)
        return {
            "status": dependencies["status"] if alive else "consumer_stopped",
            "down": dependencies["down"],
            "kafka_consumer_alive": alive,
            "topics": [self.config.predictions_topic, self.config.alerts_topic],
            "clients": len(subscribers),
            "uptime_s": round(time.monotonic() - self._started_at, 3),
            "last_id": self._last_id,
            "firing_alerts": len(self._alerts),
            "queued": sum(len(s.outbox) for s in subscribers),
            "dropped": sum(s.outbox.dropped for s in subscribers),
        }

    def firing_alerts(self) -> list[dict[str, Any]]:
        """Alerts firing now, as the alerts topic says, oldest episode first."""
        return self._alerts.firing()
