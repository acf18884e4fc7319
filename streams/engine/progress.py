"""What a worker knows of each partition it owns: event-time watermarks and stalls."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class PartitionProgress:
    """One owned partition: its newest event time, newest record, and whether it is stuck.

    Examples
    --------
    >>> p = PartitionProgress(max_event_ms=60_000, last_arrival_s=100.0)
    >>> p.watermark(now_s=102.0, idle_timeout_s=5.0)  # data arrived lately: event time rules
    60000
    >>> p.watermark(now_s=110.0, idle_timeout_s=5.0)  # idle: the watermark follows wall time
    70000
    >>> [p.arrived(offset, now_s=111.0) for offset in (7, 8, 12, 9)]  # 9, 10, 11 skipped
    [0, 0, 3, 0]
    """

    max_event_ms: int = 0
    last_arrival_s: float = 0.0  # wall time of the newest record
    last_offset: int = -1
    progressed_s: float = field(default_factory=time.time)
    stalled: bool = False
    skipped: int = 0  # offsets never handed over between two records (see arrived)

    def watermark(self, now_s: float, idle_timeout_s: float) -> int:
        """Event-time watermark; follows wall time once the partition has been idle."""
        idle = now_s - self.last_arrival_s
        if self.max_event_ms and idle >= idle_timeout_s:
            return self.max_event_ms + int(idle * 1000)
        return self.max_event_ms

    def arrived(self, offset: int, now_s: float) -> int:
        """A record at ``offset`` was consumed at ``now_s``; returns how many offsets between
        the newest record before it and it never arrived.

        Offsets of a topic nobody writes transactionally or compacts have no holes, so a hole
        means the consumer skipped records (see streams/recovery.py for one way it did)."""
        skipped = max(0, offset - self.last_offset - 1) if self.last_offset >= 0 else 0
        self.skipped += skipped
        self.last_arrival_s = now_s
        self.last_offset = max(self.last_offset, offset)
        self.progressed_s = now_s
        return skipped

    def watch(
        self,
        highwater: int | None,
        now_s: float,
        stall_timeout_s: float,
        committed: int | None = None,
    ) -> int | None:
        """Judge the partition against its end (``highwater``, the next offset to be written
        minus one): stalled when records wait and nothing moved for ``stall_timeout_s``.
        ``committed`` is the group's committed offset, the next record it reads: a partition
        just (re)assigned has handed the worker nothing yet, and is behind only by the
        records from there. With neither a record nor a committed offset, where the reading
        started (the reset policy's offset) is not known here, and nothing is judged.
        Returns the lag in records, or None when unknown.

        >>> p = PartitionProgress(progressed_s=100.0)  # just assigned: no record yet
        >>> p.watch(50, now_s=200.0, stall_timeout_s=30.0, committed=50), p.stalled  # idle
        (0, False)
        >>> p.watch(50, now_s=240.0, stall_timeout_s=30.0, committed=40), p.stalled  # waiting
        (10, True)
        >>> p.watch(50, now_s=300.0, stall_timeout_s=30.0), p.stalled  # never committed
        (None, False)
        """
        if committed is None and self.last_offset < 0:
            self.stalled, self.progressed_s = False, now_s
            return None
        read = max(self.last_offset, -1 if committed is None else committed - 1)
        behind = highwater is not None and highwater - 1 > read
        self.stalled = behind and now_s - self.progressed_s > stall_timeout_s
        if not behind:
            self.progressed_s = now_s
        if highwater is None or read < 0:
            return None
        return max(0, highwater - 1 - read)
