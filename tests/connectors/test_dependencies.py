"""What a process says of the services it relies on, and how it learns it (no services, but
for the Kafka probe against the real brokers)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiokafka.errors import KafkaError

from connectors.dependencies import Dependency, KafkaProbe, health_report, watch
from connectors.kafka_clients import KafkaConfig
from deploy.local.processes import free_port
from streams.settings import Settings


def test_a_dependency_is_down_from_its_first_failure_until_it_answers() -> None:
    kafka = Dependency("kafka", "127.0.0.1:9092")
    assert kafka.problem() is None
    assert health_report(kafka) == {"status": "ok", "down": {}}
    kafka.failed(ConnectionRefusedError("refused"))
    first = kafka.down_since
    kafka.failed("still refused")
    assert kafka.down_since == first, "an outage starts at its first failure"
    report = health_report(kafka, Dependency("redis", "127.0.0.1:6379/0"))
    assert report["status"] == "degraded"
    assert set(report["down"]) == {"kafka"}
    assert report["down"]["kafka"]["where"] == "127.0.0.1:9092"
    assert report["down"]["kafka"]["error"] == "still refused"
    kafka.answered()
    assert health_report(kafka) == {"status": "ok", "down": {}}


async def test_the_watch_records_each_check_as_it_goes() -> None:
    redis = Dependency("redis", "here")
    answers = iter([OSError("down"), OSError("down"), None])
    seen: list[bool] = []

    async def check() -> None:
        answer = next(answers, None)
        seen.append(answer is None)
        if answer is not None:
            raise answer

    task = asyncio.create_task(watch({redis: check}, interval_s=0.01))
    try:
        async with asyncio.timeout(5):
            while len(seen) < 2:
                await asyncio.sleep(0.01)
            assert redis.problem() is not None and "down" in redis.error
            while redis.problem() is not None:
                await asyncio.sleep(0.01)
        assert seen[:3] == [False, False, True]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_kafka_probe_raises_when_no_broker_answers() -> None:
    probe = KafkaProbe(KafkaConfig(f"127.0.0.1:{free_port()}"), timeout_s=1)
    try:
        with pytest.raises(KafkaError):
            await probe()
    finally:
        await probe.close()


@pytest.mark.integration
async def test_the_kafka_probe_keeps_answering_with_the_brokers_alone(
    stack_settings: Settings,
) -> None:
    """After the first call (the bootstrap), a call asks a broker for the brokers and no
    topic: the shared stack holds thousands of topics, whose metadata would stall the loop."""
    probe = KafkaProbe(stack_settings.kafka())
    try:
        for _ in range(3):
            await probe()
    finally:
        await probe.close()
