"""The worker's rules, without Faust: consumed records and a clock in; records and checkpoints
out.

:class:`Engine` holds everything one worker process knows between records (each entity's
:class:`~models.entity.EntityPipeline`, partition watermarks, agent statistics, the
failure-outcome log) and decides, for every consumed record, what becomes of it: decode and
validate (dead-letter the invalid), skip a replay, refuse a late sample, add to the windows,
and when a window step ends, score every due entity in one vectorised call and build the
features, predictions and alerts. It never touches Kafka: :mod:`streams.app` hands it the
records Faust consumed and produces what it returns, and a unit test does the same with a dict
for a changelog.

Nothing an input does may stop the engine: a record that breaks a rule is dead-lettered with
the reason, an output too large to produce dead-letters its input (:mod:`.outputs`), and an
unexpected failure while handling one record dead-letters that record (``internal_error``)
and the stream goes on.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from connectors import prometheus as metrics
from connectors.alert_payloads import payloads_for
from models.agents import AgentTaskStats, AgentTracker, RecentPairs, advise
from models.alerts import AlertState
from models.drift import ErrorDriftWatch, drift_alert
from models.entity import BatchModel, EntityPipeline, ModelSet, PipelineConfig, step_many
from models.failure_outcomes import OutcomeTracker
from models.signals import SignalRules, StageOutput
from schemas.codec import Codec, DeadLetter, Message
from schemas.predictions import PredictionColumns
from streams import topics
from streams.engine.outputs import Checkpoint, Outputs, rejected
from streams.engine.progress import PartitionProgress
from streams.settings import Settings
from streams.validation import Limits, Rejection, check_agent_event, check_metric_batch

log = logging.getLogger(__name__)
Record = dict[str, Any]
ONLINE_FAILURE_MODEL = "failure_risk_online"

LoadState = Callable[[str], tuple[bytes | None, bytes | None]]
"""An entity's saved ``(windows, models)`` state, either part None when there is none."""


def pipeline_config(settings: Settings) -> PipelineConfig:
    """How entities are featurised and predicted, as the settings say (the worker and the
    intelligence API's on-demand predictions use the same)."""
    return PipelineConfig(
        step_s=settings.step_s,
        max_metrics=settings.max_metrics_per_entity,
        anomaly_warmup_steps=settings.anomaly_warmup_steps,
        failure_horizon_s=settings.failure_horizon_s,
        signal_rules=SignalRules.load(settings.signal_rules),
        max_series=settings.max_series_per_entity,
    )


@dataclass(frozen=True)
class Input:
    """A consumed record: its coordinates and bytes, and its Kafka timestamp (ms)."""

    message: Message
    timestamp_ms: int | None = None


@dataclass
class _Due:
    """An entity whose window step has ended, waiting for the vectorised step."""

    pipeline: EntityPipeline
    step_ms: int
    latency_from_ms: float  # the prediction's latency is counted from here
    cause: Message  # the record that closed the step, or the entity's newest one


class Engine:
    """A worker's state and rules (see the module docstring).

    Parameters
    ----------
    settings
        The worker's settings (step, limits, checkpoint cadence, entity cap).
    load_state
        Reads an entity's saved state when the engine first meets it (the worker's tables).
    codec
        Encodes outputs and decodes inputs.
    routing_topic
        The internal topic that carries agent statistics to the routing step.
    """

    def __init__(
        self, settings: Settings, load_state: LoadState, codec: Codec, routing_topic: str = ""
    ) -> None:
        self.settings = settings
        self.codec = codec
        self.load_state = load_state
        self.routing_topic = routing_topic
        self.models = ModelSet(pipeline_config(settings))
        self.limits = Limits(
            max_future_ms=int(settings.max_future_s * 1000),
            max_age_ms=settings.topic_retention_hours * 3_600_000,
        )
        self.entities: dict[str, EntityPipeline] = {}
        self.entity_partition: dict[str, int] = {}
        self.last_seen_s: dict[str, float] = {}
        self.checkpointed: dict[str, int] = {}
        self.models_checkpointed: dict[str, int] = {}
        self.progress: dict[tuple[str, int], PartitionProgress] = defaultdict(PartitionProgress)
        self.batch_models: list[BatchModel] = []
        self.outcomes = OutcomeTracker(settings.failure_horizon_s)
        self.forecast_drift = ErrorDriftWatch()
        self.forecast_drift_alert = AlertState()
        self.agents = AgentTracker(max_pairs=settings.max_entities)
        self.routing: dict[str, dict[str, AgentTaskStats]] = defaultdict(dict)
        self._routed = RecentPairs(settings.max_entities)
        self._pending: dict[str, _Due] = {}
        self._touched: dict[str, int] = {}  # entity -> event time of its newest record

    def outputs(self) -> Outputs:
        return Outputs(self.codec, self.settings.max_record_bytes)

    # -- telemetry.metrics -------------------------------------------------------------------
    def metrics(self, inputs: Iterable[Input], now_s: float) -> Outputs:
        """One poll batch of MetricBatch records: windows, the steps they end, checkpoints."""
        out = self.outputs()
        for item in inputs:
            self._consumed(item.message, now_s)
            try:
                self._metric_batch(item, now_s, out)
            except Exception as error:
                self._internal_error(item.message, error, out)
        self._step(out)
        self._checkpoint(out)
        return out

    def _consumed(self, message: Message, now_s: float) -> None:
        self.progress[(message.topic, message.partition)].arrived(message.offset, now_s)
        metrics.EVENTS_IN.labels(message.topic).inc()

    def _internal_error(self, message: Message, error: Exception, out: Outputs) -> None:
        log.exception("failed on %s:%d@%d", message.topic, message.partition, message.offset)
        out.dead(rejected(message, "internal_error", f"{type(error).__name__}: {error}"))

    def _decode(self, message: Message, spec: topics.TopicSpec, out: Outputs) -> Record | None:
        record = self.codec.decode_message(message, spec.schema)
        if isinstance(record, DeadLetter):
            out.dead(record)
            return None
        return record

    def _metric_batch(self, item: Input, now_s: float, out: Outputs) -> None:
        message = item.message
        record = self._decode(message, topics.METRICS, out)
        if record is None:
            return
        now_ms = int(now_s * 1000)
        checked = check_metric_batch(record, now_ms, self.limits)
        if isinstance(checked, Rejection):
            out.dead(rejected(message, checked.kind, checked.reason))
            return
        entity, t_ms = record["entity"], record["event_time"]
        pipeline = self._pipeline(entity, message, now_s, out)
        if pipeline is None:
            return
        if message.offset <= pipeline.last_offset:
            metrics.REPLAYED.inc()  # already in the restored windows
            return
        if entity in self._pending:  # its earlier step must close before this record is judged
            self._step(out)
        lateness = pipeline.last_step_ms - t_ms
        if lateness > self.settings.allowed_lateness_s * 1000:
            out.dead(
                rejected(
                    message,
                    "late",
                    f"event_time {t_ms} is {lateness / 1000:.0f}s behind the entity's last "
                    f"closed step (allowed lateness {self.settings.allowed_lateness_s:.0f}s)",
                )
            )
            return
        metrics.SAMPLES_IN.inc(len(checked.values))
        pipeline.labels = record["labels"]
        staged = pipeline.observe(t_ms, checked.names, checked.values, checked.kinds, checked.ended)
        pipeline.last_offset = message.offset
        if checked.dropped:
            out.dead(rejected(message, checked.dropped.kind, checked.dropped.reason))
        self._not_modelled(staged, message, out)
        progress = self.progress[(message.topic, message.partition)]
        progress.max_event_ms = max(progress.max_event_ms, t_ms)
        self.entity_partition[entity] = message.partition
        self.last_seen_s[entity] = now_s
        if pipeline.due(t_ms):
            latency_from = item.timestamp_ms if item.timestamp_ms else now_ms
            self._pending[entity] = _Due(pipeline, t_ms, latency_from, message)
        if t_ms - self.checkpointed.get(entity, 0) >= self.settings.checkpoint_s * 1000:
            self._touched[entity] = t_ms

    def _not_modelled(self, staged: StageOutput, cause: Message, out: Outputs) -> None:
        """Dead letters, and counts by reason, profile and rule, for what the signal stage
        could not take: one letter per reason, naming the first few series or signals."""
        settings, dropped = self.settings, metrics.SIGNALS_DROPPED
        letters = []
        for _, profile, rule in staged.refused:
            dropped.labels("signal_limit", profile, rule).inc()
        if staged.refused:
            shown = _listed(f"{name} ({profile}/{rule})" for name, profile, rule in staged.refused)
            reason = (
                f"{len(staged.refused)} signals over the limit of "
                f"{settings.max_metrics_per_entity} per entity (FORESIGHT_MAX_METRICS) were "
                f"not modelled, the others were: {shown}. Raise the limit, or leave signals "
                "out with a rules file (FORESIGHT_SIGNAL_RULES)"
            )
            letters.append(("cardinality", reason))
        over = staged.over_series_limit
        if over:
            dropped.labels("series_limit", "", "").inc(len(over))
            reason = (
                f"{len(over)} series over the limit of {settings.max_series_per_entity} per "
                f"entity (FORESIGHT_MAX_SERIES) were dropped, the rest of the batch was not: "
                f"{_listed(over)}"
            )
            letters.append(("cardinality", reason))
        late = staged.out_of_order
        if late:
            dropped.labels("out_of_order", "", "").inc(len(late))
            reason = (
                f"{len(late)} samples were not newer than their series' previous sample (a "
                f"resent or reordered request) and were skipped: {_listed(late)}"
            )
            letters.append(("out_of_order", reason))
        errors = [e for signals in staged.signals for e in signals.errors]
        for profile, rule, _ in errors:
            dropped.labels("rule_error", profile, rule).inc()
        if errors:
            letters.append(("signal_rule", _listed(f"{p}/{r}: {why}" for p, r, why in errors)))
        for kind, reason in letters:
            out.dead(rejected(cause, kind, reason))

    def _pipeline(
        self, entity: str, message: Message, now_s: float, out: Outputs
    ) -> EntityPipeline | None:
        """The entity's pipeline: in memory, restored from its saved state, or new; None when
        the worker is full (the record is dead-lettered)."""
        pipeline = self.entities.get(entity)
        if pipeline is not None:
            return pipeline
        if len(self.entities) >= self.settings.max_entities:
            self.evict_idle(now_s, out)
        if len(self.entities) >= self.settings.max_entities:
            out.dead(
                rejected(
                    message,
                    "entity_limit",
                    f"the worker holds {len(self.entities):,} entities, its limit "
                    f"(FORESIGHT_MAX_ENTITIES), and none has been idle for "
                    f"{self.settings.entity_idle_s:.0f}s: add partitions and workers, or raise "
                    "the limit",
                )
            )
            return None
        pipeline = EntityPipeline(entity, self.models)
        windows, model_states = self.load_state(entity)
        if windows:
            try:
                pipeline = EntityPipeline.restore(self.models, windows, model_states)
            except ValueError as error:  # a state we cannot read: start the entity afresh
                log.error("entity %s: cannot restore its state (%s); starting fresh", entity, error)
        self.entities[entity] = pipeline
        self.checkpointed[entity] = pipeline.last_step_ms
        if pipeline.last_step_ms:
            self.models_checkpointed[entity] = pipeline.last_step_ms
        return pipeline

    # -- steps ------------------------------------------------------------------------------
    def _step(self, out: Outputs) -> None:
        """Step every pending entity in one vectorised call and build the records."""
        if not self._pending:
            return
        due = list(self._pending.values())
        self._pending.clear()
        for d in due:
            try:
                self._not_modelled(d.pipeline.close_scrape(), d.cause, out)
            except Exception as error:
                self._internal_error(d.cause, error, out)
        started = time.perf_counter()
        try:
            results = step_many(
                [d.pipeline for d in due], [d.step_ms for d in due], self.batch_models
            )
        except Exception as error:
            for d in due:
                self._internal_error(d.cause, error, out)
            return
        # One vectorised call scores every model of every due entity: its time is the step's.
        metrics.INFERENCE_SECONDS.labels("entity_step").observe(time.perf_counter() - started)
        wall_ms = time.time() * 1000
        for d, (features, predictions, alerts) in zip(due, results, strict=True):
            entity = d.pipeline.entity
            predictions["emitted_at"] = int(wall_ms)
            predictions["latency_ms"] = max(0.0, wall_ms - d.latency_from_ms)
            metrics.EVENT_TO_PREDICTION.observe(predictions["latency_ms"] / 1000)
            self._log_failure_risk(d.pipeline, predictions)
            if math.isfinite(d.pipeline.forecast_error):
                self.forecast_drift.observe(entity, d.pipeline.forecast_error)
                d.pipeline.forecast_error = math.nan
            cached = (
                ("predictions", "forecasts")
                if "FORECAST" in predictions["kinds"]
                else ("predictions",)
            )
            out.emit(topics.FEATURES, entity, features, d.cause, ("features",))
            out.emit(topics.PREDICTIONS, entity, predictions, d.cause, cached)
            for alert in alerts:
                self.alert(alert, d.cause, out)

    def alert(self, alert: Record, cause: Message | None, out: Outputs) -> None:
        """The alert on ``alerts``, and its JSON twin for each alerting tool's connector."""
        metrics.ALERTS.labels(alert["rule"], alert["status"]).inc()
        key = alert["dedup_key"]
        out.emit(topics.ALERTS, key, alert, cause)
        for topic, body in payloads_for(alert).values():
            out.raw(topic, key.encode(), body, cause)

    def _log_failure_risk(self, pipeline: EntityPipeline, predictions: Record) -> None:
        """Add the online failure model's score (in shadow: it never alerts) and log the
        step's failure-risk scores, each model's highest over the entity's signals, for the
        labels that will come."""
        x = pipeline.risk_features
        if x is None:
            return  # no capacity-bound signal on this entity
        online = self.outcomes.score(x)
        columns = PredictionColumns.of(predictions)
        columns.add(
            "FAILURE_RISK", (ONLINE_FAILURE_MODEL, "1"), ["entity"],
            [self.settings.failure_horizon_s], [online], [online],
        )  # fmt: skip
        scores = {f"{m}@{v}": score for (m, v), score in columns.highest("FAILURE_RISK").items()}
        self.outcomes.log(pipeline.entity, predictions["event_time"], x, scores)

    # -- state --------------------------------------------------------------------------------
    def _checkpoint(self, out: Outputs) -> None:
        """The state of every entity a record changed this pass (and its models, at their
        slower cadence). Faust flushes the producer before it commits offsets, so a committed
        offset always has its entity's state behind it in the changelog."""
        for entity, t_ms in self._touched.items():
            pipeline = self.entities.get(entity)
            if pipeline is None:
                continue
            self.checkpointed[entity] = t_ms
            # A new entity's models first reach the changelog a checkpoint period after it
            # appears: a burst of new entities does not all write their largest part at once.
            since = self.models_checkpointed.setdefault(entity, t_ms)
            models = None
            if t_ms - since >= self.settings.model_checkpoint_s * 1000:
                models = pipeline.models_bytes()
                self.models_checkpointed[entity] = t_ms
            out.checkpoints.append(Checkpoint(entity, pipeline.windows_bytes(), models))
        self._touched.clear()

    def evict_idle(self, now_s: float, out: Outputs) -> list[str]:
        """Move entities idle for ``entity_idle_s`` out of memory, their whole state
        checkpointed; they come back from it with their next record."""
        idle_before = now_s - self.settings.entity_idle_s
        idle = [e for e, seen in self.last_seen_s.items()
                if seen <= idle_before and e not in self._pending]  # fmt: skip
        for entity in idle:
            pipeline = self.entities[entity]
            out.checkpoints.append(
                Checkpoint(entity, pipeline.windows_bytes(), pipeline.models_bytes())
            )
            self.outcomes.forget(entity)
            self._forget(entity)
        return idle

    def _forget(self, entity: str) -> None:
        for held in (
            self.entities,
            self.entity_partition,
            self.last_seen_s,
            self.checkpointed,
            self.models_checkpointed,
            self._touched,
            self._pending,
        ):
            held.pop(entity, None)

    def revoked(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Partitions another worker owns now: forget them and their entities."""
        lost = set()
        for topic, partition in partitions:
            self.progress.pop((topic, partition), None)
            if topic == topics.METRICS.name:
                lost.add(partition)
        for entity in [e for e, p in self.entity_partition.items() if p in lost]:
            self._forget(entity)

    # -- the clock ----------------------------------------------------------------------------
    def tick(self, now_s: float) -> Outputs:
        """Once a second: close the steps of idle partitions' entities (their watermark
        follows wall time) and evict idle entities."""
        out = self.outputs()
        for entity, pipeline in self.entities.items():
            partition = self.entity_partition.get(entity)
            if partition is None or entity in self._pending:
                continue
            progress = self.progress[(topics.METRICS.name, partition)]
            watermark = progress.watermark(now_s, self.settings.idle_timeout_s)
            if watermark > progress.max_event_ms and pipeline.due(watermark):
                step_ms = pipeline.last_step_ms + int(self.settings.step_s * 1000)
                cause = Message(
                    topics.METRICS.name, partition, pipeline.last_offset, entity.encode(), b""
                )
                self._pending[entity] = _Due(pipeline, step_ms, now_s * 1000, cause)
        self._step(out)
        self.evict_idle(now_s, out)
        return out

    def watch_drift(self, now_ms: int) -> Outputs:
        """Has the forecasters' error drifted? Raise (or clear) the ``model_drift`` alert."""
        out = self.outputs()
        forecaster = self.models.forecaster
        verdict = self.forecast_drift.assess()
        metrics.DRIFT_STATE.labels(forecaster.name, "prediction_error").set(
            float(verdict.score >= 1.0)
        )
        if math.isfinite(self.forecast_drift.mean_error):
            metrics.MODEL_MAE.labels(forecaster.name, forecaster.version).set(
                self.forecast_drift.mean_error
            )
        alert = drift_alert(
            verdict, self.forecast_drift_alert, forecaster.name, forecaster.version, now_ms
        )
        if alert is not None:
            self.alert(alert, None, out)
        return out

    # -- telemetry.labels ---------------------------------------------------------------------
    def labels(self, inputs: Iterable[Input], now_s: float) -> Outputs:
        """Ground truth, late: a FAILURE resolves the entity's logged failure-risk steps, and
        every failure-risk model's precision and recall are exported."""
        out = self.outputs()
        for item in inputs:
            self._consumed(item.message, now_s)
            record = self._decode(item.message, topics.LABELS, out)
            if record is not None and record["kind"] == "FAILURE":
                self.outcomes.label(record["entity"], record["start_time"])
                self._publish_quality()
        return out

    def _publish_quality(self) -> None:
        for key, quality in self.outcomes.quality.items():
            model, _, version = key.partition("@")
            if math.isfinite(quality.precision):
                metrics.MODEL_PRECISION.labels(model, version).set(quality.precision)
            if math.isfinite(quality.recall):
                metrics.MODEL_RECALL.labels(model, version).set(quality.recall)
            if math.isfinite(quality.accuracy):
                metrics.MODEL_ACCURACY.labels(model, version).set(quality.accuracy)

    # -- agents ---------------------------------------------------------------------------------
    def agent_events(self, inputs: Iterable[Input], now_s: float) -> Outputs:
        """AgentEvents: per agent x task type statistics, agent features and DURATION
        predictions, health alerts, and the statistics re-keyed by task type for routing."""
        out = self.outputs()
        for item in inputs:
            self._consumed(item.message, now_s)
            try:
                self._agent_event(item, now_s, out)
            except Exception as error:
                self._internal_error(item.message, error, out)
        return out

    def _agent_event(self, item: Input, now_s: float, out: Outputs) -> None:
        message = item.message
        record = self._decode(message, topics.AGENT_EVENTS, out)
        if record is None:
            return
        rejection = check_agent_event(record, int(now_s * 1000), self.limits)
        if rejection:
            out.dead(rejected(message, rejection.kind, rejection.reason))
            return
        step = self.agents.observe(record)
        if step is None:
            return
        wall_ms = time.time() * 1000
        latency_from = item.timestamp_ms if item.timestamp_ms else wall_ms
        step.predictions["emitted_at"] = int(wall_ms)
        step.predictions["latency_ms"] = max(0.0, wall_ms - latency_from)
        metrics.EVENT_TO_PREDICTION.observe(step.predictions["latency_ms"] / 1000)
        agent, task_type = record["agent"], record["task_type"]
        out.emit(topics.FEATURES, step.features["entity"], step.features, message)
        out.emit(topics.PREDICTIONS, agent, step.predictions, message)
        for alert in step.alerts:
            self.alert(alert, message, out)
        update = {"agent": agent, "t_ms": record["event_time"], "stats": asdict(step.stats)}
        out.raw(self.routing_topic, task_type.encode(), json.dumps(update).encode(), message)

    def route(self, task_type: str, update: bytes) -> Outputs:
        """An agent's statistics for ``task_type``: advise the best agent for it now."""
        out = self.outputs()
        loaded = json.loads(update)
        self.routing[task_type][loaded["agent"]] = AgentTaskStats(**loaded["stats"])
        for old_task_type, old_agent in self._routed.seen(task_type, loaded["agent"]):
            candidates = self.routing[old_task_type]
            candidates.pop(old_agent, None)
            if not candidates:
                del self.routing[old_task_type]
        decision = advise(task_type, self.routing[task_type], loaded["t_ms"])
        if decision is not None:
            out.emit(topics.ROUTING, task_type, decision, None)
        return out

    def health_fields(self) -> Record:
        """What ``/health`` reports of the engine."""
        return {
            "partitions": len(self.progress),
            "consumed": {f"{t}:{p}": s.last_offset for (t, p), s in self.progress.items()},
            "entities": len(self.entities),
        }

    def stalled(self) -> list[str]:
        return [f"{t}:{p}" for (t, p), s in self.progress.items() if s.stalled]


def _listed(items: Iterable[str], most: int = 5) -> str:
    """The first ``most`` items, each cut to 120 characters, and how many more."""
    items = list(items)
    shown = ", ".join(item[:120] for item in items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def inputs_of(events: Sequence[Any]) -> list[Input]:
    """Faust events (or anything with ``.message`` carrying Kafka coordinates) as inputs."""
    return [
        Input(
            Message(m.topic, m.partition, m.offset, m.key, m.value),
            int(m.timestamp * 1000) if m.timestamp else None,
        )
        for m in (e.message for e in events)
    ]
