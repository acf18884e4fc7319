"""The quality processor: code-quality snapshots in; forecasts and debt alerts out.

``foresight quality run`` consumes ``telemetry.code-quality`` (keyed by repository) in its own
consumer group, ``<FORESIGHT_WORKER_ID>-quality``. Per repository a
:class:`~models.quality.RepositoryQuality` learns each snapshot and its outputs go where the
worker's go, in the same records, so every reader takes them as they are:

* a PredictionBatch on ``predictions`` (entity ``repo:<repository>``, kind FORECAST, metrics
  ``quality.<metric>``, horizons in seconds at the repository's commit rate), also cached in
  Redis like the worker's;
* ``complexity_trend`` and ``test_ratio_falling`` alerts on ``alerts`` (and their JSON twins
  for the alerting tools);
* a dead letter on ``telemetry.deadletter`` for a snapshot that cannot be decoded or breaks a
  rule of :mod:`schemas.quality`, with the reason.

Why a process of its own, not the worker: the worker's agents share one event loop and its
engine's hot path (a metric step a second per entity); quality arrives once per commit, with
bursts of thousands when a history is backfilled, and its state has another shape (a
repository's series of commits, not windows of samples). Here neither can delay the other,
and the worker's code and changelogs are untouched.

State: none but what the topic holds. When partitions are assigned, the processor reads them
from their beginning and learns every snapshot before the group's committed offset without
producing anything again (the repository's forecaster, recent commits and alert states come
back as they were); from that offset on it produces, then commits. The topic keeps
``FORESIGHT_QUALITY_RETENTION_DAYS`` (ten years by default): a commit is one small record.
Outputs are at-least-once, with stable ids (``prediction_id`` names the commit).

``/health`` (:meth:`QualityRunner.health`) says where it is: ``starting`` until the group
gives it partitions, ``rebalancing`` while the group moves them, ``crashed`` once the consumer
has failed (503 for all three; a restart cures them), else ``ok`` or ``degraded`` (Kafka or
Redis does not answer; 200), with each partition's last offset consumed, lag, and the offset
its replay runs to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)

from connectors import prometheus as metrics
from connectors.dependencies import Check, Dependency, KafkaProbe, health_report, watching
from connectors.redis_store import FeatureStore
from models.quality import QualityConfig, RepositoryQuality
from schemas.codec import Codec, DeadLetter, Message
from schemas.quality import snapshot_problems
from streams import topics
from streams.engine import Input, Outputs
from streams.engine.outputs import rejected
from streams.settings import Settings

log = logging.getLogger(__name__)
_POLL_MS = 500


def quality_config(settings: Settings) -> QualityConfig:
    """The forecasts' and alerts' configuration the settings describe."""
    return QualityConfig(
        max_complexity=settings.quality_max_complexity,
        horizon_days=settings.quality_horizon_days,
        falling_commits=settings.quality_falling_commits,
    )


def quality_group(settings: Settings) -> str:
    """The processor's consumer group."""
    return f"{settings.worker_id}-quality"


class QualityProcessor:
    """The processor's rules without Kafka: consumed records and a clock in, outputs out."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self.settings = settings
        self.codec = codec
        self.config = quality_config(settings)
        self.repositories: dict[str, RepositoryQuality] = {}
        self.partition_of: dict[str, int] = {}
        self.twins = topics.json_twins(settings)

    def outputs(self) -> Outputs:
        return Outputs(self.codec, self.settings.max_record_bytes, self.twins)

    def process(self, inputs: Iterable[Input], now_s: float) -> Outputs:
        """Snapshots consumed for the first time: forecasts, alerts and dead letters."""
        out = self.outputs()
        for item in inputs:
            metrics.EVENTS_IN.labels(item.message.topic).inc()
            try:
                self._snapshot(item, now_s, out)
            except Exception as error:  # no input may stop the processor
                log.exception("failed on %s@%d", item.message.topic, item.message.offset)
                reason = f"{type(error).__name__}: {error}"
                out.dead(rejected(item.message, "internal_error", reason))
        return out

    def replay(self, inputs: Iterable[Input], now_s: float) -> None:
        """Snapshots already processed before a restart or a rebalance: learned again, their
        outputs (already produced once) dropped."""
        for item in inputs:
            try:
                self._snapshot(item, now_s, None)
            except Exception:
                log.exception("failed to replay %s@%d", item.message.topic, item.message.offset)

    def _snapshot(self, item: Input, now_s: float, out: Outputs | None) -> None:
        message = item.message
        record = self.codec.decode_message(message, topics.QUALITY.schema)
        if isinstance(record, DeadLetter):
            if out is not None:
                out.dead(record)
            return
        max_future_ms = int(self.settings.max_future_s * 1000)
        problems = snapshot_problems(record, int(now_s * 1000), max_future_ms)
        if problems:
            if out is not None:
                first = problems[0]
                reason = f"{first.field}: {first.reason}" if first.field else first.reason
                out.dead(rejected(message, first.kind, reason))
            return
        repository = self._repository(record["repository"], message, out)
        if repository is None:
            return
        batch, alerts = repository.observe(record)
        if out is None:
            return
        if batch is not None:
            batch["emitted_at"] = int(now_s * 1000)
            out.emit(
                topics.PREDICTIONS, batch["entity"], batch, message, ("predictions", "forecasts")
            )
        for alert in alerts:
            metrics.ALERTS.labels(alert["rule"], alert["status"]).inc()
            out.emit(topics.ALERTS, alert["dedup_key"], alert, message)

    def _repository(
        self, name: str, message: Message, out: Outputs | None
    ) -> RepositoryQuality | None:
        """The repository's state: held, or new; None past the limit (dead-lettered)."""
        repository = self.repositories.get(name)
        if repository is not None:
            return repository
        most = self.settings.quality_max_repositories
        if len(self.repositories) >= most:
            if out is not None:
                reason = (
                    f"this quality processor holds {most:,} repositories, its limit "
                    "(FORESIGHT_QUALITY_MAX_REPOSITORIES): add partitions and processes, or "
                    "raise the limit"
                )
                out.dead(rejected(message, "entity_limit", reason))
            return None
        repository = self.repositories[name] = RepositoryQuality(name, self.config)
        self.partition_of[name] = message.partition
        return repository

    def revoked(self, partitions: Iterable[int]) -> None:
        """Partitions another process owns now: forget their repositories."""
        lost = set(partitions)
        for name in [n for n, p in self.partition_of.items() if p in lost]:
            del self.repositories[name], self.partition_of[name]


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


@dataclass
class Progress:
    """Where the processor is, for ``/health`` and ``/metrics``."""

    assigned: set[TopicPartition] | None = None
    """The partitions the group gave it; None until it first did."""
    rebalancing: bool = False
    replay_until: dict[TopicPartition, int] = field(default_factory=dict)
    """Per partition, the group's committed offset: what precedes it is replayed."""
    consumed: dict[TopicPartition, int] = field(default_factory=dict)
    """Per partition, the last offset consumed (replayed or processed)."""
    lag: dict[TopicPartition, int] = field(default_factory=dict)
    crashed: str = ""
    """Why the consumer failed; empty while it has not."""

    def status(self) -> str | None:
        """``starting``, ``rebalancing`` or ``crashed`` (it cannot serve), else None."""
        if self.crashed:
            return "crashed"
        if self.assigned is None:
            return "starting"
        return "rebalancing" if self.rebalancing else None

    def measure(self, consumer: AIOKafkaConsumer) -> None:
        """Each partition's lag, from the end of the partition its last fetch saw."""
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue
            lag = max(end - self.consumed.get(tp, end - 1) - 1, 0)
            self.lag[tp] = lag
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)

    def revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.rebalancing = True
        for tp in revoked:
            for held in (self.replay_until, self.consumed, self.lag):
                held.pop(tp, None)
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))

    def report(self) -> dict[str, Any]:
        assigned = sorted(self.assigned or ())
        return {
            "partitions": len(assigned),
            "consumed": {_name(tp): self.consumed.get(tp, -1) for tp in assigned},
            "lag": {_name(tp): self.lag[tp] for tp in assigned if tp in self.lag},
            "replaying": {
                _name(tp): until
                for tp, until in sorted(self.replay_until.items())
                if self.consumed.get(tp, -1) + 1 < until
            },
        }


@dataclass
class _Rebuild(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped aiokafka
    """Assigned partitions are read from their beginning; what precedes the group's committed
    offset is replayed, not produced again."""

    processor: QualityProcessor
    consumer: AIOKafkaConsumer
    progress: Progress

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.processor.revoked(tp.partition for tp in revoked)
        self.progress.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        replay_until = self.progress.replay_until
        for tp in assigned:
            replay_until[tp] = await self.consumer.committed(tp) or 0
        if assigned:
            await self.consumer.seek_to_beginning(*assigned)
        self.progress.assigned, self.progress.rebalancing = set(assigned), False
        log.info("quality: assigned %s; replaying up to %s", sorted(assigned), replay_until)


def _inputs(messages: Iterable[ConsumerRecord[bytes, bytes]]) -> list[Input]:
    return [
        Input(Message(m.topic, m.partition, m.offset, m.key, m.value), m.timestamp)
        for m in messages
    ]


class QualityRunner:
    """Consumes ``topic`` (``telemetry.code-quality``) and produces what the processor
    returns."""

    def __init__(self, settings: Settings, codec: Codec, topic: str = topics.QUALITY.name) -> None:
        self.settings = settings
        self.topic = topic
        self.processor = QualityProcessor(settings, codec)
        self.cache = FeatureStore(settings.feature_store_url, settings.prediction_cache_ttl, codec)
        self.produced = 0
        self.progress = Progress()
        self.kafka = Dependency("kafka", settings.kafka().bootstrap_servers)
        self.redis = Dependency("redis", self.cache.where)
        self.started_s = time.time()

    def health(self) -> dict[str, Any]:
        """The ``/health`` report: ``status`` (see the module), the services down, the
        consumer's failure, and per partition the last offset consumed (-1: none yet), the
        lag and, while it replays, the offset it replays to."""
        services = health_report(self.kafka, self.redis)
        return {
            "status": self.progress.status() or services["status"],
            "down": services["down"],
            "crashed": self.progress.crashed or None,
            "topic": self.topic,
            "group": quality_group(self.settings),
            **self.progress.report(),
            "repositories": len(self.processor.repositories),
            "produced": self.produced,
            "uptime_s": round(time.time() - self.started_s, 1),
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set. Raises KafkaError when Kafka is unavailable at the
        start; when the consumer fails later, ``health()`` says ``crashed``, then it raises."""
        kafka = self.settings.kafka()
        consumer = kafka.consumer(
            group_id=quality_group(self.settings),
            client_id=quality_group(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        consumer.subscribe([self.topic], listener=_Rebuild(self.processor, consumer, self.progress))
        producer = kafka.producer(
            acks="all", linger_ms=5, max_request_size=self.settings.max_record_bytes
        )
        probe = KafkaProbe(kafka)
        checks: dict[Dependency, Check] = {self.kafka: probe, self.redis: self.cache.ping}
        try:
            await producer.start()
            await consumer.start()
            async with watching(checks):
                await self._consume(stop, consumer, producer)
        finally:  # each client closes, started or not, so none is left to the collector
            await consumer.stop()
            await producer.stop()
            await probe.close()
            await self.cache.close()

    async def _consume(
        self, stop: asyncio.Event, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer
    ) -> None:
        try:
            while not stop.is_set():
                fetched = await consumer.getmany(timeout_ms=_POLL_MS)
                for tp, messages in fetched.items():
                    await self._handle(tp, messages, producer, consumer)
                    self.progress.consumed[tp] = messages[-1].offset
                self.progress.measure(consumer)
        except Exception as error:
            self.progress.crashed = f"{type(error).__name__}: {error}"
            log.exception("quality: the consumer of %s failed", self.topic)
            raise

    async def _handle(
        self,
        tp: TopicPartition,
        messages: list[ConsumerRecord[bytes, bytes]],
        producer: AIOKafkaProducer,
        consumer: AIOKafkaConsumer,
    ) -> None:
        until = self.progress.replay_until.get(tp, 0)
        inputs = _inputs(messages)
        now_s = time.time()
        self.processor.replay([i for i in inputs if i.message.offset < until], now_s)
        live = [i for i in inputs if i.message.offset >= until]
        if not live:
            return
        out = self.processor.process(live, now_s)
        sent = [await producer.send(r.topic, r.value, key=r.key) for r in out.records]
        await asyncio.gather(*sent)
        for record in out.records:
            metrics.EVENTS_OUT.labels(record.topic).inc()
        self.produced += len(out.records)
        await self._cache(out)
        await consumer.commit({tp: live[-1].message.offset + 1})

    async def _cache(self, out: Outputs) -> None:
        """The newest PredictionBatch of each repository, in Redis like the worker's; a Redis
        outage costs the cache, never the stream."""
        newest = {(r.key or b"").decode(): r.value for r in out.records if r.cache}
        if not newest:
            return
        try:
            await self.cache.put_encoded(predictions=newest.items(), forecasts=newest.items())
        except Exception as error:  # the cache is not the source of truth
            self.redis.failed(error)
        else:
            self.redis.answered()
