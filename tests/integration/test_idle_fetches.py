"""The worker's consumer while idle (``streams.transport.IdleFetches``), on the real broker: a
fetch after an empty one waits long but for the first record only, and a consumer holding
fetched records, or whose last fetch brought some, waits for the fetch's size again."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from connectors.kafka_admin import TopicRequest, ensure_topics
from streams.settings import Settings
from streams.transport import IdleFetches
from tests.integration.kafka_io import until

pytestmark = pytest.mark.integration

BUSY_WAIT_MS = 15
# Long enough that a fetch held for its size would outlast the test's every wait.
IDLE_WAIT_MS = 120_000


async def test_an_idle_consumer_waits_long_for_its_first_record_and_then_for_its_fetch_size(
    stack_settings: Settings, unique: str
) -> None:
    topic = f"test.idle-fetches.{unique}"
    kafka = stack_settings.kafka()
    await ensure_topics(kafka, [TopicRequest(topic, 1, {})])
    consumer = kafka.consumer(
        fetch_max_wait_ms=BUSY_WAIT_MS,
        fetch_min_bytes=1_048_576,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = kafka.producer()
    await consumer.start()
    await producer.start()
    try:
        fetcher = consumer._fetcher
        fetches = IdleFetches(fetcher, IDLE_WAIT_MS)
        assert fetches.busy == (BUSY_WAIT_MS, 1_048_576)
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])

        # Nothing to read: after the first empty fetch, fetches ask for the first record.
        await until("an idle fetch", lambda: fetcher._fetch_max_wait_ms == IDLE_WAIT_MS, 30, 0.05)
        assert fetcher._fetch_min_bytes == 1
        assert fetches.brought and not any(fetches.brought.values())

        # The broker answers it at once, not after the idle wait or a MiB.
        await producer.send_and_wait(topic, b"first")
        got = await asyncio.wait_for(consumer.getone(tp), 30)
        assert got.value == b"first"

        # Records held, not yet taken by the consumer's reader: not idle, whatever the last
        # fetch brought, and the fetches that follow wait for their size.
        await asyncio.gather(*[await producer.send(topic, b"x" * 100) for _ in range(50)])

        def held_and_busy() -> bool:
            asked = (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes)
            return bool(fetcher._records) and asked == fetches.busy

        await until("records held, fetches busy", held_and_busy, 30, 0.05)
        assignment = consumer._subscription.subscription.assignment
        assert not fetches.idle(assignment)
        fetches.brought = dict.fromkeys(fetches.brought, False)
        assert not fetches.idle(assignment)  # the held records alone keep it busy
        taken: list[bytes] = []
        while len(taken) < 50:  # they may come in more than one fetch
            batch = await consumer.getmany(tp, timeout_ms=5_000, max_records=1_000)
            assert batch, f"{len(taken)} of the 50 records came"
            taken += [record.value for record in batch[tp]]
        assert taken == [b"x" * 100] * 50
    finally:
        await producer.stop()
        await consumer.stop()
