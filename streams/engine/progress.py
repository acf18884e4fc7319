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
    """

    max_event_ms: int = 0
    last_arrival_s: float = 0.0  # wall time of the newest record
    last_offset: int = -1
    progressed_s: float = field(default_factory=time.time)
    stalled: bool = False

    def watermark(self, now_s: float, idle_timeout_s: float) -> int:
        """Event-time watermark; follows wall time once the partition has been idle."""
        idle = now_s - self.last_arrival_s
        if self.max_event_ms and idle >= idle_timeout_s:
            return self.max_event_ms + int(idle * 1000)
        return self.max_event_ms

    def arrived(self, offset: int, now_s: float) -> None:
        """A record at ``offset`` was consumed at ``now_s``."""
        self.last_arrival_s = now_s
        self.last_offset = offset
        self.progressed_s = now_s

    def watch(self, highwater: int | None, now_s: float, stall_timeout_s: float) -> int | None:
        """Judge the partition against its end (``highwater``, the next offset to be written
        minus one): stalled when records wait and nothing moved for ``stall_timeout_s``.
        Returns the lag in records, or None when unknown."""
        behind = highwater is not None and highwater - 1 > self.last_offset
        self.stalled = behind and now_s - self.progressed_s > stall_timeout_s
        if not behind:
            self.progressed_s = now_s
        if highwater is None or self.last_offset < 0:
            return None
        return max(0, highwater - 1 - self.last_offset)
