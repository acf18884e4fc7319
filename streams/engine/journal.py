"""An entity's windows checkpoint: a snapshot taken at its latest window step, and a journal
of the records it took since.

Serialising an entity's windows (:meth:`~models.entity.EntityPipeline.windows_bytes`)
compresses a few kilobytes per series; an entity that sends a scrape a second and steps every
ten seconds would pay that ten times per step. So the snapshot is written only when it
changes (after a step, on eviction, or once the journal outweighs it), and each pass in
between writes only the journal: the records taken since the snapshot, as they came from
Kafka, under the snapshot's identity (its CRC-32). Restoring reads the snapshot and takes the
journal's records again, skipping those the snapshot already holds; a journal that names
another snapshot is ignored (see :func:`records`).

The worker writes both under two keys of one table, in the entity's partition
(:func:`streams.state_store.journal_key`), the snapshot first: Kafka keeps one partition's
records in order, so whatever part of the writes survives a crash, the journal it holds is
the one of the snapshot it holds or an older one, whose records that snapshot already has.
A new snapshot has no records since it: the worker deletes the journal's key then (a
tombstone), so the compacted changelog keeps no journal of an entity at rest.

Layouts: a snapshot is :meth:`~models.entity.EntityPipeline.windows_bytes` as it is. A
journal is ``FSR1``, the snapshot's identity (4 bytes), then per record its offset (8 bytes),
its length (4 bytes) and its bytes. A windows value ``FSJ1`` (the snapshot's length, the
snapshot, then records as in a journal) is one saved before the journal had its own key.

>>> taken = bytearray()
>>> append(taken, 7, b"batch")
>>> read(b"FSE2snapshot")
(b'FSE2snapshot', [])
>>> records(entry(identity(b"FSE2snapshot"), taken), b"FSE2snapshot")
[(7, b'batch')]
>>> records(entry(identity(b"FSE2snapshot"), taken), b"FSE2newer")
[]
"""

from __future__ import annotations

import struct
import zlib

_FRAME = b"FSJ1"
_JOURNAL = b"FSR1"
_LENGTH = struct.Struct(">I")
_RECORD = struct.Struct(">qI")

Taken = list[tuple[int, bytes]]


def identity(snapshot: bytes) -> int:
    """The identity a journal names its snapshot by."""
    return zlib.crc32(snapshot)


def append(journal: bytearray, offset: int, value: bytes) -> None:
    """Add the record at ``offset`` to ``journal``."""
    journal += _RECORD.pack(offset, len(value))
    journal += value


def entry(snapshot_id: int, journal: bytes | bytearray) -> bytes:
    """The journal's table value: the records of ``journal``, taken since the snapshot whose
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


def records(value: bytes, snapshot: bytes) -> Taken:
    """The ``(offset, record)`` pairs of a journal value taken since ``snapshot``; none when
    it names another snapshot (an older one: ``snapshot`` holds its records already).

    Raises ValueError when the value is not a journal or is cut short.
    """
    if value[:4] != _JOURNAL or len(value) < 8:
        raise ValueError(f"entity journal starts with {value[:8]!r}, not {_JOURNAL!r}")
    (snapshot_id,) = _LENGTH.unpack_from(value, 4)
    return _records(value, 8) if snapshot_id == identity(snapshot) else []


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
