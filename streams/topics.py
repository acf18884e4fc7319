"""Every Kafka topic of Foresight, declared once: name, key, record schema and layout.

``foresight topics create`` makes them all, idempotently. Latest-state topics are compacted
(only the newest record per key matters); event topics are deleted by retention.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from connectors.alert_payloads import TARGETS
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

    def config(self, settings: Settings) -> dict[str, str]:
        """Broker-side topic configuration."""
        if self.compacted:
            return {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
        retention_ms = settings.topic_retention_hours * 3600 * 1000
        return {"cleanup.policy": "delete", "retention.ms": str(retention_ms)}

    def partition_count(self, settings: Settings) -> int:
        return self.partitions or settings.topic_partitions


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
AUDIT = TopicSpec("audit", "audit_event", "key id", "who did what, when, from where, and how")

#: The JSON twins of ``alerts``, one per alerting tool, that Kafka Connect HTTP sinks carry.
ALERT_JSON_TOPICS: tuple[TopicSpec, ...] = tuple(
    TopicSpec(t.topic, "json", "dedup key", f"alerts as {t.name} payloads (JSON)")
    for t in TARGETS.values()
)

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
)


def audit_topic(settings: Settings) -> TopicSpec:
    """The audit topic, named by ``FORESIGHT_AUDIT_TOPIC`` (``audit`` by default)."""
    return replace(AUDIT, name=settings.audit_topic)


def data_topics(settings: Settings) -> tuple[TopicSpec, ...]:
    """Every data topic, as the settings name them: what the sink stores."""
    return tuple(audit_topic(settings) if t is AUDIT else t for t in ALL_TOPICS)
