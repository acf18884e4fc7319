"""What one engine call produces: records to send, dead letters among them, and checkpoints.

Records are encoded here, so the size limit is enforced before anything reaches a producer:
an output over ``max_record_bytes`` is not sent, and the input that caused it is
dead-lettered with the reason instead (Kafka would refuse the record, and a refused send
must never cost the input its trace).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors import prometheus as metrics
from schemas.codec import Codec, DeadLetter, Message
from schemas.json_form import dumps
from streams import topics

Record = dict[str, Any]

_TRUNCATION_NOTE = "; key and value cut from {size:,} bytes: the whole record stays at {where}"


@dataclass(frozen=True)
class Output:
    """One record to produce: topic, key and encoded value, the input it came from, and the
    cache entries it refreshes (``features``, ``predictions``, ``forecasts``)."""

    topic: str
    key: bytes | None
    value: bytes
    cause: Message | None = None
    cache: tuple[str, ...] = ()


@dataclass(frozen=True)
class Checkpoint:
    """An entity's state for the worker's tables: its windows snapshot, segments of the
    journal of records taken since (:mod:`.journal`) and its model states.

    Written: None means that part is unchanged; ``journal`` holds the segments to write from
    index ``segment`` on (after a new snapshot, none yet: segment 0 comes next), and the keys
    of segments ``0`` to ``drop_segments - 1`` are deleted after them (tombstones in the
    changelog: an entity evicted at rest). Loaded: None means that none is saved, and
    ``journal`` holds every saved segment from 0 on."""

    entity: str
    windows: bytes | None = None
    journal: tuple[bytes, ...] = ()
    models: bytes | None = None
    segment: int = 0
    drop_segments: int = 0

    @property
    def size(self) -> int:
        """The bytes the written parts hold."""
        return len(self.windows or b"") + sum(map(len, self.journal)) + len(self.models or b"")


@dataclass
class Outputs:
    """Everything an engine call produced, in order."""

    codec: Codec
    max_record_bytes: int
    twins: Mapping[str, tuple[topics.JsonTwin, ...]] = field(default_factory=dict)
    records: list[Output] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)

    def emit(
        self,
        spec: topics.TopicSpec,
        key: str,
        record: Record,
        cause: Message | None,
        cache: tuple[str, ...] = (),
    ) -> bytes | None:
        """Encode and queue ``record``, then its JSON twins; returns its bytes, or None when
        it was too large (then ``cause``, the input that led to it, is dead-lettered)."""
        value = self.codec.encode(spec.schema, record)
        encoded = self.raw(spec.name, key.encode(), value, cause, cache)
        if encoded is not None and spec.schema == "prediction_batch":
            kinds: Counter[str] = Counter(record["kinds"])
            for kind, made in kinds.items():
                metrics.PREDICTIONS.labels(kind).inc(made)
        for twin in self.twins.get(spec.name, ()):
            self.raw(twin.spec.name, key.encode(), dumps(twin.build(record)), cause)
        return encoded

    def raw(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        cause: Message | None,
        cache: tuple[str, ...] = (),
    ) -> bytes | None:
        """Queue an already encoded record, with the same size rule as :meth:`emit`."""
        size = len(key) + len(value)
        if size > self.max_record_bytes:
            self.dead(too_large(cause, topic, size, self.max_record_bytes))
            return None
        self.records.append(Output(topic, key, value, cause, cache))
        return value

    def dead(self, letter: DeadLetter) -> None:
        """Queue a dead letter, counted by its kind; a key and value too large to carry whole
        are cut (the whole record stays in its source topic, at the offset the letter names)."""
        metrics.DEAD_LETTERS.labels(letter.error_kind).inc()
        room = self.max_record_bytes // 2
        key_size = len(letter.key or b"")
        # The key travels twice: as the letter's Kafka key and in the letter itself.
        if len(letter.value) + 2 * key_size > room:
            where = f"{letter.topic}:{letter.partition}@{letter.offset}"
            note = _TRUNCATION_NOTE.format(size=len(letter.value) + key_size, where=where)
            letter = DeadLetter(
                letter.topic,
                letter.partition,
                letter.offset,
                letter.key[:1024] if letter.key else letter.key,
                letter.value[:room],
                letter.reason[:2000] + note,
                letter.error_kind,
            )
        value = self.codec.encode(topics.DEADLETTER.schema, letter.to_record())
        self.records.append(Output(topics.DEADLETTER.name, letter.key, value))

    def extend(self, other: Outputs) -> None:
        self.records += other.records
        self.checkpoints += other.checkpoints


def rejected(message: Message, kind: str, reason: str) -> DeadLetter:
    """A dead letter for a consumed message."""
    return DeadLetter(
        message.topic, message.partition, message.offset, message.key, message.value, reason, kind
    )


def too_large(cause: Message | None, topic: str, size: int, limit: int) -> DeadLetter:
    """The dead letter of an input whose output to ``topic`` would be ``size`` bytes."""
    reason = (
        f"its {topic} record would be {size:,} bytes, over FORESIGHT_MAX_RECORD_BYTES "
        f"({limit:,}): fewer or shorter metric names per entity make it fit"
    )
    if cause is None:  # a step closed by the clock, not by a record
        return DeadLetter(topic, -1, -1, None, b"", reason, "output_too_large")
    return rejected(cause, "output_too_large", reason)
