"""The worker's passes (``streams.passes.PassStream`` and ``Handover``): a pass goes as soon as
the records delivered with its first are in, not when a timer next fires, and never holds more
than its limit. Run on Faust's own channel, stream, event, flow control and consumer
bookkeeping (no broker: the app's Kafka transport is made but never connects)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, cast

import faust
from faust.types import TP, ChannelT, ConsumerMessage

from streams.app import create_app
from streams.passes import Handover, PassStream
from streams.settings import Settings
from tests.integration.kafka_io import until

LONG = 3600.0  # a pass wait no test may sit out


async def new_stream() -> PassStream:
    app = faust.App("passes-test", broker="kafka://127.0.0.1:1", Stream=PassStream)
    app.flow_control.resume()
    stream = app.stream(app.channel())
    assert isinstance(stream, PassStream)
    await stream.start()
    return stream


async def send(stream: PassStream, values: range) -> None:
    for value in values:
        await cast(ChannelT[Any], stream.channel).send(value=value)


async def passes(stream: PassStream, limit: int, count: int) -> list[list[int]]:
    """The values of the stream's passes until ``count`` values have come."""
    got: list[list[int]] = []
    async for events in stream.take_events(limit, LONG):
        got.append([cast(int, event.value) for event in events])
        if sum(map(len, got)) >= count:
            break
    return got


async def test_a_pass_goes_when_its_records_are_in_not_after_the_wait() -> None:
    stream = await new_stream()
    taking = asyncio.create_task(passes(stream, 3, 5))
    await send(stream, range(5))
    # Faust's take_events would hold the last two for the whole wait (an hour here).
    assert await asyncio.wait_for(taking, 30) == [[0, 1, 2], [3, 4]]


async def test_records_sent_during_a_pass_go_to_the_next() -> None:
    stream = await new_stream()

    async def two_passes() -> list[list[int]]:
        got: list[list[int]] = []
        async for events in stream.take_events(100, LONG):
            got.append([cast(int, event.value) for event in events])
            if len(got) == 2:
                break
            await send(stream, range(2, 4))
        return got

    await send(stream, range(2))
    assert await asyncio.wait_for(two_passes(), 30) == [[0, 1], [2, 3]]


async def test_a_stream_that_stops_ends_its_passes() -> None:
    stream = await new_stream()

    async def passes_until_stopped() -> list[list[int]]:
        got: list[list[int]] = []
        stopping: list[asyncio.Task[None]] = []
        async for events in stream.take_events(10, LONG):
            got.append([cast(int, event.value) for event in events])
            # stopped while the next pass waits for its first record
            stopping.append(asyncio.create_task(stream.stop()))
        await stopping[0]
        return got

    await send(stream, range(1))
    assert await asyncio.wait_for(passes_until_stopped(), 30) == [[0]]


def test_the_worker_makes_its_streams_pass_streams(tmp_path: Path) -> None:
    app = create_app(Settings(worker_data_dir=str(tmp_path / "data")))
    assert app.stream(app.channel()).__class__ is PassStream


TOPIC = "telemetry.metrics"


def handover(limit: int) -> tuple[faust.App, Handover]:
    app = faust.App("handover-test", broker="kafka://127.0.0.1:1")
    app.flow_control.resume()
    app.topics.acking_topics.add(TOPIC)  # as the conductor does for a subscribed topic
    return app, Handover(app, limit, LONG, 0.25)


def fetched(app: faust.App, offsets: range, generation: int | None = None) -> list[ConsumerMessage]:
    """Records as the consumer hands them over, of the app's current generation by default."""
    now = app.consumer_generation_id if generation is None else generation
    return [
        ConsumerMessage(TOPIC, 0, o, 0.0, 0, None, b"k", b"v", None, generation_id=now)
        for o in offsets
    ]


async def test_a_handover_passes_what_came_together_and_acks_each_pass_at_its_end() -> None:
    app, passes = handover(3)
    records = fetched(app, range(5))
    for record in records:
        assert passes.put(record)
    got: list[list[int]] = []
    async with contextlib.aclosing(passes.passes()) as each:
        async for taken in each:
            got.append([m.offset for m in taken])
            assert all(m.tracked and m in app.consumer.unacked for m in taken)
            assert not any(m.acked for m in taken)
            if sum(map(len, got)) == 5:
                break
    assert got == [[0, 1, 2], [3, 4]]
    assert all(m.acked for m in records) and not app.consumer.unacked
    assert app.monitor.stream_inbound_time[TP(TOPIC, 0)] > 0  # Faust's stall check reads it


async def test_a_pass_that_fails_still_acks_its_records() -> None:
    app, passes = handover(10)
    records = fetched(app, range(2))
    for record in records:
        passes.put(record)
    with contextlib.suppress(RuntimeError):
        async with contextlib.aclosing(passes.passes()) as each:
            async for _ in each:
                raise RuntimeError("the engine failed")
    assert all(m.acked for m in records) and not app.consumer.unacked


async def test_records_from_before_a_rebalance_are_acked_unread() -> None:
    app, passes = handover(10)
    old = fetched(app, range(2), generation=app.consumer_generation_id - 1)
    new = fetched(app, range(2, 4))
    for record in old:
        passes.put(record)

    async def first_pass() -> list[int]:
        async with contextlib.aclosing(passes.passes()) as each:
            async for taken in each:
                return [m.offset for m in taken]
        return []

    taking = asyncio.create_task(first_pass())
    await until("the stale records acked", lambda: all(m.acked for m in old), 30, every_s=0.01)
    assert not taking.done()  # a pass of nothing but stale records is no pass
    for record in new:
        passes.put(record)
    assert await asyncio.wait_for(taking, 30) == [2, 3]
    assert all(m.acked for m in new)


async def test_a_full_handover_refuses_until_a_pass_takes_and_a_rebalance_clears_it() -> None:
    app, passes = handover(2)
    passes.limit = 3
    records = fetched(app, range(4))
    assert [passes.put(m) for m in records] == [True, True, True, False]
    waiting = passes.room()
    assert waiting.send(None) is not None  # it waits: there is no room
    waiting.close()
    async with contextlib.aclosing(passes.passes()) as each:
        async for taken in each:
            assert [m.offset for m in taken] == [0, 1]
            break
    await asyncio.wait_for(passes.room(), 30)
    assert passes.put(records[3])
    app.flow_control.suspend()
    app.flow_control.clear()  # what Faust does to the streams' queues in a rebalance
    app.flow_control.resume()
    assert passes.put(fetched(app, range(9, 10))[0])
    async with contextlib.aclosing(passes.passes()) as each:
        async for taken in each:
            assert [m.offset for m in taken] == [9]  # 2 and 3 were dropped: fetched again
            break


def test_the_worker_hands_its_metrics_over_and_still_subscribes_to_them(tmp_path: Path) -> None:
    app = create_app(Settings(worker_data_dir=str(tmp_path / "data")))
    transport = cast(Any, app.transport)
    assert list(transport.handovers) == [TOPIC]
    assert TOPIC in {name for topic in app.topics for name in topic.topics}


async def test_passes_shrink_while_records_cost_more_than_the_budget_and_grow_back() -> None:
    app, passes = handover(100)
    passes.spent(100, 1.0)  # 10 ms a record: 25 fit in the 0.25 s budget
    assert passes.pass_records == 25
    for record in fetched(app, range(30)):
        passes.put(record)
    async with contextlib.aclosing(passes.passes()) as each:
        async for taken in each:
            assert len(taken) == 25
            break
    passes.spent(25, 0.025)  # 1 ms a record now: the mean of 10 and 1 ms fits 45
    assert passes.pass_records == 45
    passes.spent(1000, 0.001)
    passes.spent(1000, 0.001)
    assert passes.pass_records == 100  # never past max_records
    passes.spent(1, 60.0)
    assert passes.pass_records == 1  # at least one
