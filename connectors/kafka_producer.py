"""Produce framed Avro records to Kafka in bulk, for the simulator, the demo and benchmarks."""

from __future__ import annotations

import asyncio
from typing import Any

from connectors.kafka_clients import KafkaConfig
from schemas.codec import Codec

_MIB = 1024 * 1024


class RecordProducer:
    """An aiokafka producer that encodes records with the codec and keeps sends in flight.

    ``send`` does not wait for the broker; ``flush`` does. Up to ``max_in_flight`` sends are
    outstanding before ``send`` waits for the oldest ones, so memory stays bounded.
    """

    def __init__(
        self, kafka: KafkaConfig, codec: Codec | None = None, max_in_flight: int = 5000
    ) -> None:
        self.codec = codec or Codec()
        self.max_in_flight = max_in_flight
        self._producer = kafka.producer(
            linger_ms=5,
            max_batch_size=_MIB,
            acks=1,
            max_request_size=4 * _MIB,
        )
        self._pending: list[asyncio.Future[Any]] = []

    async def start(self) -> None:
        await self._producer.start()

    async def send(self, topic: str, key: str, schema: str, record: dict[str, Any]) -> None:
        """Encode and send one record (keyed by ``key``)."""
        value = self.codec.encode(schema, record)
        self._pending.append(await self._producer.send(topic, value, key=key.encode()))
        if len(self._pending) >= self.max_in_flight:
            await self.flush()

    async def send_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Send bytes as they are (bad-input tests, passthrough benchmarks)."""
        self._pending.append(await self._producer.send(topic, value, key=key))
        if len(self._pending) >= self.max_in_flight:
            await self.flush()

    async def send_to_partition(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Send bytes to one partition, whatever their key hashes to (probes, tests)."""
        sent = await self._producer.send(
            topic, value, key=key, partition=partition, headers=headers
        )
        self._pending.append(sent)

    async def partitions(self, topic: str) -> list[int]:
        """The partitions the brokers' metadata lists for ``topic``, in order."""
        return sorted(await self._producer.partitions_for(topic))

    async def flush(self) -> None:
        """Wait until every record sent so far is acknowledged by the broker."""
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)

    async def stop(self) -> None:
        await self.flush()
        await self._producer.stop()
