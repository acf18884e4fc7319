"""An entity's windows checkpoint: a snapshot, and a journal of what the entity took since,
written in segments.

Serialising an entity's windows (:meth:`~models.entity.EntityPipeline.windows_bytes`)
compresses a few kilobytes per series; an entity that sends a scrape a second and steps every
ten seconds would pay that ten times per step. So the snapshot is written only when it has to
be, and each write in between adds a journal segment: what the entity took since the previous
write, under the snapshot's identity (its CRC-32). The journal holds two kinds of entry: the
records taken, as they came from Kafka, and the window steps closed, each with the state it
left (:meth:`~models.entity.EntityPipeline.step_state`: the step's time and the alert states,
a hundred bytes; the rest of what a step changes comes back with its records). A snapshot is
taken at an entity's step once the journal since the last outweighs it (entities step on
phases of their own, so their snapshots spread over the step as their steps do), on
eviction, and when the journal reaches :data:`MAX_WEIGHT` times its snapshot between steps or
fills its segments. A snapshot after every step, as before the journal took steps, wrote
twice the changelog bytes. A journal rewritten whole at each write cost the square of its
length: 24 KB a step for a host of 20 metrics scraped every second, where its segments hold
its 4.4 KB once.

The worker writes the snapshot and the segments under keys of one table, all in the entity's
partition (:func:`streams.state_store.journal_key`), the snapshot first and the segments in
order, segment 0 first after each snapshot. Kafka keeps one partition's records in order, so
whatever part of the writes survives a crash, the segments of the snapshot it holds are a
run from segment 0: restoring reads the snapshot, then the segments from 0 for as long as they
name that snapshot (see :func:`records`), taking their records and steps again in order; a
segment past the run is an older snapshot's, whose entries the snapshot holds. A snapshot
starts its segments at 0 again and leaves the older ones to be overwritten; an entity evicted
at rest deletes them all (tombstones), so the compacted changelog keeps no journal of it. A
snapshot is also taken once :data:`MAX_SEGMENTS` segments follow it, which bounds the keys an
entity holds.

Layouts: a snapshot is :meth:`~models.entity.EntityPipeline.windows_bytes` as it is. A
segment is ``FSR1``, the snapshot's identity (4 bytes), then per entry an offset (8 bytes), a
length (4 bytes) and that many bytes: a record's Kafka offset and its bytes, or :data:`STEP`
and a step state. A reader that predates steps skips them as records it already holds (their
offset, -1, is below any it has). A windows value ``FSJ1`` (the snapshot's length, the
snapshot, then entries as in a segment) is one saved before the journal had keys of its own.

>>> taken = bytearray()
>>> append(taken, 7, b"batch")
>>> append(taken, STEP, b"step state")
>>> read(b"FSE2snapshot")
(b'FSE2snapshot', [])
>>> records([entry(identity(b"FSE2snapshot"), taken)], b"FSE2snapshot")
[(7, b'batch'), (-1, b'step state')]
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

#: The offset of a journal entry that is a window step, not a record.
STEP = -1

# Segments after a snapshot before the next snapshot is taken. A worker keeping up writes one
# per pass that took an entity's records (ten a step at a scrape a second): the bound holds
# the keys an entity leaves in the table, and what a restore reads, to a few dozen.
MAX_SEGMENTS = 32

# How many times its snapshot's size a journal may grow to between steps. At a step, a
# journal that outweighs its snapshot is folded into a new one: entities step on phases of
# their own, so their snapshots spread over the step as their steps do. This bound is for an
# entity whose records close no step.
MAX_WEIGHT = 2


def identity(snapshot: bytes) -> int:
    """The identity a journal names its snapshot by."""
    return zlib.crc32(snapshot)


def append(journal: bytearray, offset: int, value: bytes) -> None:
    """Add the record at ``offset`` to ``journal`` (or, at :data:`STEP`, a step state)."""
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
    since ``snapshot``, steps among them at :data:`STEP`: those of the run of segments that
    name it; none when the first names another snapshot (an older one: ``snapshot`` holds its
    entries already).

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
