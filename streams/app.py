"""The Faust worker: telemetry in; features, predictions, alerts and routing advice out.

This module only wires Faust to the :class:`~streams.engine.Engine`, which holds the rules:
Faust consumes, the engine decides, Faust produces what the engine returns and writes its
checkpoints to the tables (and so to their changelogs).

Agents (one worker process runs them all; scale out with partitions and more workers); the
first is a task of the app, the others Faust agents on :class:`~streams.passes.PassStream`:

* ``metrics``: ``telemetry.metrics``, a fetch at a time, handed from the fetch loop past
  Faust's streams (:class:`~streams.passes.Handover`) -> ``features``, ``predictions``,
  ``alerts`` (and Redis), dead letters.
* ``agent_events``: ``telemetry.agent-events`` -> agent features, DURATION predictions and
  health alerts; each event and the agents' loads go on, re-keyed by task type, to an
  internal topic for ``routing``, and an event of a workflow also goes there keyed by its
  workflow id.
* ``routing_requests``: ``routing.requests`` -> checked, then decided at once when this
  worker holds the routing step of the task type (it reads the internal topic's partition
  the type hashes to: always, with one worker), else re-keyed by task type onto that topic.
* ``routing``: the internal topic -> the learned policy of each task type: a decision per
  request (keyed by task id) and standing advice per task type on ``routing.decisions``, and
  the pool's SCALING prediction on ``predictions``; each workflow's pattern alerts (rare
  path, loop, stall, precursor) and each kind's best-practice advice on ``alerts``.
* ``labels``: ``telemetry.labels`` (ground truth, late) -> failure-model learning and quality.
* a task following ``models.updates``: hot reload of the production XGBoost model, and the
  newest candidate scored in shadow; the production model's feature drift is watched against
  the training reference saved with it.
* timers: once a second, idle partitions' steps, entity eviction, the Redis flush and stall
  detection; every ``FORESIGHT_DRIFT_CHECK_S`` (a minute), forecast and feature drift.

State: each entity's windows and models live in the engine and are written to the
``entity-windows`` and ``entity-models`` tables as compact bytes (the windows as a snapshot
per step under the entity's key and a journal of the records since under a second key in the
same partition, written by the passes while the worker keeps up, once they have waited
``FORESIGHT_WORKER_JOURNAL_S``, and with each offset commit); a restarted worker resumes from
them. Outputs are at-least-once with stable ids (``prediction_id``, ``alert_id``).
``/health`` fails while an agent has crashed, while the worker rebalances or recovers its
tables, or while a partition is stalled; it says ``degraded`` while Kafka or Redis does not
answer (see :mod:`connectors.dependencies`), and the worker goes on by itself when they do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import faust
import faust.web.drivers
from aiokafka.errors import MessageSizeTooLargeError
from faust.exceptions import ProducerSendError
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors import dependencies
from connectors import prometheus as metrics
from connectors.dependencies import DEGRADED, Dependency, KafkaProbe, health_report
from connectors.kafka_clients import KafkaConfig
from connectors.redis_store import FeatureStore
from models.drift import FeatureDriftWatch
from models.entity import BatchModel
from models.registry import LoadedModel, RegistryError
from models.training import FAILURE_RISK
from schemas.codec import DeadLetter, Message
from streams import topics
from streams.codecs import codec_for
from streams.engine import Checkpoint, Engine, Input, Outputs, inputs_of
from streams.engine.outputs import too_large
from streams.passes import Handover, PassStream
from streams.recovery import SeekFirstTableManager
from streams.serving import serving_models
from streams.settings import Settings
from streams.state_store import EntityRocksStore, EntityTable, journal_key, table_store
from streams.transport import KafkaTransport

log = logging.getLogger(__name__)
_MIB = 1024 * 1024
_WEB_SCHEME = "foresight-web"
_TABLE_WRITES_PER_RECORD = 3  # at most: a windows snapshot or journal segment, model states


class WorkerWeb(AiohttpWeb):
    """Faust's web server with none of Faust's own pages: the worker's port serves only
    ``/health`` and ``/metrics`` (Faust's ``/router`` and ``/table`` would show the group's
    layout and the tables' contents to anyone who can reach the port)."""

    default_blueprints = ()
    production_blueprints = ()
    debug_blueprints = ()
    optional_blueprints = ()


faust.web.drivers.DRIVERS.aliases[_WEB_SCHEME] = f"{__name__}:WorkerWeb"


def worker_datadir(settings: Settings) -> Path:
    """The worker's own data folder: one per app id and per worker on a host.

    Two workers of a host differ by their web port, and a restarted worker (same port) finds
    its local state again; a new app id never reads another's.
    """
    root = Path(settings.worker_data_dir or Path(settings.stack_dir) / "worker-data")
    return root / f"{settings.worker_id}-{settings.worker_port}"


def load_batch_models(
    settings: Settings, serving: list[BatchModel], watching: FeatureDriftWatch | None
) -> tuple[list[BatchModel], FeatureDriftWatch | None]:
    """The models that serve now (:func:`streams.serving.serving_models`), and the feature
    drift watch of the production model against the reference saved with it.

    Called at start and on every ModelUpdate. A version that fails its integrity check is
    logged and skipped, and the worker keeps ``serving`` and ``watching``.
    """
    try:
        loaded = serving_models(settings)
    except (RegistryError, OSError, ValueError) as error:
        log.error(
            "model registry %s: %s; keeping the current models", settings.model_registry_url, error
        )
        return serving, watching
    champion = next((m.loaded for m in loaded if m.loaded.version.stage == "production"), None)
    watch = None if champion is None else _drift_watch(settings, champion)
    return [model.batch_model(settings.explain_min_risk) for model in loaded], watch


def _drift_watch(settings: Settings, champion: LoadedModel) -> FeatureDriftWatch | None:
    if champion.reference is None:
        log.warning(
            "%s version %s has no feature reference: its feature drift is not watched "
            "(retrain it with `foresight train` to save one)",
            FAILURE_RISK,
            champion.version.version,
        )
        return None
    return FeatureDriftWatch(
        FAILURE_RISK,
        champion.version.version,
        champion.version.content_hash,
        champion.version.features,
        champion.reference,
        champion.model.matrix,
        window=settings.drift_window,
        psi_limit=settings.drift_psi_limit,
    )


class WorkerHealth:
    """Which agents crashed and have not yet done a good unit of work since."""

    def __init__(self) -> None:
        self.crashed: dict[str, str] = {}
        self.started_s = time.time()

    @contextlib.contextmanager
    def running(self, agent: str) -> Iterator[None]:
        """One unit of an agent's work: a failure marks the agent crashed until a later unit
        succeeds (Faust restarts a crashed agent)."""
        try:
            yield
        except Exception as error:
            self.crashed[agent] = f"{type(error).__name__}: {error}"
            raise
        self.crashed.pop(agent, None)


def broker_credentials(kafka: KafkaConfig) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """The Kafka security of ``kafka`` as Faust takes it, for every client Faust makes."""
    if kafka.uses_sasl:
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password,
            mechanism=kafka.sasl_mechanism,
            ssl_context=kafka.ssl_context(),  # None: SASL_PLAINTEXT
        )
    context = kafka.ssl_context()
    return None if context is None else faust.SSLCredentials(context)


def create_app(settings: Settings) -> faust.App:
    """The Faust app of a worker, with its agents, timers and web pages."""
    datadir = worker_datadir(settings)
    datadir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    kafka = settings.kafka()
    app = faust.App(
        settings.worker_id,
        broker=f"kafka://{kafka.bootstrap_servers}",
        broker_credentials=broker_credentials(kafka),
        store=table_store(settings.worker_store),
        TableManager=SeekFirstTableManager,
        Table=EntityTable,
        Stream=PassStream,
        datadir=str(datadir),
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=True,
        web=f"{_WEB_SCHEME}://",
        web_host=settings.bind_host,
        web_bind=settings.bind_host,
        web_port=settings.worker_port,
        web_ssl_context=settings.tls().server_context(),
        consumer_max_fetch_size=4 * _MIB,
        consumer_auto_offset_reset=settings.worker_offset_reset,
        table_standby_replicas=settings.worker_standby_replicas,
        broker_session_timeout=settings.worker_session_timeout_s,
        broker_heartbeat_interval=settings.worker_session_timeout_s / 5,
        producer_linger_ms=settings.worker_linger_ms,
        producer_max_batch_size=min(settings.worker_produce_batch_bytes, settings.max_record_bytes),
        producer_max_request_size=settings.max_record_bytes,
        broker_commit_interval=settings.worker_commit_s,
        processing_guarantee="at_least_once",
        table_key_serializer="raw",
        table_value_serializer="raw",
    )
    transport = KafkaTransport(
        app,
        settings.worker_fetch_wait_ms,
        settings.worker_fetch_min_bytes,
        settings.worker_idle_fetch_wait_ms,
    )
    app.transport = transport
    # The table writes wait in Faust's producer buffer, and the delivery of the next record
    # waits (with a warning) while it holds more than this: Faust's 100 is a fraction of what
    # one pass writes (a journal segment, a snapshot or model states per entity it touched).
    app.producer.buffer.max_messages = _TABLE_WRITES_PER_RECORD * settings.worker_batch
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    metrics_in = app.topic(topics.METRICS.name, **raw)
    events_in = app.topic(topics.AGENT_EVENTS.name, **raw)
    labels_in = app.topic(topics.LABELS.name, **raw)
    requests_in = app.topic(topics.ROUTING_REQUESTS.name, **raw)
    routing_stats = app.topic(
        topics.routing_stats(settings).name,
        internal=True,
        partitions=settings.topic_partitions,
        **raw,
    )
    # use_partitioner: the changelog record of an entity goes to the partition its key
    # hashes to, the same one as its telemetry (both keyed by entity), from any context.
    table: dict[str, Any] = {"use_partitioner": True, "default": None, "key_type": bytes,
             "value_type": bytes, "partitions": settings.topic_partitions}  # fmt: skip
    windows_table = cast(EntityTable, app.Table("entity-windows", **table))
    models_table = cast(EntityTable, app.Table("entity-models", **table))

    def load_state(entity: str) -> Checkpoint:
        key = entity.encode()
        segments: list[bytes] = []
        while (segment := windows_table.get(segment_key(key, len(segments)))) is not None:
            segments.append(segment)
        return Checkpoint(entity, windows_table.get(key), tuple(segments), models_table.get(key))

    def segment_key(key: bytes, segment: int) -> bytes:
        return journal_key(key, settings.topic_partitions, segment)

    codec = codec_for(settings)
    engine = Engine(settings, load_state, codec, routing_stats.get_topic_name())
    health = WorkerHealth()
    cache = FeatureStore(settings.feature_store_url, settings.prediction_cache_ttl, codec)
    brokers = Dependency("kafka", settings.kafka_bootstrap_servers)
    redis = Dependency("redis", cache.where)
    # The newest cache entries of each entity (see FeatureStore), flushed once a second.
    latest: dict[str, dict[str, bytes]] = {"features": {}, "predictions": {}, "forecasts": {}}

    async def send(outputs: Outputs) -> None:
        """Produce the engine's records and write its checkpoints."""
        # Straight to Faust's producer (the topics exist: `foresight worker` makes them before
        # Faust starts). A Topic.send wraps each record in Faust's message objects and
        # callbacks, about four times the producer's own cost per record.
        producer = app.producer
        for record in outputs.records:
            try:
                await producer.send(record.topic, record.key, record.value, None, None, None)
            except ProducerSendError as error:
                if not isinstance(error.__cause__, MessageSizeTooLargeError):
                    raise
                size = len(record.value) + len(record.key or b"")
                refused = engine.outputs()
                refused.dead(too_large(record.cause, record.topic, size, settings.max_record_bytes))
                await send(refused)
                continue
            metrics.EVENTS_OUT.labels(record.topic).inc()
            for slot in record.cache:
                latest[slot][(record.key or b"").decode()] = record.value
        await store(outputs.checkpoints)

    async def store(checkpoints: list[Checkpoint]) -> None:
        """Write checkpoints to the tables (their changelog records go with the producer)."""
        for checkpoint in checkpoints:
            key = checkpoint.entity.encode()
            if checkpoint.windows is not None:  # before its journal (see engine.journal)
                await windows_table.put(key, checkpoint.windows)
            for segment, value in enumerate(checkpoint.journal, checkpoint.segment):
                await windows_table.put(segment_key(key, segment), value)
            for segment in range(checkpoint.drop_segments):
                await windows_table.put(segment_key(key, segment), None)
            if checkpoint.models is not None:
                await models_table.put(key, checkpoint.models)

    # Held from a pass that may step or snapshot entities to the end of its writes, so a
    # commit never finds the engine ahead of the tables: a snapshot still on its way would
    # leave the journals it replaced out of the changelog.
    stepping = asyncio.Lock()

    async def before_commit() -> None:
        # The commit's own flush waits until Faust's producer buffer is empty; passes that
        # went on writing into it kept it from emptying (commits of 2 to 7 s under a
        # backlog, when the tables' records went through it). Flushed here, with the passes
        # held, the commit's flush has little left to wait for.
        async with stepping:
            await store(engine.commit())
            await app.producer.buffer.flush()

    transport.before_commit = before_commit

    # The metrics reach their passes past Faust's streams (see streams.passes.Handover).
    metrics_passes = Handover(
        app, settings.worker_batch, settings.worker_batch_wait_s, settings.worker_pass_budget_s
    )
    transport.handovers[metrics_in.get_topic_name()] = metrics_passes
    app.topics.add(metrics_in)

    @app.task  # type: ignore[untyped-decorator]
    async def metrics_task() -> None:
        async for messages in metrics_passes.passes():
            try:
                with health.running("metrics"):
                    async with stepping:
                        started, now_s = time.perf_counter(), time.time()
                        out = engine.metrics(inputs_of(messages), now_s)
                        metrics_passes.spent(len(messages), time.perf_counter() - started)
                        # Keeping up, the worker writes the journals due, spread over its
                        # passes; behind, it leaves them to the offset commit, where an
                        # entity's passes since share one write.
                        if backlog(messages) < settings.worker_batch:
                            out.checkpoints += engine.journals_due(now_s)
                        await send(out)
            except Exception:  # as Faust's agent: the pass is acked, the next one goes on
                log.exception("metrics: a pass of %d records failed", len(messages))

    def inputs_in(events: list[Any]) -> list[Input]:
        return inputs_of([event.message for event in events])

    def backlog(messages: list[Any]) -> int:
        """Records waiting in Kafka past a pass's, in the partitions it read."""
        newest = {m.tp: m.offset for m in messages}
        highwater = app.consumer.highwater
        return sum(max(0, (highwater(tp) or 0) - offset - 1) for tp, offset in newest.items())

    @app.agent(events_in)
    async def agent_events_agent(stream: Any) -> None:
        async for events in stream.take_events(settings.worker_batch, settings.worker_batch_wait_s):
            with health.running("agent_events"):
                await send(engine.agent_events(inputs_in(events), time.time()))

    @app.agent(labels_in)
    async def labels_agent(stream: Any) -> None:
        """``telemetry.labels`` is keyed by entity like the metrics, so the worker that holds
        an entity's steps also gets its labels."""
        async for events in stream.take_events(settings.worker_batch, settings.worker_batch_wait_s):
            with health.running("labels"):
                await send(engine.labels(inputs_in(events), time.time()))

    def routes_here() -> Callable[[bytes], bool]:
        """Whether this worker holds a task type's routing step, as of now: it reads the
        partition of the internal topic the task type's key hashes to."""
        name = routing_stats.get_topic_name()
        held = {tp.partition for tp in app.consumer.assignment() if tp.topic == name}
        return lambda task_type: app.consumer.key_partition(name, task_type) in held

    @app.agent(requests_in)
    async def routing_requests_agent(stream: Any) -> None:
        """A request whose task type this worker routes is decided here, a hop sooner than
        through the internal topic (see Engine.routing_requests)."""
        async for events in stream.take_events(settings.worker_batch, settings.worker_batch_wait_s):
            with health.running("routing_requests"):
                await send(engine.routing_requests(inputs_in(events), time.time(), routes_here()))

    @app.agent(routing_stats)
    async def routing_agent(stream: Any) -> None:
        async for events in stream.take_events(settings.worker_batch, settings.worker_batch_wait_s):
            with health.running("routing"):
                await send(engine.route(inputs_in(events), time.time()))

    async def flush_cache() -> None:
        """Write the latest features and predictions to Redis. While Redis is away the
        newest entry of each entity waits for the next flush, so the cache refills as soon
        as Redis answers, with what is newest by then."""
        flushed = {slot: entries for slot, entries in latest.items() if entries}
        if not flushed:
            return
        for slot in flushed:
            latest[slot] = {}
        try:
            await cache.put_encoded(**{slot: e.items() for slot, e in flushed.items()})
        except Exception as error:  # the cache is not the source of truth: keep streaming
            redis.failed(error)
            for slot, entries in flushed.items():
                latest[slot] = {**entries, **latest[slot]}
        else:
            redis.answered()

    @app.timer(interval=settings.worker_store_flush_s)  # type: ignore[untyped-decorator]
    async def flush_stores() -> None:
        """The local state on disk up to the newest writes (see streams.state_store)."""
        for table in (windows_table, models_table):
            if isinstance(table.data, EntityRocksStore):
                table.data.flush(wait=False)

    watched = {topics.METRICS.name, topics.AGENT_EVENTS.name, topics.LABELS.name,
               topics.ROUTING_REQUESTS.name, routing_stats.get_topic_name()}  # fmt: skip

    reseeked_s = [0.0]  # when the worker last sought its partitions back (see below)

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def watch() -> None:
        """Idle watermarks and eviction, the Redis flush, and stall detection, once a second."""
        now_s = time.time()
        with health.running("timer"):
            async with stepping:
                await send(engine.tick(now_s))
        await flush_cache()
        consumer = app.consumer
        # Faust's own record of the group's committed offsets (updated as it commits and
        # seeks); it has no public accessor.
        committed: dict[Any, int | None] = getattr(consumer, "_committed_offset", {})
        stalled = []
        for tp in consumer.assignment() if consumer else set():
            if tp.topic not in watched:  # changelogs are Faust's to read, in recovery
                continue
            progress = engine.progress[(tp.topic, tp.partition)]
            lag = progress.watch(
                consumer.highwater(tp), now_s, settings.stall_timeout_s, committed.get(tp)
            )
            if lag is not None:
                metrics.CONSUMER_LAG.labels(tp.topic, tp.partition).set(lag)
            metrics.PARTITION_STALLED.labels(tp.topic, tp.partition).set(float(progress.stalled))
            if progress.stalled:
                stalled.append(tp)
        # Records Faust fetched and then dropped in a rebalance never reach the worker, and
        # are never fetched again: the consumer's position is past them (seen as a partition
        # that stayed behind, committed offset and all, with no error). Seeking back to the
        # committed offsets fetches them again; the engine skips what it already took.
        if (
            stalled
            and not app.rebalancing
            and not app.in_recovery
            and now_s - reseeked_s[0] > settings.stall_timeout_s
        ):
            reseeked_s[0] = now_s
            log.warning(
                "%s: records wait and none reached the worker in %.0f s: seeking the "
                "partitions back to their committed offsets",
                ", ".join(f"{tp.topic}:{tp.partition}" for tp in stalled),
                settings.stall_timeout_s,
            )
            for tp in stalled:
                metrics.STALL_RESEEKS.labels(tp.topic, tp.partition).inc()
            await consumer.perform_seek()

    async def reload_models() -> None:
        engine.serve(
            *await asyncio.to_thread(
                load_batch_models, settings, engine.batch_models, engine.feature_drift
            )
        )
        served = [f"{m.name} v{m.version}{' (shadow)' * m.shadow}" for m in engine.batch_models]
        log.info("batch models: %s", served)

    @app.task  # type: ignore[untyped-decorator]
    async def follow_model_updates() -> None:
        """Hot reload: every worker follows ``models.updates`` itself (no consumer group), so
        each picks up a promotion without a restart; scoring goes on with the old models
        until the new ones are loaded, then switches in one assignment."""
        await reload_models()
        consumer = kafka.consumer(
            topics.MODEL_UPDATES.name,
            group_id=None,
            auto_offset_reset="latest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            async for message in consumer:
                coordinates = (message.topic, message.partition, message.offset)
                update = codec.decode_message(
                    Message(*coordinates, message.key, message.value), "model_update"
                )
                if isinstance(update, DeadLetter):
                    refused = engine.outputs()
                    refused.dead(update)
                    await send(refused)
                    continue
                if update.get("model") == FAILURE_RISK:
                    log.info(
                        "model update: %s v%s %s",
                        update["model"],
                        update["version"],
                        update["action"],
                    )
                    await reload_models()
        finally:
            await consumer.stop()

    @app.task  # type: ignore[untyped-decorator]
    async def watch_dependencies() -> None:
        """Kafka and Redis asked every few seconds, so /health knows even when idle."""
        probe = KafkaProbe(settings.kafka())
        try:
            await dependencies.watch({brokers: probe, redis: cache.ping})
        finally:
            await probe.close()

    @app.timer(interval=settings.drift_check_s)  # type: ignore[untyped-decorator]
    async def watch_drift() -> None:
        """Every FORESIGHT_DRIFT_CHECK_S: have the forecasters' error or the production
        model's features drifted? Raise (or clear) the alerts."""
        await send(engine.watch_drift(int(time.time() * 1000)))

    @app.page("/health")
    async def health_page(web: Any, request: Any) -> Any:
        stalled = engine.stalled()
        problems = {
            "crashed": health.crashed,
            "rebalancing": bool(app.rebalancing),
            "recovering": bool(getattr(app, "in_recovery", False)),
            "stalled": bool(stalled),
        }
        services = health_report(brokers, redis)
        status = next((name for name, bad in problems.items() if bad), services["status"])
        body = {
            "status": status,
            "down": services["down"],
            "crashed_agents": health.crashed,
            "stalled_partitions": stalled,
            **engine.health_fields(),
            "uptime_s": round(time.time() - health.started_s, 1),
        }
        return web.json(body, status=200 if status in ("ok", DEGRADED) else 503)

    @app.page("/metrics")
    async def prometheus_metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget(sender: Any, *args: Any, **kwargs: Any) -> None:
        """Entities of partitions we no longer own are another worker's now."""
        revoked = args[0] if args else kwargs.get("revoked", set())
        for tp in revoked:
            for gauge in (metrics.CONSUMER_LAG, metrics.PARTITION_STALLED):
                with contextlib.suppress(KeyError):
                    gauge.remove(tp.topic, str(tp.partition))
        engine.revoked((tp.topic, tp.partition) for tp in revoked)

    app.foresight_engine = engine  # type: ignore[attr-defined]
    return app
