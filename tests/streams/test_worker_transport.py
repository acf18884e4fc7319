"""The worker's Kafka consumer (``streams.transport``): it fetches with the wait and the size its
settings give, not Faust's 1.5 s (a busy partition's records waited that long behind a fetch
for the worker's idle topics) and 1 byte (a fetch for every record or two), waits longer while
idle (``tests/integration/test_idle_fetches.py``), hands each record to its delivery without a
task per record, and each metrics record to the metrics' handover (``streams.passes``)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

import pytest
from faust.types import ConsumerMessage

from streams.app import create_app
from streams.settings import Settings
from streams.transport import KafkaTransport, _Rest


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"worker_fetch_wait_ms": 7, "worker_fetch_min_bytes": 1},
        {"worker_fetch_wait_ms": 1500, "worker_idle_fetch_wait_ms": 40},
    ],
)
async def test_the_workers_consumer_fetches_with_the_wait_and_size_of_its_settings(
    changes: dict[str, int], tmp_path: Path
) -> None:
    settings = Settings(worker_data_dir=str(tmp_path / "data")).replace(**changes)
    app = create_app(settings)
    assert isinstance(app.transport, KafkaTransport)
    consumer = app.consumer._thread._create_worker_consumer(app.transport)  # type: ignore[attr-defined]
    assert consumer._fetch_max_wait_ms == settings.worker_fetch_wait_ms
    assert consumer._fetch_min_bytes == settings.worker_fetch_min_bytes
    assert app.transport.idle_fetch_wait_ms == settings.worker_idle_fetch_wait_ms


# Each record goes to Faust's delivery (the conductor's callback) at once; only a delivery that
# has to wait is raced against a rebalance's flow suspension.


def _consumer(tmp_path: Path) -> Any:
    return create_app(Settings(worker_data_dir=str(tmp_path / "data"))).consumer


async def test_a_delivery_that_does_not_wait_is_done_before_the_loop_runs(tmp_path: Path) -> None:
    consumer, delivered = _consumer(tmp_path), []

    async def deliver(message: Any) -> None:
        delivered.append(message)

    delivery = consumer._deliver(deliver, "m1")
    with pytest.raises(StopIteration):  # done without handing the loop anything
        delivery.send(None)
    assert delivered == ["m1"]


async def test_a_delivery_that_waits_is_resumed_where_it_stopped(tmp_path: Path) -> None:
    consumer, steps, waiting = _consumer(tmp_path), [], asyncio.Event()
    room = asyncio.get_running_loop().create_future()

    async def deliver(message: Any) -> None:
        steps.append(("before", message))
        waiting.set()
        steps.append(("got", await room))
        await asyncio.sleep(0)  # a bare yield to the loop, then done
        steps.append(("after", message))

    delivering = asyncio.create_task(consumer._deliver(deliver, "m1"))
    await asyncio.wait_for(waiting.wait(), 5)
    assert steps == [("before", "m1")] and not delivering.done()
    room.set_result("room")
    await asyncio.wait_for(delivering, 5)
    assert steps == [("before", "m1"), ("got", "room"), ("after", "m1")]


async def test_a_waiting_delivery_gives_way_to_a_rebalance(tmp_path: Path) -> None:
    consumer, waiting, cancelled = _consumer(tmp_path), asyncio.Event(), asyncio.Event()

    async def deliver(message: Any) -> None:
        waiting.set()
        try:
            await asyncio.get_running_loop().create_future()  # a queue that stays full
        except asyncio.CancelledError:
            cancelled.set()
            raise

    delivering = asyncio.create_task(consumer._deliver(deliver, "m1"))
    await asyncio.wait_for(waiting.wait(), 5)
    consumer.suspend_flow.set()
    await asyncio.wait_for(delivering, 5)  # the loop goes on
    await asyncio.wait_for(cancelled.wait(), 5)  # and the delivery is called off


async def test_a_delivery_that_fails_fails_the_loop(tmp_path: Path) -> None:
    consumer = _consumer(tmp_path)

    async def deliver(message: Any) -> None:
        raise ValueError(message)

    with pytest.raises(ValueError, match="m1"):
        await consumer._deliver(deliver, "m1")


def test_the_producer_buffer_holds_a_passs_table_writes(tmp_path: Path) -> None:
    """Faust's bound (100) is a fraction of one pass's table writes: every delivery after a
    pass waited for the buffer, with a warning."""
    settings = Settings(worker_data_dir=str(tmp_path / "data"), worker_batch=700)
    assert create_app(settings).producer.buffer.max_messages == 3 * 700


@pytest.mark.parametrize(
    ("changes", "batch"),
    [
        ({}, 262_144),
        ({"worker_produce_batch_bytes": 16_384}, 16_384),
        ({"max_record_bytes": 100_000}, 100_000),  # a batch over it the broker may refuse
    ],
)
def test_the_producer_batches_up_to_its_setting_and_the_record_limit(
    changes: dict[str, int], batch: int, tmp_path: Path
) -> None:
    """aiokafka keeps one produce request in flight per broker, and a send to a partition
    whose batch is full waits for it: Kafka's 16 KB made the worker wait at its maximum rate."""
    settings = Settings(worker_data_dir=str(tmp_path / "data")).replace(**changes)
    producer = create_app(settings).producer
    assert producer._settings_default()["max_batch_size"] == batch  # type: ignore[attr-defined]


# The metrics go to their handover: at once when it has room and the flow runs, as Faust's
# conductor waits (flow control) otherwise, and a full handover's wait gives way to a rebalance.


def _handing_over(tmp_path: Path, limit: int) -> tuple[Any, Any, list[ConsumerMessage]]:
    app = create_app(Settings(worker_data_dir=str(tmp_path / "data")))
    handover = cast(KafkaTransport, app.transport).handovers["telemetry.metrics"]
    handover.limit = limit
    app.flow_control.resume()
    now = app.consumer_generation_id
    records = [
        ConsumerMessage(
            "telemetry.metrics", 0, o, 0.0, 0, None, b"k", b"v", None, generation_id=now
        )
        for o in range(limit + 1)
    ]
    return app.consumer, handover, records


def waiting(coroutine: Coroutine[Any, None, None]) -> asyncio.Future[None]:
    """Run ``coroutine`` up to its first wait (it must wait there), then on in a task."""
    waits_on = coroutine.send(None)
    return asyncio.ensure_future(_Rest(coroutine, waits_on))


async def test_a_record_with_room_is_handed_over_before_the_loop_runs(tmp_path: Path) -> None:
    consumer, handover, records = _handing_over(tmp_path, 1)
    with pytest.raises(StopIteration):
        consumer._hand_over(handover, records[0]).send(None)
    assert handover._held == records[:1]


async def test_a_full_handover_holds_the_fetch_loop_until_a_pass_takes_its_records(
    tmp_path: Path,
) -> None:
    consumer, handover, records = _handing_over(tmp_path, 1)
    await consumer._hand_over(handover, records[0])
    handing = waiting(consumer._hand_over(handover, records[1]))
    assert handover._held == records[:1]
    passes = handover.passes()
    assert await anext(passes) == records[:1]
    await asyncio.wait_for(handing, 5)
    assert handover._held == records[1:]
    await passes.aclose()


async def test_a_rebalance_drops_the_record_a_full_handover_held_back(tmp_path: Path) -> None:
    consumer, handover, records = _handing_over(tmp_path, 1)
    await consumer._hand_over(handover, records[0])
    handing = waiting(consumer._hand_over(handover, records[1]))
    consumer.suspend_flow.set()
    await asyncio.wait_for(handing, 5)  # the loop goes on
    assert handover._held == records[:1]  # and the record is not held: it is fetched again


async def test_no_record_is_handed_over_while_the_flow_is_suspended(tmp_path: Path) -> None:
    consumer, handover, records = _handing_over(tmp_path, 1)
    consumer.app.flow_control.suspend()
    handing = waiting(consumer._hand_over(handover, records[0]))
    assert not handover._held
    consumer.app.flow_control.resume()
    await asyncio.wait_for(handing, 5)
    assert handover._held == records[:1]
