"""An entity's windows checkpoint: a snapshot taken at its latest window step, and a journal
of the records it took since, written in segments.

Serialising an entity's windows (:meth:`~models.entity.EntityPipeline.windows_bytes`)
compresses a few kilobytes per series; an entity that sends a scrape a second and steps every
ten seconds would pay that ten times per step. So the snapshot is written only when it
changes (after a step, on eviction, or once the journal outweighs it), and each write in
between adds a journal segment: the records taken since the previous write, as they came
from Kafka, under the snapshot's identity (its CRC-32). A journal rewritten whole at each
write cost the square of its length: 24 KB a step for a host of 20 metrics scraped every
second, where its segments hold its 4.4 KB once.

The worker writes the snapshot and the segments under keys of one table, all in the entity's
partition (:func:`streams.state_store.journal_key`), the snapshot first and the segments in
order, segment 0 first after each snapshot. Kafka keeps one partition's records in order, so
whatever part of the writes survives a crash, the segments of the snapshot it holds are a
run from segment 0: restoring reads the snapshot, then the segments from 0 for as long as they
name that snapshot (see :func:`records`), taking their records again; a segment past the run
is an older snapshot's, whose records the snapshot holds. A snapshot starts its segments at 0
again and leaves the older ones to be overwritten; an entity evicted at rest deletes them all
(tombstones), so the compacted changelog keeps no journal of it. A snapshot is also taken once
:data:`MAX_SEGMENTS` segments follow it, which bounds the keys an entity holds.

Layouts: a snapshot is :meth:`~models.entity.EntityPipeline.windows_bytes` as it is. A
segment is ``FSR1``, the snapshot's identity (4 bytes), then per record its offset (8 bytes),
its length (4 bytes) and its bytes. A windows value ``FSJ1`` (the snapshot's length, the
snapshot, then records as in a segment) is one saved before the journal had keys of its own.

>>> taken = bytearray()
>>> append(taken, 7, b"batch")
>>> read(b"FSE2snapshot")
(b'FSE2snapshot', [])
>>> records([entry(identity(b"FSE2snapshot"), taken)], b"FSE2snapshot")
[(7, b'batch')]
>>> records([entry(identity(b"FSE2snapshot"), taken)], b"FSE2newer")
[]
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

_FRAME = b"FSJ1"
_JOURNAL = b"FSR1"
_LENGTH = struct.Struct(">I")
_RECORD = struct.Struct(">qI")

Taken = list[tuple[int, bytes]]

# Segments after a snapshot before the next snapshot is taken. A worker keeping up writes one
# per pass that took an entity's records (ten a step at a scrape a second): the bound holds
# the keys an entity leaves in the table, and what a restore reads, to a few dozen.
MAX_SEGMENTS = 32


def identity(snapshot: bytes) -> int:
    """The identity a journal names its snapshot by."""
    return zlib.crc32(snapshot)


def append(journal: bytearray, offset: int, value: bytes) -> None:
    """Add the record at ``offset`` to ``journal``."""
    journal += _RECORD.pack(offset, len(value))
    journal += value


def entry(snapshot_id: int, journal: bytes | bytearray) -> bytes:
    """A segment's table value: the records of ``journal``, taken since the snapshot whose
    identity is ``snapshot_id``."""
    return b"".join((_JOURNAL, _LENGTH.pack(snapshot_id), journal))


def read(value: bytes) -> tuple[bytes, Taken]:
    """The snapshot of a windows value, and the ``(offset, record)`` pairs a value saved
    before the journal had its own key carries with it.

    Raises ValueError when the value is cut short.
    """
    if value[:4] != _FRAME:
        return value, []
    (length,) = _LENGTH.unpack_from(value, 4)
    at = 8 + length
    snapshot = value[8:at]
    if len(snapshot) != length:
        raise ValueError(f"entity checkpoint is cut short: its snapshot has {len(snapshot)} bytes")
    return snapshot, _records(value, at)


def records(segments: Iterable[bytes], snapshot: bytes) -> Taken:
    """The ``(offset, record)`` pairs of a journal's segments (from segment 0, in order) taken
    since ``snapshot``: those of the run of segments that name it; none when the first names
    another snapshot (an older one: ``snapshot`` holds its records already).

    Raises ValueError when a segment of the run is not a journal segment or is cut short.
    """
    taken: Taken = []
    expected = identity(snapshot)
    for value in segments:
        if value[:4] != _JOURNAL or len(value) < 8:
            raise ValueError(f"entity journal starts with {value[:8]!r}, not {_JOURNAL!r}")
        (snapshot_id,) = _LENGTH.unpack_from(value, 4)
        if snapshot_id != expected:
            break
        taken += _records(value, 8)
    return taken


def _records(value: bytes, at: int) -> Taken:
    taken = []
    while at < len(value):
        if at + _RECORD.size > len(value):
            raise ValueError(f"entity checkpoint is cut short at byte {at} of {len(value)}")
        offset, size = _RECORD.unpack_from(value, at)
        at += _RECORD.size
        if at + size > len(value):
            raise ValueError(f"entity checkpoint is cut short at byte {at} of {len(value)}")
        taken.append((offset, value[at : at + size]))
        at += size
    return taken
