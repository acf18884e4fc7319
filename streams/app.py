"""The Faust worker: telemetry in; features, predictions, alerts and routing advice out.

Agents (one worker process runs them all; scale out with partitions and more workers):

* ``metrics``: ``telemetry.metrics`` -> decode, validate (dead-letter the invalid), add to the
  entity's rolling windows, and when a window step ends, score the models and evaluate the
  alert rules -> ``features``, ``predictions``, ``alerts`` (and Redis).
* ``agent_events``: ``telemetry.agent-events`` -> per agent x task type statistics -> agent
  features and DURATION predictions, and the statistics re-keyed by task type onto an internal
  topic for ``routing``, which advises the best agent per task type -> ``routing.decisions``.
* ``labels``: ``telemetry.labels`` (ground truth, late) -> a FAILURE resolves the failure-risk
  steps the entity logged before it: the online failure model learns from them, and every
  failure-risk model's precision and recall are exported.
* a task following ``models.updates``: hot reload of the production XGBoost model, and the
  newest candidate scored in shadow.
* a timer that watches the forecasters' scaled error for drift (Page-Hinkley per entity) and
  raises a ``model_drift`` alert recommending a retrain, and exports the error as MAE.
* a timer that advances idle partitions' watermarks on wall time (so windows close without new
  data), flushes the Redis cache, and watches every owned partition for stalls (``/health``).

State: each entity's :class:`~models.entity.EntityPipeline` lives in memory and is written to
the ``entity-state`` table (and so its changelog) once per ``checkpoint_s`` of event time, as
compact bytes. A restarted worker resumes from it. Outputs are at-least-once with stable ids
(``prediction_id``, ``alert_id``) so sinks can deduplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors import prometheus as metrics
from connectors.alert_payloads import payloads_for
from connectors.redis_store import FeatureStore
from models.agents import AgentTaskStats, AgentTracker, advise
from models.alerts import AlertState
from models.drift import ErrorDriftWatch, drift_alert
from models.entity import BatchModel, EntityPipeline, ModelSet, PipelineConfig, step_many
from models.failure_outcomes import OutcomeTracker, feature_vector
from models.registry import ModelRegistry, RegistryError
from models.training import FAILURE_RISK
from schemas.codec import DeadLetter, Message
from streams import topics
from streams.codecs import codec_for
from streams.settings import Settings
from streams.validation import Limits, Rejection, check_agent_event, check_metric_batch

log = logging.getLogger(__name__)
Record = dict[str, Any]
_MIB = 1024 * 1024
ONLINE_FAILURE_MODEL = "failure_risk_online"


@dataclass
class PartitionProgress:
    """What the worker knows of one owned partition: for watermarks and stall detection."""

    max_event_ms: int = 0
    last_arrival_s: float = 0.0  # wall time of the newest record
    last_offset: int = -1
    progressed_s: float = field(default_factory=time.time)
    stalled: bool = False

    def watermark(self, now_s: float, idle_timeout_s: float) -> int:
        """Event-time watermark; follows wall time once the partition has been idle."""
        idle = now_s - self.last_arrival_s
        if self.max_event_ms and idle >= idle_timeout_s:
            return self.max_event_ms + int(idle * 1000)
        return self.max_event_ms


class Worker:
    """Everything one worker process holds between records (no Faust objects inside)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.codec = codec_for(settings)
        self.models = ModelSet(
            PipelineConfig(
                step_s=settings.step_s,
                max_metrics=settings.max_metrics_per_entity,
                anomaly_warmup_steps=settings.anomaly_warmup_steps,
                failure_horizon_s=settings.failure_horizon_s,
            )
        )
        self.limits = Limits(
            max_future_ms=int(settings.max_future_s * 1000),
            max_age_ms=settings.topic_retention_hours * 3_600_000,
        )
        self.entities: dict[str, EntityPipeline] = {}
        self.entity_partition: dict[str, int] = {}
        self.checkpointed: dict[str, int] = {}
        self.models_checkpointed: dict[str, int] = {}
        self.progress: dict[tuple[str, int], PartitionProgress] = defaultdict(PartitionProgress)
        # (entity, encoded record) of the newest outputs, flushed to Redis once a second
        self.cache_features: dict[str, bytes] = {}
        self.cache_predictions: dict[str, bytes] = {}
        self.agents = AgentTracker()
        self.batch_models: list[BatchModel] = []
        self.outcomes = OutcomeTracker(settings.failure_horizon_s)
        self.forecast_drift = ErrorDriftWatch()
        self.forecast_drift_alert = AlertState()
        self.routing: dict[str, dict[str, AgentTaskStats]] = defaultdict(dict)
        self.started_s = time.time()
        self.store = FeatureStore(
            settings.feature_store_url, settings.prediction_cache_ttl, self.codec
        )

    def see(self, message: Any) -> None:
        """Record that a message of a partition was consumed now."""
        progress = self.progress[(message.topic, message.partition)]
        now = time.time()
        progress.last_arrival_s = now
        progress.last_offset = message.offset
        progress.progressed_s = now

    def load_batch_models(self) -> list[BatchModel]:
        """The production failure-risk model, and the newest candidate in shadow.

        Called at start and on every ModelUpdate; the registry, not the update, says which
        version serves. A version that fails its integrity check is logged and skipped, and
        the worker keeps scoring with what it had.
        """
        registry = ModelRegistry(self.settings.model_registry_url)
        try:
            champion = registry.load_production(FAILURE_RISK)
            loaded = [] if champion is None else [(champion, False)]
            served = int(champion.version.version) if champion else 0
            if self.settings.shadow_candidates and FAILURE_RISK in registry.models():
                newer = [v for v in registry.versions(FAILURE_RISK)
                         if v.stage == "candidate" and int(v.version) > served]  # fmt: skip
                if newer:
                    loaded.append((registry.load(FAILURE_RISK, newer[-1].version), True))
        except (RegistryError, OSError, ValueError) as error:
            log.error(
                "model registry %s: %s; keeping the current models",
                self.settings.model_registry_url,
                error,
            )
            return self.batch_models
        return [
            BatchModel(FAILURE_RISK, m.version.version, int(m.model.horizon_s), m.score, shadow)
            for m, shadow in loaded
        ]

    def log_failure_risk(self, features: Record, predictions: Record) -> None:
        """Add the online failure model's score (in shadow: it never alerts) and log the
        step's failure-risk scores for the labels that will come."""
        x = feature_vector(features)
        if not x.any():
            return  # no capacity-bound resource on this entity
        online = self.outcomes.score(x)
        predictions["predictions"].append({
            "metric": "entity", "kind": "FAILURE_RISK", "model": ONLINE_FAILURE_MODEL,
            "model_version": "1", "horizon_s": int(self.settings.failure_horizon_s),
            "value": online, "score": online, "lower": None, "upper": None,
        })  # fmt: skip
        scores = {"local_trend@1": 0.0}  # a step without a local-trend risk scored 0
        for p in predictions["predictions"]:
            if p["kind"] == "FAILURE_RISK":
                scores[f"{p['model']}@{p['model_version']}"] = p["score"]
        self.outcomes.log(features["entity"], features["event_time"], x, scores)

    def publish_quality(self) -> None:
        """Precision and recall of every failure-risk model against the labels so far."""
        for key, quality in self.outcomes.quality.items():
            model, _, version = key.partition("@")
            if math.isfinite(quality.precision):
                metrics.MODEL_PRECISION.labels(model, version).set(quality.precision)
            if math.isfinite(quality.recall):
                metrics.MODEL_RECALL.labels(model, version).set(quality.recall)

    def emit_many(
        self, due: list[tuple[EntityPipeline, int, float]]
    ) -> list[tuple[Record, Record, list[Record]]]:
        """Close a step of every ``(pipeline, now_ms, input_ts_ms)`` at once, latency stamped.

        ``input_ts_ms`` is the Kafka timestamp of the record that closed the step: the
        prediction's latency is counted from it.
        """
        started = time.perf_counter()
        results = step_many([d[0] for d in due], [d[1] for d in due], self.batch_models)
        # One vectorised call scores every model of every due entity: its time is the step's.
        metrics.INFERENCE_SECONDS.labels("entity_step").observe(time.perf_counter() - started)
        wall_ms = time.time() * 1000
        for (_, _, input_ts_ms), (_, predictions, alerts) in zip(due, results, strict=True):
            predictions["emitted_at"] = int(wall_ms)
            predictions["latency_ms"] = max(0.0, wall_ms - input_ts_ms)
            metrics.EVENT_TO_PREDICTION.observe(predictions["latency_ms"] / 1000)
            for alert in alerts:
                metrics.ALERTS.labels(alert["rule"], alert["status"]).inc()
        return results

    async def flush_cache(self) -> None:
        """Write the latest features and predictions to Redis; a Redis outage is logged."""
        features, self.cache_features = self.cache_features, {}
        predictions, self.cache_predictions = self.cache_predictions, {}
        if not features and not predictions:
            return
        try:
            await self.store.put_encoded(features.items(), predictions.items())
        except Exception as error:  # the cache is not the source of truth: keep streaming
            log.warning(
                "Redis cache write failed (%s); %d entities not cached", error, len(predictions)
            )

    def health(self) -> tuple[bool, Record]:
        stalled = [f"{t}:{p}" for (t, p), s in self.progress.items() if s.stalled]
        return not stalled, {
            "status": "stalled" if stalled else "ok",
            "stalled_partitions": stalled,
            "partitions": len(self.progress),
            "consumed": {f"{t}:{p}": s.last_offset for (t, p), s in self.progress.items()},
            "entities": len(self.entities),
            "uptime_s": round(time.time() - self.started_s, 1),
        }


def create_app(settings: Settings) -> faust.App:
    """The Faust app of a worker, with its agents, timer and web pages."""
    app = faust.App(
        settings.worker_id,
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        store=settings.worker_store,
        datadir=f"{settings.stack_dir}/worker-data",
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=True,
        web_host=settings.bind_host,
        web_bind=settings.bind_host,
        web_port=settings.worker_port,
        consumer_max_fetch_size=4 * _MIB,
        consumer_auto_offset_reset=settings.worker_offset_reset,
        producer_linger_ms=5,
        broker_commit_interval=1.0,
        processing_guarantee="at_least_once",
        table_key_serializer="raw",
        table_value_serializer="raw",
    )
    worker = Worker(settings)
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    metrics_in = app.topic(topics.METRICS.name, **raw)
    events_in = app.topic(topics.AGENT_EVENTS.name, **raw)
    labels_in = app.topic(topics.LABELS.name, **raw)
    out = {
        t.name: app.topic(t.name, **raw)
        for t in (
            topics.DEADLETTER,
            topics.FEATURES,
            topics.PREDICTIONS,
            topics.ALERTS,
            topics.ROUTING,
        )
    }
    routing_stats = app.topic(
        f"{settings.worker_id}-routing-stats",
        internal=True,
        partitions=settings.topic_partitions,
        **raw,
    )
    # use_partitioner: the changelog record of an entity goes to the partition its key
    # hashes to, the same one as its telemetry (both keyed by entity), from any context.
    table: dict[str, Any] = {"use_partitioner": True, "default": None, "key_type": bytes,
             "value_type": bytes, "partitions": settings.topic_partitions}  # fmt: skip
    windows_table = app.Table("entity-windows", **table)
    models_table = app.Table("entity-models", **table)
    codec = worker.codec

    async def produce(spec: topics.TopicSpec, key: str, record: Record) -> bytes:
        value = codec.encode(spec.schema, record)
        await out[spec.name].send(key=key.encode(), value=value)
        metrics.EVENTS_OUT.labels(spec.name).inc()
        return value

    json_out = {t.name: app.topic(t.name, **raw) for t in topics.ALERT_JSON_TOPICS}

    async def publish_alert(alert: Record) -> None:
        """The alert on ``alerts``, and its JSON twin for each alerting tool's connector."""
        key = alert["dedup_key"]
        await produce(topics.ALERTS, key, alert)
        for topic, body in payloads_for(alert).values():
            await json_out[topic].send(key=key.encode(), value=body)
            metrics.EVENTS_OUT.labels(topic).inc()

    async def dead_letter(letter: DeadLetter) -> None:
        metrics.DEAD_LETTERS.labels(letter.error_kind).inc()
        await out[topics.DEADLETTER.name].send(
            key=letter.key, value=codec.encode("dead_letter", letter.to_record())
        )
        metrics.EVENTS_OUT.labels(topics.DEADLETTER.name).inc()

    def rejected(message: Message, rejection: Rejection) -> DeadLetter:
        return DeadLetter(
            message.topic,
            message.partition,
            message.offset,
            message.key,
            message.value,
            rejection.reason,
            rejection.kind,
        )

    pending: dict[str, tuple[EntityPipeline, int, float]] = {}
    checkpoint: dict[str, int] = {}  # entity -> event time of its newest record

    def write_checkpoints() -> None:
        """Write the entities' state to the table (and so to its changelog), once per pass.

        Faust flushes the producer before it commits offsets, so a committed offset always
        has its entity's state behind it in the changelog.
        """
        for entity, t_ms in checkpoint.items():
            pipeline = worker.entities[entity]
            windows_table[entity.encode()] = pipeline.windows_bytes()
            worker.checkpointed[entity] = t_ms
            # A new entity's models first reach the changelog a checkpoint period after it
            # appears: a burst of new entities does not all write their largest part at once.
            since = worker.models_checkpointed.setdefault(entity, t_ms)
            if t_ms - since >= settings.model_checkpoint_s * 1000:
                models_table[entity.encode()] = pipeline.models_bytes()
                worker.models_checkpointed[entity] = t_ms
        checkpoint.clear()

    async def publish_steps() -> None:
        """Step every pending entity in one vectorised call and produce the records."""
        if not pending:
            return
        due = list(pending.values())
        pending.clear()
        for (pipeline, _, _), (features, predictions, alerts) in zip(
            due, worker.emit_many(due), strict=True
        ):
            entity = pipeline.entity
            worker.log_failure_risk(features, predictions)
            if math.isfinite(pipeline.forecast_error):
                worker.forecast_drift.observe(entity, pipeline.forecast_error)
                pipeline.forecast_error = math.nan
            worker.cache_features[entity] = await produce(topics.FEATURES, entity, features)
            worker.cache_predictions[entity] = await produce(
                topics.PREDICTIONS, entity, predictions
            )
            for alert in alerts:
                await publish_alert(alert)

    def entity_pipeline(entity: str) -> EntityPipeline:
        pipeline = worker.entities.get(entity)
        if pipeline is None:
            key = entity.encode()
            pipeline = EntityPipeline(entity, worker.models)
            saved = windows_table.get(key)
            if saved:
                try:
                    pipeline = EntityPipeline.restore(worker.models, saved, models_table.get(key))
                except ValueError as error:  # a state we cannot read: start the entity afresh
                    log.error(
                        "entity %s: cannot restore its state (%s); starting fresh", entity, error
                    )
            worker.entities[entity] = pipeline
            worker.checkpointed[entity] = pipeline.last_step_ms
            if pipeline.last_step_ms:
                worker.models_checkpointed[entity] = pipeline.last_step_ms
        return pipeline

    @app.agent(metrics_in)
    async def metrics_agent(stream: Any) -> None:
        async for events in stream.take_events(settings.worker_batch, settings.worker_batch_wait_s):
            for event in events:
                await ingest_metric_batch(event.message)
            await publish_steps()
            write_checkpoints()

    async def receive(m: Any, spec: topics.TopicSpec) -> tuple[Message, Record] | None:
        """Count and decode a consumed record; an undecodable one is dead-lettered (None)."""
        worker.see(m)
        metrics.EVENTS_IN.labels(m.topic).inc()
        message = Message(m.topic, m.partition, m.offset, m.key, m.value)
        record = codec.decode_message(message, spec.schema)
        if isinstance(record, DeadLetter):
            await dead_letter(record)
            return None
        return message, record

    async def ingest_metric_batch(m: Any) -> None:
        """Decode, validate and window one MetricBatch; queue its entity's step if due."""
        received = await receive(m, topics.METRICS)
        if received is None:
            return
        message, record = received
        progress = worker.progress[(m.topic, m.partition)]
        now_ms = int(time.time() * 1000)
        values = check_metric_batch(record, now_ms, worker.limits)
        if isinstance(values, Rejection):
            await dead_letter(rejected(message, values))
            return
        entity, t_ms = record["entity"], record["event_time"]
        pipeline = entity_pipeline(entity)
        if m.offset <= pipeline.last_offset:
            metrics.REPLAYED.inc()  # already in the restored windows
            return
        if entity in pending:  # its earlier step must close before this record is judged
            await publish_steps()
        lateness = pipeline.last_step_ms - t_ms
        if lateness > settings.allowed_lateness_s * 1000:
            await dead_letter(
                rejected(
                    message,
                    Rejection(
                        "late",
                        f"event_time {t_ms} is {lateness / 1000:.0f}s behind the "
                        "entity's last closed step (allowed lateness "
                        f"{settings.allowed_lateness_s:.0f}s)",
                    ),
                )
            )
            return
        metrics.SAMPLES_IN.inc(len(values))
        pipeline.labels = record["labels"]
        refused = pipeline.add(t_ms, record["names"], values)
        pipeline.last_offset = m.offset
        if refused:
            await dead_letter(
                rejected(
                    message,
                    Rejection(
                        "cardinality",
                        f"{len(refused)} metrics over the limit of "
                        f"{settings.max_metrics_per_entity} per entity were dropped (the "
                        f"rest of the batch was processed): {', '.join(refused[:5])}",
                    ),
                )
            )
        progress.max_event_ms = max(progress.max_event_ms, t_ms)
        worker.entity_partition[entity] = m.partition
        if pipeline.due(t_ms):
            pending[entity] = (pipeline, t_ms, m.timestamp * 1000 if m.timestamp else now_ms)
        if t_ms - worker.checkpointed.get(entity, 0) >= settings.checkpoint_s * 1000:
            checkpoint[entity] = t_ms

    @app.agent(events_in)
    async def agent_events_agent(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            m = event.message
            received = await receive(m, topics.AGENT_EVENTS)
            if received is None:
                continue
            message, record = received
            rejection = check_agent_event(record, int(time.time() * 1000), worker.limits)
            if rejection:
                await dead_letter(rejected(message, rejection))
                continue
            step = worker.agents.observe(record)
            if step is None:
                continue
            wall_ms = time.time() * 1000
            step.predictions["emitted_at"] = int(wall_ms)
            step.predictions["latency_ms"] = max(0.0, wall_ms - m.timestamp * 1000)
            metrics.EVENT_TO_PREDICTION.observe(step.predictions["latency_ms"] / 1000)
            agent, task_type = record["agent"], record["task_type"]
            await produce(topics.FEATURES, step.features["entity"], step.features)
            await produce(topics.PREDICTIONS, agent, step.predictions)
            for alert in step.alerts:
                metrics.ALERTS.labels(alert["rule"], alert["status"]).inc()
                await publish_alert(alert)
            await routing_stats.send(
                key=task_type.encode(),
                value=json.dumps(
                    {"agent": agent, "t_ms": record["event_time"], "stats": asdict(step.stats)}
                ).encode(),
            )

    @app.agent(labels_in)
    async def labels_agent(stream: Any) -> None:
        """Ground truth, late: a FAILURE resolves the entity's logged failure-risk steps.

        ``telemetry.labels`` is keyed by entity like the metrics, so the worker that holds
        an entity's steps also gets its labels.
        """
        async for event in stream.events():
            received = await receive(event.message, topics.LABELS)
            if received is None:
                continue
            _, record = received
            if record["kind"] == "FAILURE":
                worker.outcomes.label(record["entity"], record["start_time"])
                worker.publish_quality()

    @app.agent(routing_stats)
    async def routing_agent(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            task_type = event.key.decode() if isinstance(event.key, bytes) else str(event.key)
            update = json.loads(event.value)
            worker.routing[task_type][update["agent"]] = AgentTaskStats(**update["stats"])
            decision = advise(task_type, worker.routing[task_type], update["t_ms"])
            if decision is not None:
                await produce(topics.ROUTING, task_type, decision)

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def watch() -> None:
        """Idle watermarks, the Redis flush, and stall detection, once a second."""
        now_s = time.time()
        for entity, pipeline in list(worker.entities.items()):
            partition = worker.entity_partition.get(entity)
            if partition is None:
                continue
            progress = worker.progress[(topics.METRICS.name, partition)]
            watermark = progress.watermark(now_s, settings.idle_timeout_s)
            if watermark > progress.max_event_ms and pipeline.due(watermark):
                step_ms = pipeline.last_step_ms + int(settings.step_s * 1000)
                pending[entity] = (pipeline, step_ms, now_s * 1000)
        await publish_steps()
        await worker.flush_cache()
        assigned = app.consumer.assignment() if app.consumer else set()
        for tp in assigned:
            progress = worker.progress[(tp.topic, tp.partition)]
            highwater = app.consumer.highwater(tp)
            behind = highwater is not None and highwater - 1 > progress.last_offset
            if highwater is not None and progress.last_offset >= 0:
                metrics.CONSUMER_LAG.labels(tp.topic, tp.partition).set(
                    max(0, highwater - 1 - progress.last_offset)
                )
            progress.stalled = behind and now_s - progress.progressed_s > settings.stall_timeout_s
            if not behind:
                progress.progressed_s = now_s
            metrics.PARTITION_STALLED.labels(tp.topic, tp.partition).set(float(progress.stalled))

    async def reload_models() -> None:
        worker.batch_models = await asyncio.to_thread(worker.load_batch_models)
        log.info(
            "batch models: %s",
            [
                f"{m.name} v{m.version}{' (shadow)' if m.shadow else ''}"
                for m in worker.batch_models
            ],
        )

    @app.task  # type: ignore[untyped-decorator]
    async def follow_model_updates() -> None:
        """Hot reload: every worker follows ``models.updates`` itself (no consumer group), so
        each picks up a promotion without a restart; scoring goes on with the old models
        until the new ones are loaded, then switches in one assignment."""
        await reload_models()
        consumer = AIOKafkaConsumer(
            topics.MODEL_UPDATES.name,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=None,
            auto_offset_reset="latest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            async for message in consumer:
                _, update = codec.decode(message.value)
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

    @app.timer(interval=60.0)  # type: ignore[untyped-decorator]
    async def watch_drift() -> None:
        """Once a minute: has the forecasters' error drifted? Raise (or clear) the alert."""
        forecaster = worker.models.forecaster
        verdict = worker.forecast_drift.assess()
        metrics.DRIFT_STATE.labels(forecaster.name, "prediction_error").set(
            float(verdict.score >= 1.0)
        )
        if math.isfinite(worker.forecast_drift.mean_error):
            metrics.MODEL_MAE.labels(forecaster.name, forecaster.version).set(
                worker.forecast_drift.mean_error
            )
        alert = drift_alert(
            verdict,
            worker.forecast_drift_alert,
            forecaster.name,
            forecaster.version,
            int(time.time() * 1000),
        )
        if alert is not None:
            metrics.ALERTS.labels(alert["rule"], alert["status"]).inc()
            await publish_alert(alert)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        ok, body = worker.health()
        return web.json(body, status=200 if ok else 503)

    @app.page("/metrics")
    async def prometheus_metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget(sender: Any, *args: Any, **kwargs: Any) -> None:
        """Entities of partitions we no longer own are another worker's now."""
        revoked = args[0] if args else kwargs.get("revoked", set())
        for tp in revoked:
            worker.progress.pop((tp.topic, tp.partition), None)
            for gauge in (metrics.CONSUMER_LAG, metrics.PARTITION_STALLED):
                with contextlib.suppress(KeyError):
                    gauge.remove(tp.topic, str(tp.partition))
        lost = {tp.partition for tp in revoked if tp.topic == topics.METRICS.name}
        for entity in [e for e, p in worker.entity_partition.items() if p in lost]:
            worker.entities.pop(entity, None)
            worker.entity_partition.pop(entity, None)
            worker.checkpointed.pop(entity, None)
            worker.models_checkpointed.pop(entity, None)

    app.foresight_worker = worker  # type: ignore[attr-defined]
    return app
