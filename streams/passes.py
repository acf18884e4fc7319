"""The worker's streams: a pass takes what the last fetch brought, then goes.

Faust's ``take_events(max_, within)`` wakes every ``within`` seconds and yields what its buffer
holds: a record that comes just after a wake-up waits the whole of ``within`` for its pass,
although the rest of its fetch comes with it (a fetch's records are delivered together), and
each idle agent wakes ``1 / within`` times a second for nothing. Here a pass waits, without
a timer, for its first record, then lets the loop run while the buffer still grows (the rest
of the fetch being delivered), and goes when a turn of the loop brought nothing, the buffer
is full, or ``within`` has passed since the first record. Acks, the buffer's limit and the
cleanup are Faust's (``faust.streams.Stream.take_events``, 0.15.3).

The worker's busiest topic, ``telemetry.metrics``, skips Faust's streams altogether
(:class:`Handover`). Faust hands each record to an agent as an Event: the conductor (a lock,
flow control, the producer's ebb, a decode), a channel's queue, the stream's iterator (the
rebalance generation, tracking, sensors, processors), then an ack through the stream: about
a tenth of the worker's main thread at its maximum rate, for records the engine takes as
bytes, a pass at a time. A handover keeps what that path does for a record's safety (flow
control, the producer's ebb, a full buffer's wait raced against a rebalance, the rebalance
generation, tracking and acks) and drops the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from datetime import timedelta
from typing import Any, cast

import faust
from faust.streams import _tracks_buffer_agen
from faust.types import AppT, ChannelT, EventT, Message


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


class Handover:
    """The records of one topic, handed by the fetch loop (:mod:`streams.transport`) straight
    to the passes of one reader, as Faust's raw messages.

    A pass goes as :meth:`PassStream.take_events`' passes do, with at most ``pass_records``:
    ``max_records`` while the reader's work is cheap, fewer when what it reports
    (:meth:`spent`) says a pass that size would hold the event loop longer than ``budget_s``
    (records that each close steps, in a backlog).

    The fetch loop holds a record while Faust's flow is suspended (a rebalance) or its
    producer buffer is over its limit, as Faust's conductor does, and while ``max_records``
    and a stream buffer's worth (``stream_buffer_maxsize``) are held, raced against a
    rebalance as Faust races a delivery. A rebalance clears what is held, as it clears the
    streams' queues: Faust fetches it again from the committed offsets.

    A pass's records are tracked (a rebalance waits for them to be acked) and acked when the
    pass ends, however it ends; a record fetched before the last rebalance, or taken while
    the flow is suspended, is acked unread, as Faust's stream skips it.
    """

    def __init__(self, app: AppT, max_records: int, within_s: float, budget_s: float) -> None:
        self.app = app
        self.max_records = max_records
        self.within_s = within_s
        self.budget_s = budget_s
        self.pass_records = max_records  # the next pass's most, from the cost of the last
        self._cost_s = 0.0  # seconds a record, of the recent passes
        self.limit = max_records + app.conf.stream_buffer_maxsize
        self._held: list[Message] = []
        self._came = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        app.flow_control.manage_queue(self)  # type: ignore[arg-type]  # only clear() is called

    def clear(self) -> None:
        """Drop the records held (a rebalance)."""
        self._held.clear()
        self._room.set()

    def put(self, message: Message) -> bool:
        """Hold a fetched record for the next pass; False, and nothing held, when full."""
        if len(self._held) >= self.limit:
            self._room.clear()
            return False
        self._held.append(message)
        self._came.set()
        return True

    def spent(self, records: int, seconds: float) -> None:
        """What the reader's work on a pass of ``records`` took: the next passes take as many
        records as that cost fits in ``budget_s`` (at least one, at most ``max_records``)."""
        if records <= 0 or seconds <= 0:
            return
        cost = seconds / records
        self._cost_s = cost if self._cost_s == 0 else (self._cost_s + cost) / 2
        self.pass_records = max(1, min(self.max_records, int(self.budget_s / self._cost_s)))

    async def room(self) -> None:
        """Return once a record can be held again."""
        await self._room.wait()

    async def passes(self) -> AsyncGenerator[list[Message], None]:
        """Each pass's records, in the order they were fetched, acked when the pass ends."""
        app, held = self.app, self._held
        loop = asyncio.get_running_loop()
        while True:
            if not held:
                self._came.clear()
                await self._came.wait()
            deadline, size = loop.time() + self.within_s, len(held)
            # A turn of the loop before every pass, even one whose records are all held
            # already: the timers and the fetch loop run between passes, as between a
            # stream's passes, and a backlog's passes do not starve them.
            await asyncio.sleep(0)
            most = self.pass_records
            while size != len(held) and len(held) < most and loop.time() < deadline:
                size = len(held)
                await asyncio.sleep(0)
            taken = held[:most]
            del held[:most]
            self._room.set()
            consumer, generation = app.consumer, app.consumer_generation_id
            current = [] if not app.flow_control.is_active() else [
                message for message in taken if message.generation_id == generation
            ]  # fmt: skip
            acking = app.topics.acking_topics
            tracked = [m for m in current if not m.tracked and m.topic in acking]
            for message in tracked:
                message.tracked = True
                consumer.track_message(message)
            if current and app.monitor is not None:  # read by Faust's check of a stalled stream
                now = time.monotonic()
                for tp in {message.tp for message in current}:
                    app.monitor.stream_inbound_time[tp] = now
            try:
                if current:
                    yield current
            finally:
                for message in taken:
                    consumer.ack(message)
                out = app.sensors.on_message_out
                for message in tracked:
                    out(message.tp, message.offset, message)
