"""Kafka administration the command line needs: create topics idempotently, and only return
once the brokers' metadata lists them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest

from connectors.kafka_clients import KafkaConfig


@dataclass(frozen=True)
class TopicRequest:
    """A topic to exist, with its partitions and broker-side configuration."""

    name: str
    partitions: int
    config: Mapping[str, str]


async def ensure_topics(
    kafka: KafkaConfig, topics: Sequence[TopicRequest], listed_within_s: float = 60.0
) -> dict[str, str]:
    """Create the topics that do not exist; returns ``{name: "created" | "exists"}`` once the
    metadata lists every one with a leader for each partition.

    A broker accepts a creation before its metadata has the topic (a broker that has just
    started: seconds). A client that asks in between is told the topic does not exist: Faust's
    consumer then leaves it out of its assignment until the next rebalance, and its producer
    cannot partition a record for it. Raises :class:`KafkaError` when the metadata does not
    list them within ``listed_within_s``.
    """
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
    finally:
        await admin.close()
    await until_listed(kafka, [t.name for t in topics], listed_within_s)
    return outcome


async def until_listed(kafka: KafkaConfig, names: Sequence[str], timeout_s: float) -> None:
    """Wait until the metadata lists each topic of ``names`` with a leader for each partition
    (asked without creating a topic that is missing); :class:`KafkaError` naming the others
    after ``timeout_s``."""
    if not names:
        return
    client = kafka.client(client_id="foresight-admin")
    await client.bootstrap()
    try:
        deadline = time.monotonic() + timeout_s
        request = MetadataRequest(list(names), allow_auto_topic_creation=False)
        while True:
            answer = (await client.send(client.get_random_node(), request)).to_object()
            missing = sorted(
                t["topic"]
                for t in answer["topics"]
                if t["error_code"] or not t["partitions"]
                or any(p["leader"] < 0 for p in t["partitions"])
            )  # fmt: skip
            if not missing:
                return
            if time.monotonic() > deadline:
                raise KafkaError(
                    f"Kafka at {kafka.bootstrap_servers} accepted the topics "
                    f"{', '.join(missing)} but its metadata did not list them with a leader "
                    f"for every partition within {timeout_s:g} s: is a broker down?"
                )
            await asyncio.sleep(0.2)
    finally:
        await client.close()
