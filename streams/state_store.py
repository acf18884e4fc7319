"""Where a worker keeps its entity state on disk: Faust's RocksDB store, made safe for us.

Faust's RocksDB store files a key under the partition of the *current event*. The worker
writes an entity's state outside any one event (after a whole poll batch, or on a timer), so
there is no current event (Faust asserts) or it is another entity's (the key lands in the
wrong partition's database, and a rebalance serves it stale). :class:`EntityRocksStore` files
every key under its own partition instead: Kafka's default partitioner (murmur2 of the key),
the partition the table's changelog record goes to (``use_partitioner``) and the partition the
entity's telemetry arrives on.

Local state is a cache of the changelog, so its writes skip RocksDB's write-ahead log (a
``write`` system call each: 5,000 a second at 50,000 samples/s), as Kafka Streams' state
stores do: the changelog is the log. RocksDB writes a partition's records to disk in order,
one memory table at a time, with the changelog offset Faust records beside them, so the
database on disk always holds a prefix of the changelog and the offset it ends at.
:meth:`EntityRocksStore.flush` writes the memory tables out (the worker does every
``FORESIGHT_WORKER_STORE_FLUSH_S``), and so does RocksDB when Faust closes a database (a
revoke, a stop): after ``kill -9`` a worker reads from the changelog what was written since.

:func:`discard_stale_state` drops a partition's local database whose recorded changelog
offset is beyond the changelog's end (the topic was recreated, say by ``stack down
--wipe``): Faust would refuse to start with a ``ConsistencyError``; the worker rebuilds that
partition from the changelog instead.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import faust
import faust.stores
import rocksdict
from aiokafka import TopicPartition
from aiokafka.partitioner import murmur2
from faust.stores import rocksdb

from connectors.kafka_clients import KafkaConfig

log = logging.getLogger(__name__)

STORE_SCHEME = "foresight-rocksdb"
_OFFSET_KEY = rocksdb.Store.offset_key


@functools.lru_cache(maxsize=1 << 18)
def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (Java's and aiokafka's);
    cached, as a worker writes the same keys again and again (murmur2 is Python code)."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


def journal_key(key: bytes, partitions: int, segment: int = 0) -> bytes:
    """The key of segment ``segment`` of the entity ``key``'s windows journal: the
    ``segment``-th (from 0) of ``key`` + NUL + ``journal<n>`` that Kafka's partitioner files
    in the entity's own partition.

    The worker holds, recovers and hands over a table's keys by partition, and Kafka keeps a
    partition's records in order: so the journal lives with its entity, and is never newer
    in the changelog than the snapshot it was written after (see
    :mod:`streams.engine.journal`). About ``partitions`` hashes a segment, once per entity
    (cached).
    """
    return b"%s\x00journal%d" % (key, _journal_number(key, partitions, segment))


@functools.lru_cache(maxsize=1 << 18)
def _journal_number(key: bytes, partitions: int, segment: int) -> int:
    partition = key_partition(key, partitions)
    n = 0 if segment == 0 else _journal_number(key, partitions, segment - 1) + 1
    while key_partition(b"%s\x00journal%d" % (key, n), partitions) != partition:
        n += 1
    return n


class EntityTable(faust.Table[bytes, bytes]):
    """Faust's table, whose changelog records go to their key's partition (``use_partitioner``)
    named here, from :func:`key_partition`'s cache, rather than hashed by the producer's
    partitioner at every write."""

    def partition_for_key(self, key: bytes) -> int:
        return key_partition(key, self.partitions)

    async def put(self, key: bytes, value: bytes | None) -> None:
        """``table[key] = value`` (``None``: delete the key), with its changelog record sent
        straight to the producer: Faust's way wraps each record in a future, a pending
        message and a buffer entry, with callbacks, about a tenth of a busy worker's time in
        journal writes. As Faust does, the local store takes the value at once, and the
        changelog offset it keeps for recovery follows each record's acknowledgement.

        Every write to a table goes one way or the other, never both: the records of a key's
        partition keep the order they were written in only on one path."""
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value
        topic, partition = self.changelog_topic.get_topic_name(), self.partition_for_key(key)
        sent = await self.app.producer.send(topic, key, value, partition, None, None)
        cast("asyncio.Future[Any]", sent).add_done_callback(
            functools.partial(self._persisted, TopicPartition(topic, partition))
        )

    def _persisted(self, tp: TopicPartition, sent: asyncio.Future[Any]) -> None:
        if not sent.cancelled() and sent.exception() is None:
            self.data.set_persisted_offset(tp, sent.result().offset)


class EntityRocksStore(rocksdb.Store):
    """Faust's RocksDB store with each key filed under its own partition, written without
    a write-ahead log (see module doc)."""

    def _open_for_partition(self, partition: int) -> rocksdict.Rdict:
        db: rocksdict.Rdict = super()._open_for_partition(partition)
        unlogged = rocksdict.WriteOptions()
        unlogged.disable_wal = True  # type: ignore[method-assign,assignment]  # a property; the stub says a method
        db.set_write_options(unlogged)
        return db

    def flush(self, wait: bool) -> None:
        """Write every partition's memory table to disk (``wait``: before returning, else in
        RocksDB's background threads)."""
        for db in self._dbs.values():
            db.flush(wait)

    def _partition(self, key: bytes) -> int:
        partitions = self.table.partitions
        assert partitions, "the worker's tables declare their partition count"
        return key_partition(key, partitions)

    def _set(self, key: bytes, value: bytes | None) -> None:
        partition = self._partition(key)
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)

    def _get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db_for_partition(self._partition(key)).get(key)
        return value

    def _del(self, key: bytes) -> None:
        self._key_index.pop(key, None)
        self._db_for_partition(self._partition(key)).delete(key)

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None


faust.stores.STORES.aliases[STORE_SCHEME] = f"{__name__}:EntityRocksStore"


def table_store(worker_store: str) -> str:
    """The store URL the worker's tables use for the ``FORESIGHT_WORKER_STORE`` setting."""
    scheme, sep, rest = worker_store.partition("://")
    if scheme == "rocksdb":
        return f"{STORE_SCHEME}{sep}{rest}"
    return worker_store


def _persisted_offset(db_path: Path) -> int | None:
    import rocksdict

    db = rocksdict.Rdict(
        str(db_path),
        options=rocksdict.Options(raw_mode=True),
        access_type=rocksdict.AccessType.read_only(),
    )
    try:
        raw = db.get(_OFFSET_KEY)
    finally:
        db.close()
    return None if raw is None else int(raw)


async def _end_offsets(
    kafka: KafkaConfig, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """End offsets of the partitions whose topics exist (a missing topic ends at 0)."""
    consumer = kafka.consumer(enable_auto_commit=False)
    await consumer.start()
    try:
        known = await consumer.topics()
        existing = [tp for tp in partitions if tp.topic in known]
        return await consumer.end_offsets(existing) if existing else {}
    finally:
        await consumer.stop()


def discard_stale_state(
    tabledir: Path, kafka: KafkaConfig, changelogs: Iterable[tuple[str, str]]
) -> list[Path]:
    """Delete each local partition database that is ahead of its changelog; return them.

    ``changelogs`` pairs each table's name with its changelog topic.
    """
    local: dict[TopicPartition, Path] = {}
    for table, topic in changelogs:
        for path in sorted(tabledir.glob(f"{table}-*.db")):
            partition = path.name[len(table) + 1 : -len(".db")]
            if partition.isdigit():
                local[TopicPartition(topic, int(partition))] = path
    if not local:
        return []
    ends = asyncio.run(_end_offsets(kafka, local))
    dropped = []
    for tp, path in local.items():
        offset = _persisted_offset(path)
        end = ends.get(tp, 0)
        if offset is not None and offset >= end:
            log.warning(
                "local state %s records changelog offset %d but %s:%d ends at %d (the topic "
                "was recreated): rebuilding this partition from the changelog",
                path,
                offset,
                tp.topic,
                tp.partition,
                end,
            )
            shutil.rmtree(path)
            dropped.append(path)
    return dropped
