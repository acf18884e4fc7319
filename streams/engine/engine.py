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
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from connectors import prometheus as metrics
from models.agents import AgentStep, AgentTracker
from models.alerts import AlertState, default_rules
from models.drift import ErrorDriftWatch, FeatureDriftWatch, drift_alert
from models.entity import BatchModel, EntityPipeline, ModelSet, PipelineConfig, step_many
from models.explain import TOP
from models.failure_outcomes import OutcomeTracker
from models.routing import AgentConcurrency, RoutingPolicy, ScalingAdvisor, scaling_predictions
from models.signals import SignalRules, StageOutput
from models.workflows import WorkflowTracker
from schemas.codec import Codec, DeadLetter, DecodeError, Message, is_probe
from schemas.predictions import PredictionColumns
from streams import topics
from streams.engine import journal
from streams.engine.outputs import Checkpoint, Outputs, rejected
from streams.engine.progress import PartitionProgress
from streams.settings import Settings
from streams.validation import (
    Limits,
    Rejection,
    check_agent_event,
    check_metric_batch,
    check_routing_request,
)

log = logging.getLogger(__name__)
Record = dict[str, Any]
ONLINE_FAILURE_MODEL = "failure_risk_online"
ONLINE_FAILURE_VERSION = "2"  # 2: trend in shares of capacity within the horizon, unweighted

LoadState = Callable[[str], Checkpoint]
"""An entity's saved state, each part None when there is none."""


def pipeline_config(settings: Settings) -> PipelineConfig:
    """How entities are featurised and predicted, as the settings say (the worker and the
    intelligence API's on-demand predictions use the same)."""
    return PipelineConfig(
        step_s=settings.step_s,
        max_metrics=settings.max_metrics_per_entity,
        anomaly_warmup_steps=settings.anomaly_warmup_steps,
        rules=default_rules(settings.entity_anomaly_threshold),
        failure_horizon_s=settings.failure_horizon_s,
        signal_rules=SignalRules.load(settings.signal_rules),
        max_series=settings.max_series_per_entity,
    )


@dataclass(frozen=True)
class Input:
    """A consumed record: its coordinates and bytes, its Kafka timestamp (ms), and whether it
    is a readiness probe (:data:`schemas.codec.PROBE_HEADER`)."""

    message: Message
    timestamp_ms: int | None = None
    probe: bool = False


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
        The internal topic that carries agent events, agent loads and routing requests to
        the routing step (:meth:`route`) keyed by task type, so each task type's policy lives
        on one worker, and the events of workflows to the same step keyed by workflow id, so
        each workflow is followed by one worker.
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
        self.risk_threshold = next(
            (r.threshold for r in self.models.config.rules if r.kind == "FAILURE_RISK"), 1.0
        )
        self.feature_drift: FeatureDriftWatch | None = None
        self._retired_drift: list[FeatureDriftWatch] = []  # replaced while their alert fired
        self.outcomes = OutcomeTracker(settings.failure_horizon_s)
        self.forecast_drift = ErrorDriftWatch()
        self.forecast_drift_alert = AlertState()
        self.agents = AgentTracker(max_pairs=settings.max_entities)
        self.concurrency = AgentConcurrency(max_agents=settings.max_entities)
        self.policy = RoutingPolicy(max_pairs=settings.max_entities)
        self.scaling = ScalingAdvisor(max_types=settings.max_entities)
        self.workflows = WorkflowTracker(settings.workflow_config())
        # Event time of the workflow steps seen, per partition of the routing topic.
        self._workflow_clocks: dict[int, PartitionProgress] = {}
        self._pending: dict[str, _Due] = {}
        self._touched: dict[str, int] = {}  # entity -> event time of its newest record
        self.twins = topics.json_twins(settings)
        # The identity and size of each entity's windows snapshot as last written (absent: to
        # take at the next write) and the records it took since (see .journal).
        self._snapshots: dict[str, tuple[int, int]] = {}
        self._journals: dict[str, bytearray] = {}
        # The journal segments written since each entity's snapshot, and the journal bytes
        # they hold; and how many segment keys may hold a value (an eviction deletes them).
        self._segments: dict[str, tuple[int, int]] = {}
        self._segment_keys: dict[str, int] = {}
        # Entities whose journal the changelog lacks, the oldest first, with the wall time
        # since when.
        self._unsaved: dict[str, float] = {}
        self._events_in: dict[str, Counter] = {}

    def outputs(self) -> Outputs:
        return Outputs(self.codec, self.settings.max_record_bytes, self.twins)

    # -- telemetry.metrics -------------------------------------------------------------------
    def metrics(self, inputs: Iterable[Input], now_s: float) -> Outputs:
        """One poll batch of MetricBatch records: windows, the steps they end, checkpoints."""
        out = self.outputs()
        for item in inputs:
            self._consumed(item.message, now_s)
            if item.probe:
                continue
            try:
                self._metric_batch(item, now_s, out)
            except Exception as error:
                self._internal_error(item.message, error, out)
        self._step(out)
        self._checkpoint(out, now_s)
        return out

    def _consumed(self, message: Message, now_s: float) -> None:
        progress = self.progress[(message.topic, message.partition)]
        newest = progress.last_offset
        skipped = progress.arrived(message.offset, now_s)
        counted = self._events_in.get(message.topic)
        if counted is None:  # labels() costs more than the count: one child per topic
            counted = self._events_in[message.topic] = metrics.EVENTS_IN.labels(message.topic)
        counted.inc()
        if skipped:
            metrics.SKIPPED_OFFSETS.labels(message.topic, message.partition).inc(skipped)
            log.error(
                "%s:%d: offsets %d to %d never reached the worker (it was handed %d, then %d): "
                "their records are missing from the windows. A consumer that skips records "
                "after a rebalance does this (Faust's recovery order did; streams/recovery.py "
                "fixes it); a topic written with transactions or compacted has such holes by "
                "design",
                message.topic, message.partition, newest + 1, message.offset - 1, newest,
                message.offset,
            )  # fmt: skip

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
        # The partition's from its first record, replayed or late, so a revoke takes it along
        # (kept, it would hide the next owner's changes when the partition comes back).
        self.entity_partition[entity] = message.partition
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
        journal.append(
            self._journals.setdefault(entity, bytearray()), message.offset, message.value
        )
        if checked.dropped:
            out.dead(rejected(message, checked.dropped.kind, checked.dropped.reason))
        self._not_modelled(staged, message, out)
        progress = self.progress[(message.topic, message.partition)]
        progress.max_event_ms = max(progress.max_event_ms, t_ms)
        # Oldest first (moved to the end when seen): eviction reads only the idle front.
        self.last_seen_s.pop(entity, None)
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
        saved = self.load_state(entity)
        self._segment_keys[entity] = len(saved.journal)
        if saved.windows:
            try:
                snapshot, taken = journal.read(saved.windows)
                taken += journal.records(saved.journal, snapshot)
                pipeline = EntityPipeline.restore(self.models, snapshot, saved.models)
            except ValueError as error:  # a state we cannot read: start the entity afresh
                log.error("entity %s: cannot restore its state (%s); starting fresh", entity, error)
            else:
                self._take_again(pipeline, taken)
        self.entities[entity] = pipeline
        # Seen now, even if its records turn out to be replays or late: eviction reads only
        # last_seen_s, and an entity missing there would stay in memory for good.
        self.last_seen_s[entity] = now_s
        self.checkpointed[entity] = pipeline.last_step_ms
        if pipeline.last_step_ms:
            self.models_checkpointed[entity] = pipeline.last_step_ms
        return pipeline

    def _take_again(self, pipeline: EntityPipeline, taken: list[tuple[int, bytes]]) -> None:
        """The records and steps a restored snapshot was checkpointed with, taken again in
        their order: the records added to its windows as they were the first time (they
        passed every check then; their dead letters and counts are not repeated), each step's
        alert states and time put back where it closed."""
        for offset, value in taken:
            if offset == journal.STEP:
                pipeline.take_step(value)
                continue
            if offset <= pipeline.last_offset:
                continue
            try:
                _, record = self.codec.decode(value)
                checked = check_metric_batch(record, record["event_time"], self.limits)
            except Exception as error:  # not ours to stop on: the entity goes on without it
                log.error(
                    "entity %s: cannot take record %d again (%s)", pipeline.entity, offset, error
                )
                continue
            if isinstance(checked, Rejection):
                continue
            pipeline.labels = record["labels"]
            pipeline.observe(
                record["event_time"], checked.names, checked.values, checked.kinds, checked.ended
            )
            pipeline.last_offset = offset

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
        if self.feature_drift is not None:
            self.feature_drift.observe([features for features, _, _ in results])
        self._count_served([predictions for _, predictions, _ in results])
        wall_ms = time.time() * 1000
        for d, (features, predictions, alerts) in zip(due, results, strict=True):
            entity = d.pipeline.entity
            # The step's alert states and time go in the journal, after the records it read;
            # once the journal outweighs its snapshot, the next write is a snapshot.
            taken = self._journals.setdefault(entity, bytearray())
            journal.append(taken, journal.STEP, d.pipeline.step_state())
            held = self._snapshots.get(entity)
            if held is not None and len(taken) > held[1]:
                del self._snapshots[entity]
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

    def _count_served(self, batches: Sequence[Record]) -> None:
        """Each trained model version's FAILURE_RISK predictions and alarms in ``batches``:
        with an A/B split, each arm's traffic on ``/metrics``."""
        for model in self.batch_models:
            key = (model.name, model.version)
            made = alarms = 0
            for batch in batches:
                pairs = zip(batch["models"], batch["model_versions"], strict=True)
                at = next((i for i, pair in enumerate(pairs) if pair == key), -1)
                if at >= 0:
                    made += 1
                    alarms += batch["scores"][batch["model_index"].index(at)] >= self.risk_threshold
            if made:
                metrics.MODEL_PREDICTIONS.labels(*key).inc(made)
                metrics.MODEL_ALARMS.labels(*key).inc(alarms)

    def alert(self, alert: Record, cause: Message | None, out: Outputs) -> None:
        """The alert on ``alerts``, with its JSON twins (one per alerting tool's connector)."""
        metrics.ALERTS.labels(alert["rule"], alert["status"]).inc()
        out.emit(topics.ALERTS, alert["dedup_key"], alert, cause)

    def _log_failure_risk(self, pipeline: EntityPipeline, predictions: Record) -> None:
        """Add the online failure model's score (in shadow: it never alerts) and log the
        step's failure-risk scores, each model's highest over the entity's signals, for the
        labels that will come."""
        x = pipeline.risk_features
        if x is None:
            return  # no capacity-bound signal on this entity
        online = self.outcomes.score(x)
        columns = PredictionColumns.of(predictions)
        at = columns.add(
            "FAILURE_RISK", (ONLINE_FAILURE_MODEL, ONLINE_FAILURE_VERSION), ["entity"],
            [self.settings.failure_horizon_s], [online], [online],
        )  # fmt: skip
        columns.explain(at, self.outcomes.model.drivers(x, TOP))
        scores = {f"{m}@{v}": score for (m, v), score in columns.highest("FAILURE_RISK").items()}
        self.outcomes.log(pipeline.entity, predictions["event_time"], x, scores)

    # -- state --------------------------------------------------------------------------------
    def _checkpoint(self, out: Outputs, now_s: float) -> None:
        """The snapshots due of the entities a record changed this pass (and their models,
        at their slower cadence); the others' journals wait for :meth:`journals_due` or
        :meth:`commit`."""
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
            held = self._snapshots.get(entity)
            if (
                held is None
                or self._snapshot_due(entity)
                or len(self._journals.get(entity, b"")) > held[1] * journal.MAX_WEIGHT
            ):
                out.checkpoints.append(self._snapshot(pipeline, models))
            else:
                self._unsaved.setdefault(entity, now_s)
                if models is not None:
                    out.checkpoints.append(Checkpoint(entity, models=models))
        self._touched.clear()

    def commit(self) -> list[Checkpoint]:
        """The journals of the entities whose latest records the changelog lacks: what it
        must hold before the worker commits the input offsets of those records.

        Each write is a journal segment of the records and steps since the last one. The
        worker calls this before each offset commit (where, behind, an entity's passes share
        one segment: fewer, larger writes), and :meth:`journals_due` after each pass while it
        keeps up."""
        return [self._journal(entity) for entity in list(self._unsaved)]

    def journals_due(self, now_s: float) -> list[Checkpoint]:
        """The journals the changelog has lacked for ``worker_journal_s`` or longer (wall
        time): what a pass writes while the worker keeps up. The writes are spread over the
        passes, as the entities' records arrived, and an entity whose records arrive faster
        than that writes several in one segment; the offset commit writes the rest."""
        due = now_s - self.settings.worker_journal_s
        ready = []
        for entity, since in self._unsaved.items():  # the oldest first
            if since > due:
                break
            ready.append(entity)
        return [self._journal(entity) for entity in ready]

    def _snapshot_due(self, entity: str) -> bool:
        """Whether the entity's next write must be a snapshot: it has none to extend (it is
        new or was loaded, or a step found its journal outweighing it), or its journal has all
        the segments it may have."""
        return (
            entity not in self._snapshots
            or self._segments.get(entity, (0, 0))[0] >= journal.MAX_SEGMENTS
        )

    def _journal(self, entity: str) -> Checkpoint:
        """The entity's next journal segment: the records and steps since its last write; a
        new snapshot instead when one is due."""
        del self._unsaved[entity]
        if self._snapshot_due(entity):
            return self._snapshot(self.entities[entity], None)
        segment, written = self._segments.get(entity, (0, 0))
        records = self._journals[entity]
        self._segments[entity] = (segment + 1, len(records))
        self._segment_keys[entity] = max(self._segment_keys.get(entity, 0), segment + 1)
        value = journal.entry(self._snapshots[entity][0], records[written:])
        return Checkpoint(entity, journal=(value,), segment=segment)

    def _snapshot(
        self, pipeline: EntityPipeline, models: bytes | None, evicted: bool = False
    ) -> Checkpoint:
        """The entity's windows snapshot, taken anew (the first, on eviction, or once the
        journal since outweighs it or fills its segments, see :mod:`.journal`): its journal
        starts again at segment 0. Evicted, the entity's segment keys are deleted."""
        entity = pipeline.entity
        snapshot = pipeline.windows_bytes()
        self._snapshots[entity] = (journal.identity(snapshot), len(snapshot))
        self._journals[entity] = bytearray()
        self._segments.pop(entity, None)
        self._unsaved.pop(entity, None)
        dropped = self._segment_keys.pop(entity, 0) if evicted else 0
        return Checkpoint(entity, snapshot, models=models, drop_segments=dropped)

    def evict_idle(self, now_s: float, out: Outputs) -> list[str]:
        """Move entities idle for ``entity_idle_s`` out of memory, their whole state
        checkpointed; they come back from it with their next record."""
        idle_before = now_s - self.settings.entity_idle_s
        idle = []
        for entity, seen in self.last_seen_s.items():  # the least recently seen first
            if seen > idle_before:
                break
            if entity not in self._pending:
                idle.append(entity)
        for entity in idle:
            pipeline = self.entities[entity]
            out.checkpoints.append(self._snapshot(pipeline, pipeline.models_bytes(), evicted=True))
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
            self._snapshots,
            self._journals,
            self._segments,
            self._segment_keys,
            self._unsaved,
        ):
            held.pop(entity, None)

    def revoked(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Partitions another worker owns now: forget them and their entities."""
        lost = set()
        for topic, partition in partitions:
            self.progress.pop((topic, partition), None)
            if topic == topics.METRICS.name:
                lost.add(partition)
            elif topic == self.routing_topic:
                self._workflow_clocks.pop(partition, None)
        for entity in [e for e, p in self.entity_partition.items() if p in lost]:
            self._forget(entity)

    # -- the clock ----------------------------------------------------------------------------
    def tick(self, now_s: float) -> Outputs:
        """Once a second: close the steps of idle partitions' entities (their watermark
        follows wall time), evict idle entities, and judge stalled and abandoned workflows
        (their event time follows wall time too once their steps stop arriving)."""
        out = self.outputs()
        for entity, pipeline in self.entities.items():
            partition = self.entity_partition.get(entity)
            if partition is None or entity in self._pending:
                continue
            progress = self.progress[(topics.METRICS.name, partition)]
            watermark = progress.watermark(now_s, self.settings.idle_timeout_s)
            if watermark > progress.max_event_ms and pipeline.due(watermark):
                step_ms = pipeline.next_step_ms()
                cause = Message(
                    topics.METRICS.name, partition, pipeline.last_offset, entity.encode(), b""
                )
                self._pending[entity] = _Due(pipeline, step_ms, now_s * 1000, cause)
        self._step(out)
        self.evict_idle(now_s, out)
        if self.workflows.flight:
            for alert in self.workflows.advance(self._workflow_watermark(now_s)):
                self.alert(alert, None, out)
        return out

    def serve(self, models: list[BatchModel], feature_drift: FeatureDriftWatch | None) -> None:
        """Score with ``models`` from now on, and watch the production model's features with
        ``feature_drift`` unless the watch of that very version (same content hash) runs. A
        replaced watch whose alert fires has it resolved at the next :meth:`watch_drift`."""
        self.batch_models = models
        metrics.MODEL_TRAFFIC.clear()
        for model in models:
            low, high = model.arm
            share = 0.0 if model.shadow else high - low
            metrics.MODEL_TRAFFIC.labels(model.name, model.version).set(share)
        current = self.feature_drift
        same = (
            current is not None
            and feature_drift is not None
            and (current.model, current.content_hash)
            == (feature_drift.model, feature_drift.content_hash)
        )
        if same:
            return
        if current is not None and current.alert_state.firing:
            self._retired_drift.append(current)
        self.feature_drift = feature_drift

    def watch_drift(self, now_ms: int) -> Outputs:
        """Has the forecasters' error drifted, or the production batch model's features?
        Raise (or clear) each one's ``model_drift`` alert."""
        out = self.outputs()
        for retired in self._retired_drift:
            ended = retired.retire(now_ms)
            if ended is not None:
                self.alert(ended, None, out)
        self._retired_drift.clear()
        watch = self.feature_drift
        if watch is not None:
            alert = watch.alert(now_ms)
            metrics.DRIFT_STATE.labels(watch.model, "features").set(float(watch.alert_state.firing))
            if alert is not None:
                self.alert(alert, None, out)
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
        predictions, health alerts; each event, and the loads of the agents it changed, go
        on to the routing step keyed by task type."""
        out = self.outputs()
        loaded: set[str] = set()
        for item in inputs:
            self._consumed(item.message, now_s)
            try:
                agent = self._agent_event(item, now_s, out)
            except Exception as error:
                self._internal_error(item.message, error, out)
                continue
            if agent is not None:
                loaded.add(agent)
        self._send_loads(loaded, out)
        return out

    def _agent_event(self, item: Input, now_s: float, out: Outputs) -> str | None:
        """One AgentEvent; returns its agent, or None when it was dead-lettered."""
        message = item.message
        record = self._decode(message, topics.AGENT_EVENTS, out)
        if record is None:
            return None
        rejection = check_agent_event(record, int(now_s * 1000), self.limits)
        if rejection:
            out.dead(rejected(message, rejection.kind, rejection.reason))
            return None
        step = self.agents.observe(record)
        agent, task_type, task_id = record["agent"], record["task_type"], record["task_id"]
        if step is None:
            self.concurrency.started(agent, task_id)
        else:
            self.concurrency.finished(agent, task_id, _residual(record, step.stats.log_mean))
            self._agent_step(step, item, out)
        event = {
            "kind": "event", "agent": agent, "task_id": task_id, "phase": record["phase"],
            "duration_ms": record["duration_ms"], "t_ms": record["event_time"],
        }  # fmt: skip
        out.raw(self.routing_topic, task_type.encode(), json.dumps(event).encode(), message)
        workflow_id = record["workflow_id"]
        if workflow_id is not None:
            followed = {"kind": "workflow", **{k: record[k] for k in _WORKFLOW_FIELDS}}
            value = json.dumps(followed).encode()
            out.raw(self.routing_topic, workflow_id.encode(), value, message)
        return str(agent)

    def _agent_step(self, step: AgentStep, item: Input, out: Outputs) -> None:
        wall_ms = time.time() * 1000
        latency_from = item.timestamp_ms if item.timestamp_ms else wall_ms
        step.predictions["emitted_at"] = int(wall_ms)
        step.predictions["latency_ms"] = max(0.0, wall_ms - latency_from)
        metrics.EVENT_TO_PREDICTION.observe(step.predictions["latency_ms"] / 1000)
        out.emit(topics.FEATURES, step.features["entity"], step.features, item.message)
        out.emit(topics.PREDICTIONS, step.predictions["entity"], step.predictions, item.message)
        for alert in step.alerts:
            self.alert(alert, item.message, out)

    def _send_loads(self, agents: Iterable[str], out: Outputs) -> None:
        """Each changed agent's tasks in flight and recommended limit, to the routing step of
        every task type it takes: a task type's decisions weigh all of an agent's work."""
        by_type: dict[str, dict[str, list[int]]] = defaultdict(dict)
        for agent in agents:
            load = [self.concurrency.in_flight(agent), self.concurrency.limit(agent)]
            for task_type in self.agents.stats.get(agent, ()):
                by_type[task_type][agent] = load
        for task_type, loads in by_type.items():
            update = json.dumps({"kind": "loads", "loads": loads}).encode()
            out.raw(self.routing_topic, task_type.encode(), update, None)

    # -- routing.requests ---------------------------------------------------------------------
    def routing_requests(
        self,
        inputs: Iterable[Input],
        now_s: float,
        decides_here: Callable[[bytes], bool] = lambda task_type: False,
    ) -> Outputs:
        """RoutingRequests, checked, on to the routing step of their task type: decided at
        once when ``decides_here`` says this worker holds that step (the internal topic's
        partition of the task type), through the internal topic otherwise."""
        out = self.outputs()
        now_ms = int(now_s * 1000)
        for item in inputs:
            self._consumed(item.message, now_s)
            record = self._decode(item.message, topics.ROUTING_REQUESTS, out)
            if record is None:
                continue
            rejection = check_routing_request(record, now_ms, self.limits)
            if rejection:
                out.dead(rejected(item.message, rejection.kind, rejection.reason))
                continue
            request = {"kind": "request", "request": record,
                       "arrived_ms": item.timestamp_ms or now_ms}  # fmt: skip
            key = record["task_type"].encode()
            if not decides_here(key):
                out.raw(self.routing_topic, key, json.dumps(request).encode(), item.message)
                continue
            try:
                self._decide(record["task_type"], request, item.message, now_s, out)
            except Exception as error:
                self._internal_error(item.message, error, out)
        return out

    # -- the routing step ---------------------------------------------------------------------
    def route(self, inputs: Iterable[Input], now_s: float) -> Outputs:
        """Records of the routing topic: an agent event teaches the policy (and refreshes
        the standing advice and the pool's scaling advice), a load update sets agents'
        loads, a request gets its decision (these keyed by task type); a workflow's event
        (keyed by workflow id) updates its patterns and its kind's advice."""
        out = self.outputs()
        for item in inputs:
            message = item.message
            self._consumed(message, now_s)
            try:
                self._route(message, now_s, out)
            except Exception as error:
                self._internal_error(message, error, out)
        return out

    def _route(self, message: Message, now_s: float, out: Outputs) -> None:
        task_type = (message.key or b"").decode()
        update = json.loads(message.value)
        if update["kind"] == "workflow":
            self._workflow_step(update, message, now_s, out)
        elif update["kind"] == "loads":
            for agent, (in_flight, limit) in update["loads"].items():
                self.policy.observe_load(agent, in_flight, limit)
        elif update["kind"] == "request":
            self._decide(task_type, update, message, now_s, out)
        else:
            self._learn(task_type, update, out)

    def _learn(self, task_type: str, event: Record, out: Outputs) -> None:
        agent, t_ms = event["agent"], event["t_ms"]
        if event["phase"] == "STARTED":
            self.policy.started(agent, event["task_id"])
            return
        self.policy.learn(agent, task_type, event["duration_ms"], event["phase"] == "SUCCEEDED")
        standing = self.policy.decide(task_type, (), t_ms, explore=False)
        out.emit(topics.ROUTING, task_type, self.policy.decision_record(task_type, standing, t_ms),
                 None)  # fmt: skip
        if self.scaling.due(task_type, t_ms):
            self._advise_scaling(task_type, t_ms, out)

    def _advise_scaling(self, task_type: str, t_ms: int, out: Outputs) -> None:
        """The pool of ``task_type`` (the agents known for it): its demand (their load) and
        capacity (their limits), and the advice to add agents, as a SCALING prediction."""
        pool = self.policy.arms[task_type].agents
        loads = [self.policy.load_of(agent, t_ms) for agent in pool]
        advice = self.scaling.observe(
            task_type, t_ms, float(sum(load for load, _ in loads)), len(pool),
            float(sum(limit for _, limit in loads)),
        )  # fmt: skip
        if advice is None:
            return
        entity = f"pool:{task_type}"
        batch = {
            "prediction_id": f"{entity}@{t_ms}", "entity": entity, "event_time": t_ms,
            "emitted_at": int(time.time() * 1000), "latency_ms": 0.0,
            **scaling_predictions([advice], t_ms),
        }  # fmt: skip
        out.emit(topics.PREDICTIONS, entity, batch, None, ("predictions",))

    def _workflow_step(self, event: Record, message: Message, now_s: float, out: Outputs) -> None:
        """An event of a workflow (keyed by its id): its pattern alerts and advice."""
        clock = self._workflow_clocks.setdefault(message.partition, PartitionProgress())
        clock.max_event_ms = max(clock.max_event_ms, min(event["event_time"], int(now_s * 1000)))
        clock.last_arrival_s = now_s
        for alert in self.workflows.observe(event, self._workflow_watermark(now_s)):
            self.alert(alert, message, out)

    def _workflow_watermark(self, now_s: float) -> int:
        """How far workflows' event time has surely come: the least watermark of the routing
        partitions that carried workflow steps. The newest step of any partition would make
        the workflows of a partition read behind the others look quiet, and stalled."""
        idle_s = self.settings.idle_timeout_s
        clocks = self._workflow_clocks.values()
        return min((c.watermark(now_s, idle_s) for c in clocks), default=int(now_s * 1000))

    def _decide(
        self, task_type: str, update: Record, message: Message, now_s: float, out: Outputs
    ) -> None:
        request = update["request"]
        now_ms = int(now_s * 1000)
        try:
            choice = self.policy.decide(task_type, request["candidates"], now_ms)
        except ValueError as error:
            out.dead(rejected(message, "invalid_value", str(error)))
            return
        self.policy.assigned(choice.agent, request["task_id"], now_ms)
        decision = self.policy.decision_record(
            task_type, choice, now_ms, request["task_id"], request["deadline"], request["priority"]
        )
        out.emit(topics.ROUTING, request["task_id"], decision, message)
        metrics.ROUTING_DECISION.observe(max(0.0, now_ms - update["arrived_ms"]) / 1000)

    def held_bytes(self) -> dict[str, int]:
        """Bytes the engine holds, by holder (Python objects aside): the model states of the
        series in memory (``model_states``) and the rows allocated for them (rows never used
        are untouched: address space, not memory), the windows, and the checkpoint values
        kept between passes (each entity's journal of the records since its snapshot)."""
        arenas = (self.models.states, self.models.entity_states)
        window_row = self.models.windows.row_bytes  # in the model states' rows
        return {
            "model_states": sum(a.rows_in_use * a.row_bytes for a in arenas)
            - self.models.states.rows_in_use * window_row,
            "model_states_allocated": sum(a.rows_allocated * a.row_bytes for a in arenas)
            - self.models.states.rows_allocated * window_row,
            "windows": self.models.states.rows_in_use * window_row,
            "checkpoint_values": sum(map(len, self._journals.values())),
        }

    def health_fields(self) -> Record:
        """What ``/health`` reports of the engine."""
        return {
            "partitions": len(self.progress),
            "consumed": {f"{t}:{p}": s.last_offset for (t, p), s in self.progress.items()},
            "skipped_offsets": sum(s.skipped for s in self.progress.values()),
            "entities": len(self.entities),
            "workflows": len(self.workflows.flight),
            "workflows_learned": self.workflows.learned,
            "workflows_dropped": self.workflows.dropped,
        }

    def stalled(self) -> list[str]:
        return [f"{t}:{p}" for (t, p), s in self.progress.items() if s.stalled]


#: What the workflow step needs of an AgentEvent.
_WORKFLOW_FIELDS = ("workflow_id", "task_id", "parent_task_id", "step", "task_type", "phase",
                    "event_time", "error_class")  # fmt: skip


def _residual(event: Record, log_mean: float) -> float | None:
    """A succeeded run's log-duration against its agent's mean for the task type (how much
    slower it ran than usual); None for a run that says nothing of speed."""
    duration = event["duration_ms"]
    if event["phase"] != "SUCCEEDED" or duration is None or not duration > 0:
        return None
    return math.log(duration) - log_mean


def _listed(items: Iterable[str], most: int = 5) -> str:
    """The first ``most`` items, each cut to 120 characters, and how many more."""
    items = list(items)
    shown = ", ".join(item[:120] for item in items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def inputs_of(messages: Sequence[Any]) -> list[Input]:
    """Faust messages (or anything with their Kafka coordinates, timestamp and headers) as
    inputs."""
    return [
        Input(
            Message(m.topic, m.partition, m.offset, m.key, m.value),
            int(m.timestamp * 1000) if m.timestamp else None,
            is_probe(m.headers),
        )
        for m in messages
    ]


def routed_request(value: bytes, codec: Codec) -> Record | None:
    """The RoutingRequest in a routing record's value: the request itself (as produced to
    ``routing.requests``) or the routing step's record that carries it to the worker holding
    its task type; None for anything else. ``POST /v1/route`` reads the dead letters of
    refused requests with it."""
    try:
        name, record = codec.decode(value)
    except DecodeError:
        pass
    else:
        return record if name == "routing_request" else None
    try:
        update = json.loads(value)
    except ValueError:
        return None
    if isinstance(update, dict) and update.get("kind") == "request":
        request = update.get("request")
        return request if isinstance(request, dict) else None
    return None
