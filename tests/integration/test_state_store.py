"""The worker's state against a real Kafka: local state ahead of its changelog, and an
entity's keys (windows snapshot and journal segments) in its changelog."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rocksdict
from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from faust.stores.rocksdb import Store

from connectors.kafka_admin import TopicRequest, ensure_topics
from connectors.kafka_clients import KafkaConfig
from connectors.kafka_producer import RecordProducer
from models.entity import step_end_after, step_phase_ms
from streams import topics
from streams.commands.tail import topic_partitions
from streams.engine import journal
from streams.settings import Settings
from streams.state_store import discard_stale_state, journal_key, key_partition
from streams.worker_process import WorkerProcess
from tests.integration.kafka_io import produce


def _local_db(path: Path, offset: int) -> None:
    db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
    db[Store.offset_key] = str(offset).encode()
    db[b"web-1"] = b"state"
    db.close()


def test_key_partition_is_kafkas_default_partitioner() -> None:
    partitioner = DefaultPartitioner()
    for key in (b"web-1", b"host-42", "ünïcode".encode(), b"x" * 300):
        assert key_partition(key, 6) == partitioner(key, list(range(6)), list(range(6)))


def test_an_entitys_journal_keys_are_its_own_and_in_its_partition() -> None:
    for partitions in (1, 6, 32):
        for key in (b"web-1", b"host-42", "ünïcode".encode()):
            segments = [journal_key(key, partitions, segment) for segment in range(40)]
            assert len(set(segments)) == 40 and key not in segments
            assert journal_key(key, partitions) == segments[0]
            for segment in segments:
                assert segment.startswith(key + b"\x00")
                assert key_partition(segment, partitions) == key_partition(key, partitions)


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


def _tenths_of_a_step(settings: Settings, entity: str, count: int) -> list[dict[str, Any]]:
    """``count`` one-sample records of ``entity`` a tenth of a step apart, from the start of
    one of its steps two minutes ago (each entity's steps end on a phase of its own): the
    eleventh closes the first step."""
    phase_ms = step_phase_ms(entity, settings.step_s)
    start = step_end_after(int(time.time() * 1000) - 120_000, phase_ms, settings.step_s)
    step_ms = int(settings.step_s * 1000)
    return [
        {"entity": entity, "event_time": start + k * step_ms // 10, "labels": {},
         "names": ["cpu_percent"], "values": [float(k)], "source": "test"}
        for k in range(count)
    ]  # fmt: skip


Written = dict[bytes, list[tuple[int, int, bytes | None]]]


async def _changelog_until(
    kafka: KafkaConfig,
    topic: str,
    keys: tuple[bytes, ...],
    done: Callable[[Written], bool],
    timeout_s: float,
) -> Written:
    """The ``(partition, offset, value)`` records of ``keys`` in ``topic`` from its start,
    read until ``done(written)`` holds (fails after ``timeout_s``)."""
    consumer = kafka.consumer(enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while topic not in await consumer.topics():
            assert time.monotonic() < deadline, f"the worker never created {topic}"
            await asyncio.sleep(0.2)
        partitions = await topic_partitions(kafka, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        written: Written = {key: [] for key in keys}
        while not done(written):
            assert time.monotonic() < deadline, f"{topic} after {timeout_s}s: {written}"
            for messages in (await consumer.getmany(timeout_ms=250)).values():
                for m in messages:
                    if m.key in written:
                        written[m.key].append((m.partition, m.offset, m.value))
        return written
    finally:
        await consumer.stop()


def _holds(key: bytes) -> Callable[[Written], bool]:
    return lambda written: any(value for _, _, value in written[key])


@pytest.mark.integration
async def test_an_entitys_journal_goes_with_its_snapshot_and_eviction_leaves_the_snapshot(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    worker_id, entity = f"test-journal-{unique}", f"journal-{unique}"
    key = entity.encode()
    first, second = (journal_key(key, stack_settings.topic_partitions, n) for n in (0, 1))
    keys = (key, first, second)
    topic, kafka = f"{worker_id}-entity-windows-changelog", stack_settings.kafka()
    records = _tenths_of_a_step(stack_settings, entity, 13)
    worker = WorkerProcess(
        stack_settings, worker_id, tmp_path / "worker.log", FORESIGHT_ENTITY_IDLE_S="5"
    ).start()
    try:
        await worker.ready()
        # Up to the record that closes the first step: a snapshot, and no journal.
        await produce(kafka, topics.METRICS, "entity", records[:11])
        await _changelog_until(kafka, topic, keys, lambda w: bool(w[key]), 90)
        # A record of the next step, then another in a later pass: a journal segment each.
        for record, segment in zip(records[11:], (first, second), strict=True):
            await produce(kafka, topics.METRICS, "entity", [record])
            await _changelog_until(kafka, topic, keys, _holds(segment), 90)
        # Idle for 5 s, the entity is evicted: a last snapshot, then its segments' tombstones.
        written = await _changelog_until(
            kafka,
            topic,
            keys,
            lambda w: all(w[s] and w[s][-1][2] is None for s in (first, second)),
            90,
        )
    finally:
        worker.stop()
    partition = key_partition(key, stack_settings.topic_partitions)
    assert {p for k in keys for p, _, _ in written[k]} == {partition}
    # One segment each, the first before the second, each holding its pass' record alone.
    (one, none), (two, gone) = written[first], written[second]
    assert one[2] and two[2] and one[1] < two[1] and none[2] is None and gone[2] is None
    before = [value for _, at, value in written[key] if at < one[1]][-1] or b""
    assert [len(journal.records([s], before)) for s in (one[2], two[2])] == [1, 1]
    snapshot = written[key][-1]
    assert snapshot[2] and snapshot[1] < none[1], "the snapshot goes before the tombstones"
    # Compacted (each key's last record, tombstones removed): the snapshot alone is left.
    compacted = {k: w[-1][2] for k, w in written.items() if w[-1][2] is not None}
    assert compacted == {key: snapshot[2]}


def _on_disk(data_dir: Path, table: str, partition: int, key: bytes) -> bytes | None:
    """``key`` in a worker's local database of ``table``, as a process that opens its files
    now reads it (what is only in the worker's memory is not there)."""
    paths = list(data_dir.rglob(f"{table}-{partition}.db"))
    if not paths:
        return None
    db = rocksdict.Rdict(
        str(paths[0]),
        options=rocksdict.Options(raw_mode=True),
        access_type=rocksdict.AccessType.read_only(),
    )
    try:
        value: bytes | None = db.get(key)
        return value
    finally:
        db.close()


@pytest.mark.integration
async def test_local_state_reaches_disk_on_the_flush_timer_and_on_a_clean_stop(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    """The store writes without RocksDB's write-ahead log: what a worker wrote is on disk
    after its next flush, and after a clean stop (here, before a timer that never comes)."""
    entity = f"flush-{unique}"
    key, kafka = entity.encode(), stack_settings.kafka()
    partition = key_partition(key, stack_settings.topic_partitions)
    records = _tenths_of_a_step(stack_settings, entity, 11)
    workers = {}
    for name, flush_s in (("flushing", "1"), ("stopping", "3600")):
        (tmp_path / name).mkdir()
        workers[name] = WorkerProcess(
            stack_settings,
            f"test-{name}-{unique}",
            tmp_path / name / "worker.log",
            FORESIGHT_WORKER_STORE_FLUSH_S=flush_s,
        ).start()

    def on_disk(name: str) -> bytes | None:
        return _on_disk(tmp_path / name, "entity-windows", partition, key)

    async def snapshots(name: str) -> list[bytes | None]:
        topic = f"{workers[name].group}-entity-windows-changelog"
        written = await _changelog_until(kafka, topic, (key,), _holds(key), 90)
        return [value for _, _, value in written[key]]

    try:
        for worker in workers.values():
            await worker.ready()
        await produce(kafka, topics.METRICS, "entity", records)  # a step: a snapshot
        deadline = time.monotonic() + 60
        while on_disk("flushing") is None:
            assert time.monotonic() < deadline, "the flush timer never wrote the snapshot"
            await asyncio.sleep(0.5)
        workers["flushing"].kill9()
        assert on_disk("flushing") in await snapshots("flushing")
        await snapshots("stopping")  # written, and still in the worker's memory only
        workers["stopping"].stop()
        assert on_disk("stopping") == (await snapshots("stopping"))[-1]
        # Recorded beside the values: the changelog offset the database holds up to, which
        # a restart reads on from; every record the worker wrote was acknowledged first.
        changelog = TopicPartition(
            f"{workers['stopping'].group}-entity-windows-changelog", partition
        )
        consumer = kafka.consumer(enable_auto_commit=False)
        await consumer.start()
        try:
            end = (await consumer.end_offsets([changelog]))[changelog]
        finally:
            await consumer.stop()
        recorded = _on_disk(tmp_path / "stopping", "entity-windows", partition, Store.offset_key)
        assert recorded == str(end - 1).encode(), f"recorded offset {recorded!r}, end {end}"
    finally:
        for worker in workers.values():
            worker.stop()
