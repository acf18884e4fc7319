"""An entity's windows checkpoint: a snapshot taken at its latest window step, and the
records it took since.

Serialising an entity's windows (:meth:`~models.entity.EntityPipeline.windows_bytes`)
compresses a few kilobytes per series; an entity that sends a scrape a second and steps every
ten seconds would pay that ten times per step. So the snapshot is taken once per step (a
step changes the alert states and the step time too), and each pass in between writes the
same snapshot followed by the records that arrived since, as they came from Kafka. Both go
in one table value, so the changelog never holds one without the other; restoring reads the
snapshot and takes the records again, skipping those the snapshot already holds.

Layout: ``FSJ1``, the snapshot's length (4 bytes) and the snapshot, then per record its
offset (8 bytes), its length (4 bytes) and its bytes. A value that is a bare snapshot (saved
before this layout) reads as a snapshot with no records.

>>> journal = bytearray()
>>> append(journal, 7, b"batch")
>>> read(frame(b"FSE2snapshot", journal))
(b'FSE2snapshot', [(7, b'batch')])
>>> read(b"FSE2snapshot")
(b'FSE2snapshot', [])
"""

from __future__ import annotations

import struct

_MAGIC = b"FSJ1"
_LENGTH = struct.Struct(">I")
_RECORD = struct.Struct(">qI")


def append(journal: bytearray, offset: int, value: bytes) -> None:
    """Add the record at ``offset`` to ``journal``."""
    journal += _RECORD.pack(offset, len(value))
    journal += value


def frame(snapshot: bytes, journal: bytes | bytearray) -> bytes:
    """The table value: the snapshot, then the records of ``journal`` taken since."""
    return b"".join((_MAGIC, _LENGTH.pack(len(snapshot)), snapshot, journal))


def read(value: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """The snapshot and the ``(offset, record)`` pairs of a table value.

    Raises ValueError when the value is cut short.
    """
    if value[:4] != _MAGIC:
        return value, []
    (length,) = _LENGTH.unpack_from(value, 4)
    at = 8 + length
    snapshot, taken = value[8:at], []
    while at < len(value):
        if at + _RECORD.size > len(value):
            raise ValueError(f"entity checkpoint is cut short at byte {at} of {len(value)}")
        offset, size = _RECORD.unpack_from(value, at)
        at += _RECORD.size
        if at + size > len(value):
            raise ValueError(f"entity checkpoint is cut short at byte {at} of {len(value)}")
        taken.append((offset, value[at : at + size]))
        at += size
    if len(snapshot) != length:
        raise ValueError(f"entity checkpoint is cut short: its snapshot has {len(snapshot)} bytes")
    return snapshot, taken
