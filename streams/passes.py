"""The worker's streams: a pass takes what the last fetch brought, then goes.

Faust's ``take_events(max_, within)`` wakes every ``within`` seconds and yields what its buffer
holds: a record that comes just after a wake-up waits the whole of ``within`` for its pass,
although the rest of its fetch comes with it (a fetch's records are delivered together), and
each idle agent wakes ``1 / within`` times a second for nothing. Here a pass waits, without
a timer, for its first record, then lets the loop run while the buffer still grows (the rest
of the fetch being delivered), and goes when a turn of the loop brought nothing, the buffer
is full, or ``within`` has passed since the first record. Acks, the buffer's limit and the
cleanup are Faust's (``faust.streams.Stream.take_events``, 0.15.3).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from datetime import timedelta
from typing import Any, cast

import faust
from faust.streams import _tracks_buffer_agen
from faust.types import ChannelT, EventT


class PassStream(faust.Stream[Any]):
    """A Faust stream whose ``take_events`` makes a pass of each fetch's records."""

    @_tracks_buffer_agen  # closed by the stream's stop, as Faust's own
    async def take_events(
        self, max_: int, within: float | timedelta | str
    ) -> AsyncGenerator[Sequence[EventT[Any]], None]:
        """Buffer up to ``max_`` events and yield them once the fetch that brought the first
        has been delivered (or ``within`` after the first, at the latest)."""
        events: list[EventT[Any]] = []  # the pass's, in the order they came
        got_one, full, consumed = asyncio.Event(), asyncio.Event(), asyncio.Event()
        consuming: asyncio.Future[None] | None = None
        longest = within.total_seconds() if isinstance(within, timedelta) else float(within)

        async def add_to_buffer(value: Any) -> Any:
            nonlocal consuming
            try:
                if consuming is not None:  # a pass holds the buffer until it ends
                    try:
                        await consuming
                    finally:
                        consuming = None
                event = self.current_event
                if event is None:
                    raise RuntimeError("Take buffer found current_event is None")
                events.append(event)
                got_one.set()
                if len(events) >= max_:
                    full.set()
                    consumed.clear()
                    await self.wait(consumed)  # type: ignore[arg-type]  # any .wait() serves
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.log.exception("Error adding to take buffer: %r", error)
                await self.crash(error)
            return value

        acks_before, self.enable_acks = self.enable_acks, False  # acked here, after each pass
        self.add_processor(add_to_buffer)
        self._enable_passive(cast(ChannelT[Any], aiter(self.channel)))  # as Faust does
        loop = asyncio.get_running_loop()
        try:
            while not self.should_stop:
                if not events and await self.wait_for_stopped(got_one):  # type: ignore[arg-type]
                    break
                deadline, size = loop.time() + longest, -1
                while size != len(events) and not full.is_set() and loop.time() < deadline:
                    size = len(events)
                    await asyncio.sleep(0)
                consuming = pass_over = loop.create_future()
                try:
                    yield list(events)
                finally:
                    for event in events:
                        await self.ack(event)
                    events.clear()
                    pass_over.set_result(None)
                    full.clear()
                    got_one.clear()
                    consumed.set()
        finally:
            self.enable_acks = acks_before
            self._processors.remove(add_to_buffer)
