"""Faust's Kafka transport, with the worker's fetch wait and fetch size taken from the settings.

Faust (0.15.3) builds the worker's aiokafka consumer with ``fetch_max_wait_ms=1500`` and no
setting to change it. aiokafka keeps one fetch request in flight per broker and leaves out of
it the partitions whose records it still holds; so while a busy partition's records are being
processed, the request under way asks only for the worker's idle topics (agent events,
labels, routing), and the broker holds it the whole wait. The busy partition's next records
wait with it: at 20,000 samples/s every record reached the worker 0 to 1.6 s late (0.85 s at
the median), while a plain consumer of the same topic saw them 3 ms old. A short wait ends
that; its price is more empty fetches while the worker is idle.

Faust leaves aiokafka's ``fetch_min_bytes=1``: the broker answers a fetch as soon as it has one
record, and a worker that keeps up fetches again at once, one or two records at a time, each
fetch handed from Faust's consumer thread to the worker's loop and worked as a pass of its
own. The worker asks for more (``fetch_min_bytes``), so that below its maximum rate a fetch
brings what came during the wait in one answer: fewer, larger passes for the same records.

Waiting for a fetch's size costs an idle worker: every fetch is held the whole wait and
answered empty, about 67 a second at 15 ms: 5 to 6 % of a core for nothing. So a fetch that
follows one that brought nothing, while the worker holds no fetched record it reads and every
assigned partition is in the fetch, asks the broker for its first record instead
(``fetch_min_bytes=1``) and lets it hold the fetch for the idle wait: no partition is left out
of such a fetch, so no record waits behind it, and the broker answers as soon as any record
comes. The fetch after one that brought records waits for its size again. (Records of the
tables' changelogs stay held for good, as Faust reads them only to recover: only records of
the partitions Faust reads count.)

The consumer also runs the transport's ``before_commit`` before every offset commit, ahead of
Faust's producer flush: the worker writes there the entity state its passes left for the
commit (:meth:`streams.engine.Engine.commit`), so a committed offset always has the records
before it in the changelog.

It hands the records of the topics given a :class:`~streams.passes.Handover` (``handovers``)
straight to it, past Faust's streams; and each other fetched record to the agents' streams
without a task per record. Faust's loop delivers a record by racing the delivery against a
rebalance's flow suspension (``wait_first``): four futures, three of them tasks, and a pass
of the event loop for every record, about a tenth of a busy worker's CPU, although a
delivery almost never waits (it puts the record in a stream's queue). Here the delivery runs
at once, and only one that has to wait (a full queue, flow control) is raced as Faust races
it, from where it stopped.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from typing import Any, cast

import aiokafka
import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver
from faust.types import Message

from streams.passes import Handover


class IdleFetches:
    """Sets each fetch request's wait and size, on an aiokafka consumer's fetcher, by whether
    the consumer is idle (see the module docstring).

    A fetcher builds its requests from its ``_fetch_max_wait_ms`` and ``_fetch_min_bytes``
    (aiokafka 0.14, ``Fetcher._get_actions_per_node``); this sets both before each build and
    notes, per broker, whether each fetch brought records (``Fetcher._proc_fetch_request``).
    """

    def __init__(
        self, fetcher: Any, idle_wait_ms: int, reads: Callable[[Any], bool] = lambda tp: True
    ) -> None:
        self.busy = (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes)
        self.idle_wait_ms = idle_wait_ms
        self.reads = reads  # whether the consumer's reader takes a partition's records
        self.brought: dict[int, bool] = {}  # by broker: whether its last fetch had records
        self._fetcher = fetcher
        self._plan = fetcher._get_actions_per_node
        self._fetch = fetcher._proc_fetch_request
        fetcher._get_actions_per_node = self._planned
        fetcher._proc_fetch_request = self._fetched

    def idle(self, assignment: Any) -> bool:
        """Whether the next fetches may wait long: the last fetch from every broker brought
        nothing, no fetched record the reader takes is held, and every partition can be
        fetched."""
        if not self.brought or any(self.brought.values()):
            return False
        if any(self.reads(tp) for tp in self._fetcher._records):
            return False
        for tp in assignment.tps:
            state = assignment.state_value(tp)
            if state.paused or not state.has_valid_position:
                return False
        return True

    def _planned(self, assignment: Any) -> Any:
        wait_ms, min_bytes = (self.idle_wait_ms, 1) if self.idle(assignment) else self.busy
        self._fetcher._fetch_max_wait_ms, self._fetcher._fetch_min_bytes = wait_ms, min_bytes
        return self._plan(assignment)

    async def _fetched(self, assignment: Any, node_id: int, request: Any) -> bool:
        brought: bool = await self._fetch(assignment, node_id, request)
        self.brought[node_id] = brought
        return brought


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read once, by ``start()``, when it makes the consumer's fetcher.
        consumer._fetch_max_wait_ms = cast(KafkaTransport, transport).fetch_max_wait_ms
        consumer._fetch_min_bytes = cast(KafkaTransport, transport).fetch_min_bytes
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        transport = cast(KafkaTransport, self.transport)
        consumer = self.consumer

        def reads(tp: Any) -> bool:
            # Faust 0.15's set of the partitions it takes records of (None until it has one),
            # read here from the consumer's thread: a membership test, never an iteration.
            active = consumer._active_partitions
            return active is None or tp in active

        fetcher = cast(aiokafka.AIOKafkaConsumer, self._consumer)._fetcher
        self.idle_fetches = IdleFetches(fetcher, transport.idle_fetch_wait_ms, reads)


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit_offsets(
        self, offsets: Mapping[Any, int], start_new_transaction: bool = True
    ) -> bool:
        # Every commit (Faust's timer, a rebalance's, the last at shutdown) passes here, and
        # flushes the producer after it: what before_commit writes is sent first.
        before = cast(KafkaTransport, self.transport).before_commit
        if before is not None:
            await before()
        committed: bool = await super()._commit_offsets(offsets, start_new_transaction)
        return committed

    async def _drain_messages(self, fetcher: Any) -> None:
        """Faust's fetch loop (``faust.transport.consumer.Consumer._drain_messages``,
        0.15.3), each record delivered by :meth:`_deliver` instead of ``wait_first``."""
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        handovers = cast(KafkaTransport, self.transport).handovers
        yield_every, since_yield = 100, 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = self.getmany(timeout=1.0)
                # getmany may return at once again and again: let the loop run in between
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in records:
                        since_yield += 1
                        if since_yield > yield_every:
                            await asyncio.sleep(0)
                            since_yield = 0
                        offset = message.offset
                        read = get_read_offset(tp)
                        if read is None or offset >= read:
                            gap = offset - (read or 0)
                            if gap > 1 and read and acks_enabled_for(message.topic):
                                await self._add_gap(tp, read + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            handover = handovers.get(message.topic)
                            if handover is None:
                                await self._deliver(callback, message)
                            else:
                                await self._hand_over(handover, message)
                            set_read_offset(tp, offset)
                    self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        except Exception as error:
            self.log.exception("Drain messages raised: %r", error)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver(
        self, callback: Callable[[Message], Awaitable[Any]], message: Message
    ) -> None:
        """Run ``callback(message)`` up to where it first waits, at once; if it waits, race
        the rest against a flow suspension (a rebalance), as Faust races the whole."""
        delivery = callback(message)
        if not inspect.iscoroutine(delivery):
            await self.wait_first(delivery, self.suspend_flow.wait())
            return
        try:
            waits_on = delivery.send(None)
        except StopIteration:
            return
        await self.wait_first(_Rest(delivery, waits_on), self.suspend_flow.wait())

    async def _hand_over(self, handover: Handover, message: Message) -> None:
        """Give ``message`` to ``handover``, waiting as Faust's conductor waits to deliver
        (flow control, the producer's ebb), and while it is full; a rebalance during that
        last wait drops the record, as it drops a delivery under way."""
        app = self.app
        await app.flow_control.acquire()
        await app.producer.buffer.wait_until_ebb()
        while not handover.put(message):
            await self.wait_first(handover.room(), self.suspend_flow.wait())
            if self.suspend_flow.is_set() or self.should_stop:
                return


class KafkaTransport(driver.Transport):
    """The aiokafka transport, whose worker consumer's fetches wait up to ``fetch_max_wait_ms``
    for ``fetch_min_bytes`` (up to ``idle_fetch_wait_ms`` for a first record while idle),
    whose commits run ``before_commit`` first, and whose consumer hands the records of each
    topic in ``handovers`` to it."""

    Consumer = _Consumer

    def __init__(
        self, app: faust.App, fetch_max_wait_ms: int, fetch_min_bytes: int, idle_fetch_wait_ms: int
    ) -> None:
        super().__init__(app.conf.broker_consumer, app)
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_min_bytes = fetch_min_bytes
        self.idle_fetch_wait_ms = idle_fetch_wait_ms
        self.before_commit: Callable[[], Awaitable[None]] | None = None
        self.handovers: dict[str, Handover] = {}  # by topic: its records skip Faust's streams


class _Rest:
    """The rest of a coroutine that was run by hand up to its first wait (it yielded
    ``waits_on``, the future it waits for), as an awaitable a task can run: the task waits on
    the same future, then resumes the coroutine, or throws into it (a cancellation)."""

    def __init__(self, coroutine: Coroutine[Any, None, Any], waits_on: Any) -> None:
        self.coroutine = coroutine
        self.waits_on = waits_on

    def __await__(self) -> Generator[Any, None, Any]:
        coroutine, waits_on = self.coroutine, self.waits_on
        while True:
            try:
                yield waits_on
            except BaseException as error:  # thrown in by the task: passed on
                try:
                    waits_on = coroutine.throw(error)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    waits_on = coroutine.send(None)
                except StopIteration as done:
                    return done.value
