"""The worker's RocksDB state against a real Kafka: local state ahead of its changelog."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import rocksdict
from aiokafka.partitioner import DefaultPartitioner
from faust.stores.rocksdb import Store

from connectors.kafka_admin import TopicRequest, ensure_topics
from connectors.kafka_producer import RecordProducer
from streams.settings import Settings
from streams.state_store import discard_stale_state, key_partition


def _local_db(path: Path, offset: int) -> None:
    db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
    db[Store.offset_key] = str(offset).encode()
    db[b"web-1"] = b"state"
    db.close()


def test_key_partition_is_kafkas_default_partitioner() -> None:
    partitioner = DefaultPartitioner()
    for key in (b"web-1", b"host-42", "ünïcode".encode(), b"x" * 300):
        assert key_partition(key, 6) == partitioner(key, list(range(6)), list(range(6)))


@pytest.mark.integration
def test_local_state_ahead_of_its_changelog_is_dropped_and_the_rest_kept(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    topic = f"test-{unique}-entity-windows-changelog"
    kafka = stack_settings.kafka()
    asyncio.run(ensure_topics(kafka, [TopicRequest(topic, 2, {})]))

    async def fill() -> None:
        producer = RecordProducer(kafka)
        await producer.start()
        try:
            for _ in range(5):
                await producer.send_to_partition(topic, 0, b"web-1", b"state")
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(fill())
    _local_db(tmp_path / "entity-windows-0.db", 4)  # partition 0 ends at 5: in step
    _local_db(tmp_path / "entity-windows-1.db", 6)  # partition 1 is empty: a recreated topic
    dropped = discard_stale_state(tmp_path, kafka, [("entity-windows", topic)])
    assert dropped == [tmp_path / "entity-windows-1.db"]
    assert (tmp_path / "entity-windows-0.db").is_dir()
    assert not (tmp_path / "entity-windows-1.db").exists()
