"""Every Kafka topic of Foresight, declared once: name, key, record schema and layout.

``foresight topics create`` makes them all, idempotently. Latest-state topics are compacted
(only the newest record per key matters); event topics are deleted by retention.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from connectors.alert_payloads import TARGETS
from schemas.json_form import json_form
from streams.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    """One topic: what it carries and how the broker keeps it."""

    name: str
    schema: str  # the Avro schema of its records, or "json" for the JSON twins
    key: str
    doc: str
    compacted: bool = False
    partitions: int | None = None  # None: the FORESIGHT_TOPIC_PARTITIONS setting
    retention_hours: Callable[[Settings], int] | None = None  # None: the topics' setting

    def config(self, settings: Settings) -> dict[str, str]:
        """Broker-side topic configuration."""
        if self.compacted:
            return {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
        hours = (self.retention_hours or _topic_retention_hours)(settings)
        retention_ms = hours * 3600 * 1000
        return {"cleanup.policy": "delete", "retention.ms": str(retention_ms)}

    def partition_count(self, settings: Settings) -> int:
        return self.partitions or settings.topic_partitions


def _topic_retention_hours(settings: Settings) -> int:
    return settings.topic_retention_hours


METRICS = TopicSpec(
    "telemetry.metrics", "metric_batch", "entity", "MetricBatch per entity per scrape"
)
AGENT_EVENTS = TopicSpec("telemetry.agent-events", "agent_event", "agent", "agent task lifecycle")
LABELS = TopicSpec("telemetry.labels", "label", "entity", "ground truth: incidents and failures")
DEADLETTER = TopicSpec("telemetry.deadletter", "dead_letter", "source key", "rejected records")
FEATURES = TopicSpec("features", "feature_vector", "entity", "features per entity per step")
PREDICTIONS = TopicSpec("predictions", "prediction_batch", "entity", "predictions per step")
ALERTS = TopicSpec("alerts", "alert", "dedup key", "alert state changes")
ROUTING_REQUESTS = TopicSpec(
    "routing.requests", "routing_request", "task id", "tasks asking for an agent"
)
ROUTING = TopicSpec(
    "routing.decisions",
    "routing_decision",
    "task id (task type for standing advice)",
    "agent advice",
)
MODEL_UPDATES = TopicSpec(
    "models.updates", "model_update", "model name", "registry changes", compacted=True, partitions=1
)
QUALITY = TopicSpec(
    "telemetry.code-quality",
    "code_quality_snapshot",
    "repository",
    "code quality per commit",
    # The quality processor rebuilds a repository's history from this topic when it starts.
    retention_hours=lambda settings: settings.quality_retention_days * 24,
)
AUDIT = TopicSpec("audit", "audit_event", "key id", "who did what, when, from where, and how")


@dataclass(frozen=True)
class JsonTwin:
    """A topic that carries another's records as JSON, for readers of neither Avro nor a
    registry: the twin's topic, the topic it copies, and what each record becomes."""

    spec: TopicSpec
    source: TopicSpec
    build: Callable[[Mapping[str, Any]], Any]


#: The JSON twins of ``alerts``, one per alerting tool, that Kafka Connect HTTP sinks carry.
ALERT_TARGET_TWINS: tuple[JsonTwin, ...] = tuple(
    JsonTwin(
        TopicSpec(t.topic, "json", "dedup key", f"alerts as {t.name} payloads"), ALERTS, t.build
    )
    for t in TARGETS.values()
)
#: Every output topic as its records' JSON form (``FORESIGHT_JSON_TWINS``).
RECORD_TWINS: tuple[JsonTwin, ...] = tuple(
    JsonTwin(
        TopicSpec(f"{s.name}.json", "json", s.key, f"{s.doc}, as JSON"), s, json_form(s.schema)
    )
    for s in (FEATURES, PREDICTIONS, ALERTS, ROUTING)
)
JSON_TOPICS: tuple[TopicSpec, ...] = tuple(t.spec for t in (*ALERT_TARGET_TWINS, *RECORD_TWINS))


def json_twins(settings: Settings) -> dict[str, tuple[JsonTwin, ...]]:
    """The JSON twins the worker writes, by the topic they copy."""
    twins = ALERT_TARGET_TWINS + (RECORD_TWINS if settings.json_twins else ())
    return {
        source: tuple(t for t in twins if t.source.name == source)
        for source in {t.source.name for t in twins}
    }


ALL_TOPICS: tuple[TopicSpec, ...] = (
    METRICS,
    AGENT_EVENTS,
    LABELS,
    DEADLETTER,
    FEATURES,
    PREDICTIONS,
    ALERTS,
    ROUTING_REQUESTS,
    ROUTING,
    MODEL_UPDATES,
    AUDIT,
    QUALITY,
)


def routing_stats(settings: Settings) -> TopicSpec:
    """The worker's internal topic that carries agent statistics to its routing step, and
    workflows' events to the same step (keyed by workflow id)."""
    return TopicSpec(
        f"{settings.worker_id}-routing-stats",
        "json",
        "task type (workflow id for a workflow's events)",
        "agent statistics to route, workflow events to follow",
    )


def audit_topic(settings: Settings) -> TopicSpec:
    """The audit topic, named by ``FORESIGHT_AUDIT_TOPIC`` (``audit`` by default)."""
    return replace(AUDIT, name=settings.audit_topic)


def data_topics(settings: Settings) -> tuple[TopicSpec, ...]:
    """Every data topic, as the settings name them: what the sink stores."""
    return tuple(audit_topic(settings) if t is AUDIT else t for t in ALL_TOPICS)
