"""Test helpers: read what a Foresight process writes to Kafka, from the moment we look."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from connectors.kafka_clients import KafkaConfig
from connectors.kafka_producer import RecordProducer
from deploy.local.processes import free_port
from schemas.codec import Codec, DecodeError
from streams.commands.tail import topic_partitions
from streams.topics import TopicSpec


class TopicReader:
    """Follows topics from their current end (a fresh group, ``latest``), decoding records
    (with ``codec``, Foresight's framing by default) and keeping their bytes in ``raw``."""

    def __init__(self, kafka: KafkaConfig, *topics: str, codec: Codec | None = None) -> None:
        self.codec = codec or Codec()
        self.records: list[tuple[str, bytes | None, Any]] = []
        self.raw: list[tuple[str, bytes | None, bytes]] = []
        self._consumer = kafka.consumer(
            *topics,
            group_id=f"test-reader-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="latest",
            enable_auto_commit=False,
        )

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        while not self._consumer.assignment():
            await self._consumer.getmany(timeout_ms=200)
        for tp in self._consumer.assignment():
            await self._consumer.position(tp)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def until(
        self, done: Callable[[list[tuple[str, bytes | None, Any]]], bool], timeout_s: float
    ) -> list[tuple[str, bytes | None, Any]]:
        """Read until ``done(records)`` holds; fail with what was read after ``timeout_s``."""
        if not await self.wait(done, timeout_s):
            raise AssertionError(
                f"condition not met in {timeout_s}s; read {len(self.records)} records"
            )
        return self.records

    async def wait(
        self, done: Callable[[list[tuple[str, bytes | None, Any]]], bool], timeout_s: float
    ) -> bool:
        """Read until ``done(records)`` holds (True) or ``timeout_s`` has passed (False)."""
        deadline = time.monotonic() + timeout_s
        while not done(self.records):
            if time.monotonic() > deadline:
                return False
            batches = await self._consumer.getmany(timeout_ms=250)
            for messages in batches.values():
                for m in messages:
                    try:
                        record: Any = self.codec.decode(m.value)[1]
                    except DecodeError:
                        record = m.value
                    self.records.append((m.topic, m.key, record))
                    self.raw.append((m.topic, m.key, m.value))
            await asyncio.sleep(0)
        return True


async def produce(
    kafka: KafkaConfig, spec: TopicSpec, key_field: str, records: list[dict[str, Any]]
) -> None:
    """Encode and produce ``records`` to ``spec``'s topic, keyed by their ``key_field``."""
    producer = RecordProducer(kafka)
    await producer.start()
    try:
        for record in records:
            await producer.send(spec.name, record[key_field], spec.schema, record)
    finally:
        await producer.stop()


async def read_topics(kafka: KafkaConfig, topics: list[str], timeout_s: float = 60) -> list[bytes]:
    """Every record of ``topics`` from their start to their current end, as raw bytes: its
    key, value and header values joined by NUL, undecoded, so nothing in them can hide."""
    # The reset policy agrees with the seek: a fresh assignment resets by it, concurrently.
    consumer = kafka.consumer(enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [tp for topic in topics for tp in await topic_partitions(kafka, topic)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"could not read {topics} in {timeout_s}s"
            batches = await consumer.getmany(*partitions, timeout_ms=500)
            for messages in batches.values():
                for m in messages:
                    seen.append(
                        b"\0".join([m.key or b"", m.value or b"", *(v for _, v in m.headers)])
                    )
        return seen
    finally:
        await consumer.stop()


def broker_port() -> int:
    """A free port for a private broker whose KRaft controller port (3 above it) is free too."""
    while True:
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 3))
            except OSError:
                continue
        return port


async def until(
    what: str,
    done: Callable[[], Awaitable[bool] | bool],
    timeout_s: float,
    every_s: float = 0.5,
) -> float:
    """Poll ``done`` every ``every_s`` until it holds; returns the seconds it took, fails
    naming ``what``."""
    started = time.monotonic()
    while True:
        result = done()
        if result if isinstance(result, bool) else await result:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s:.0f} s"
        await asyncio.sleep(every_s)
