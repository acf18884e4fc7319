"""The worker's passes (``streams.passes.PassStream``): a pass goes as soon as the records
delivered with its first are in, not when a timer next fires, and never holds more than its
limit. Run on Faust's own channel, stream and event machinery (no broker: the app's Kafka
transport is made but never connects)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import faust
from faust.types import ChannelT

from streams.app import create_app
from streams.passes import PassStream
from streams.settings import Settings

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
