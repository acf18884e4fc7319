"""The gateway's two buffers: a bounded outbox per client and the replay ring.

:class:`ClientOutbox` is what keeps one slow client from slowing the others: the consumer loop
only ever calls :meth:`ClientOutbox.offer`, which never waits, and each client's own sender
task drains its outbox into its socket. Policy when a client falls behind:

* a client that keeps up gets every message, in order;
* once its outbox is full, a new prediction **replaces its entity's newest unsent one** (on a
  live feed the newest state is what matters), and anything else, or a prediction of an entity
  with nothing queued, pushes out **the oldest** message. Alerts are never coalesced (every
  state change counts) but can fall off the front like anything else.

Both count as dropped, so the client can be told and resume from its last id.

:class:`ReplayBuffer` keeps the last messages the gateway dispatched, so a client that
reconnects with ``last_id`` gets what it missed before going live.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any


class ClientOutbox:
    """A bounded queue of encoded messages for one client, coalescing under pressure.

    Parameters
    ----------
    max_messages
        Messages held before one is given up (``FORESIGHT_GATEWAY_QUEUE``, default 1000).
    coalesce
        When full, give up the entity's own unsent prediction rather than the oldest message
        (default ``True``).

    Examples
    --------
    >>> box = ClientOutbox(max_messages=2)
    >>> box.offer(("prediction", "web-1"), "p1"), box.offer(("prediction", "web-1"), "p2")
    (0, 0)
    >>> box.offer(("prediction", "web-1"), "p3"), box.offer(("alert", 7), "a7")
    (1, 1)
    >>> box.take(), box.dropped
    (['p3', 'a7'], 2)
    """

    def __init__(self, max_messages: int, coalesce: bool = True) -> None:
        if max_messages < 1:
            raise ValueError(f"a client outbox must hold at least 1 message, got {max_messages}")
        self.max_messages = max_messages
        self.coalesce = coalesce
        self.dropped = 0
        self._items: OrderedDict[int, tuple[Hashable, str]] = OrderedDict()
        self._newest: dict[Hashable, int] = {}
        self._sequence = 0
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, key: Hashable, text: str) -> int:
        """Queue ``text``; returns how many messages this gave up (0 or 1).

        ``key`` names what a newer message may replace, e.g. ``("prediction", entity)``; give
        alerts unique keys. A client that keeps up gets every message: replacing and dropping
        only happen once the outbox is full.
        """
        lost = 0
        if len(self._items) >= self.max_messages:
            lost = 1
            replaced = self._newest.pop(key, None) if self.coalesce else None
            if replaced is not None:
                del self._items[replaced]
            else:
                oldest, (oldest_key, _) = self._items.popitem(last=False)
                if self._newest.get(oldest_key) == oldest:
                    del self._newest[oldest_key]
        self._sequence += 1
        self._items[self._sequence] = (key, text)
        self._newest[key] = self._sequence
        self.dropped += lost
        self._ready.set()
        return lost

    def take(self) -> list[str]:
        """Everything queued, oldest first, leaving the outbox empty."""
        texts = [text for _, text in self._items.values()]
        self._items.clear()
        self._newest.clear()
        self._ready.clear()
        return texts

    async def wait(self) -> list[str]:
        """Wait until something is queued, then :meth:`take` it."""
        await self._ready.wait()
        return self.take()


@dataclass(frozen=True)
class Dispatched:
    """One message as the gateway dispatched it: its id, topic and decoded record."""

    id: int
    topic: str
    record: dict[str, Any]


class ReplayBuffer:
    """The last ``capacity`` dispatched messages, for resuming clients.

    ``origin`` is the id before the first message (a client that subscribed before anything
    was dispatched was told it); ids go up by one from there.

    Examples
    --------
    >>> ring = ReplayBuffer(capacity=2)
    >>> for i in (1, 2, 3):
    ...     ring.append(Dispatched(i, "alerts", {}))
    >>> gap, messages = ring.resume(1)
    >>> gap, [m.id for m in messages]
    (False, [2, 3])
    >>> ring.resume(0)[0], ring.resume(9)[0]
    (True, True)
    """

    def __init__(self, capacity: int, origin: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"the replay buffer must hold at least 1 message, got {capacity}")
        self._items: deque[Dispatched] = deque(maxlen=capacity)
        self._origin = origin

    def append(self, message: Dispatched) -> None:
        self._items.append(message)

    def resume(self, last_id: int) -> tuple[bool, list[Dispatched]]:
        """What a client that last saw ``last_id`` should get: ``(gap, messages)``.

        ``gap`` is true when messages after ``last_id`` have already left the ring, or when
        ``last_id`` is newer than anything here (this gateway restarted since): the client
        then needs the snapshot too, and gets whatever the ring still holds.
        """
        if not self._items:
            return last_id != self._origin, []
        oldest, newest = self._items[0].id, self._items[-1].id
        if oldest - 1 <= last_id <= newest:
            return False, [m for m in self._items if m.id > last_id]
        since = last_id if last_id < oldest else 0
        return True, [m for m in self._items if m.id > since]
