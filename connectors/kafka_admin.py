"""Kafka administration the command line needs: create topics idempotently."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from connectors.kafka_clients import KafkaConfig


@dataclass(frozen=True)
class TopicRequest:
    """A topic to exist, with its partitions and broker-side configuration."""

    name: str
    partitions: int
    config: Mapping[str, str]


async def ensure_topics(kafka: KafkaConfig, topics: Sequence[TopicRequest]) -> dict[str, str]:
    """Create the topics that do not exist; returns ``{name: "created" | "exists"}``."""
    admin = kafka.admin(client_id="foresight-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        outcome = {t.name: "exists" for t in topics if t.name in existing}
        for topic in missing:
            new = NewTopic(
                name=topic.name,
                num_partitions=topic.partitions,
                replication_factor=1,
                topic_configs=dict(topic.config),
            )
            try:
                await admin.create_topics([new])
                outcome[topic.name] = "created"
            except TopicAlreadyExistsError:  # created concurrently by another process
                outcome[topic.name] = "exists"
        return outcome
    finally:
        await admin.close()
