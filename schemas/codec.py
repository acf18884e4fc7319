"""Avro codec for every Foresight record: parse each schema once, frame, encode and decode.

Each message is framed so a reader knows which schema wrote it:

* Foresight framing (default): ``0xF5``, one byte of name length, the schema name (ASCII), a
  big-endian ``uint16`` schema version, then the Avro body. Older versions kept under
  ``schemas/avro/history`` decode into the current schema (Avro schema resolution).
* Confluent wire format, when a schema registry is configured: ``0x00``, a big-endian
  ``uint32`` schema id, then the Avro body.

Timestamps travel as ``timestamp-millis`` longs and are handed to Python as ``int``
milliseconds, not ``datetime``: the hot path does arithmetic on them, and the schemas keep the
logical type for other readers (ClickHouse, Java consumers).

Decoding never raises into a consumer loop through :meth:`Codec.decode_message`: a message
that cannot be read becomes a :class:`DeadLetter` with the reason.
"""

from __future__ import annotations

import copy
import io
import json
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Protocol

import fastavro

from schemas.avro_reader import CorruptBodyError, Reader, compile_reader
from schemas.avro_writer import compile_writer

Record = dict[str, Any]

FORESIGHT_MAGIC = 0xF5
CONFLUENT_MAGIC = 0x00
VERSION_KEY = "foresight.version"

#: Schema name (file stem) -> fully qualified Avro name.
SCHEMA_NAMES = {
    "metric_batch": "io.foresight.MetricBatch",
    "agent_event": "io.foresight.AgentEvent",
    "label": "io.foresight.Label",
    "dead_letter": "io.foresight.DeadLetter",
    "feature_vector": "io.foresight.FeatureVector",
    "prediction_batch": "io.foresight.PredictionBatch",
    "alert": "io.foresight.Alert",
    "routing_request": "io.foresight.RoutingRequest",
    "routing_decision": "io.foresight.RoutingDecision",
    "model_update": "io.foresight.ModelUpdate",
    "audit_event": "io.foresight.AuditEvent",
    "code_quality_snapshot": "io.foresight.CodeQualitySnapshot",
}


class DecodeError(ValueError):
    """A message could not be decoded; ``kind`` classifies the reason for dead letters."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def _strip_timestamp_types(node: Any) -> Any:
    """Drop timestamp logical types so fastavro passes epoch-millis ints through."""
    if isinstance(node, dict):
        out = {k: _strip_timestamp_types(v) for k, v in node.items()}
        if out.get("logicalType") in ("timestamp-millis", "timestamp-micros"):
            del out["logicalType"]
        return out
    if isinstance(node, list):
        return [_strip_timestamp_types(v) for v in node]
    return node


@dataclass(frozen=True)
class Schema:
    """One version of one record schema, parsed once."""

    name: str
    version: int
    raw: dict[str, Any]
    parsed: Any

    @property
    def full_name(self) -> str:
        return SCHEMA_NAMES[self.name]

    def canonical(self) -> str:
        """The schema as JSON with keys sorted, for comparing and registering."""
        return json.dumps(self.raw, sort_keys=True, separators=(",", ":"))


def _parse(name: str, raw: dict[str, Any]) -> Schema:
    version = int(raw.get(VERSION_KEY, 0))  # 0: registered by a writer other than Foresight
    parsed = fastavro.parse_schema(_strip_timestamp_types(copy.deepcopy(raw)), _force=True)
    return Schema(name=name, version=version, raw=raw, parsed=parsed)


def _read_json(relative: str) -> dict[str, Any]:
    text = resources.files("schemas").joinpath(relative).read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def current_schema(name: str) -> Schema:
    """The current version of schema ``name`` (a key of :data:`SCHEMA_NAMES`)."""
    if name not in SCHEMA_NAMES:
        raise KeyError(f"unknown schema {name!r}; known: {sorted(SCHEMA_NAMES)}")
    return _parse(name, _read_json(f"avro/{name}.avsc"))


@cache
def schema_history(name: str) -> dict[int, Schema]:
    """Every committed version of schema ``name``, by version number."""
    folder = resources.files("schemas").joinpath("avro/history")
    versions: dict[int, Schema] = {}
    for entry in folder.iterdir():
        stem, _, rest = entry.name.partition(".v")
        if stem == name and rest.endswith(".avsc"):
            schema = _parse(name, json.loads(entry.read_text()))
            versions[schema.version] = schema
    return versions


@cache
def _writer(name: str) -> Callable[[Any], bytes]:
    return compile_writer(current_schema(name).raw)


@cache
def _reader(name: str) -> Reader:
    return compile_reader(current_schema(name).raw)


class SchemaRegistry(Protocol):
    """What the codec needs of a Confluent-compatible schema registry."""

    def id_for(self, schema: Schema) -> int: ...

    def schema_for(self, schema_id: int) -> tuple[str, dict[str, Any]]:
        """The schema name (a key of SCHEMA_NAMES) and raw schema registered under an id."""
        ...


@dataclass(frozen=True)
class DeadLetter:
    """A message that could not be decoded, with everything needed to replay it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    reason: str
    error_kind: str

    def to_record(self, now_ms: int | None = None) -> Record:
        """The ``DeadLetter`` Avro record for ``telemetry.deadletter``."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key,
            "value": self.value,
            "reason": self.reason,
            "error_kind": self.error_kind,
            "event_time": int(time.time() * 1000) if now_ms is None else now_ms,
        }


PROBE_HEADER = "foresight-probe"
"""The Kafka header of a readiness probe (:func:`streams.worker_process.group_ready`): a
record that carries it is counted consumed by whoever reads it, and is no record at all."""


def is_probe(headers: Sequence[tuple[str, bytes]] | None) -> bool:
    """Whether a message with Kafka ``headers`` is a readiness probe."""
    if not headers:  # the usual record: no generator made
        return False
    return any(key == PROBE_HEADER for key, _ in headers)


@dataclass(frozen=True)
class Message:
    """The parts of a Kafka message the codec needs to decode or dead-letter it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class Codec:
    """Encodes and decodes framed Avro records of every Foresight schema.

    Parameters
    ----------
    registry
        A Confluent-compatible schema registry. ``None`` (the default, and when
        ``SCHEMA_REGISTRY_URL`` is empty) uses Foresight's own framing.

    Examples
    --------
    >>> codec = Codec()
    >>> data = codec.encode("label", {"entity": "web-1", "kind": "FAILURE",
    ...     "incident_type": "oom", "start_time": 1700000000000})
    >>> codec.decode(data)[1]["incident_type"]
    'oom'
    """

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        self._registry = registry
        self._headers: dict[str, bytes] = {}
        self._by_id: dict[int, tuple[Schema, Schema]] = {}

    def _header(self, schema: Schema) -> bytes:
        header = self._headers.get(schema.name)
        if header is None:
            if self._registry is not None:
                header = struct.pack(">bI", CONFLUENT_MAGIC, self._registry.id_for(schema))
            else:
                name = schema.name.encode("ascii")
                header = bytes([FORESIGHT_MAGIC, len(name)]) + name
                header += struct.pack(">H", schema.version)
            self._headers[schema.name] = header
        return header

    def register_all(self) -> None:
        """Register every current schema now, so that a registry which refuses one, or does
        not answer, stops a process at its start rather than at its first record."""
        for name in SCHEMA_NAMES:
            self._header(current_schema(name))

    def encode(self, name: str, record: Record) -> bytes:
        """Frame and encode one record of schema ``name``; raises ``ValueError`` if invalid.

        Arrays of numbers may be NumPy arrays. The body is what fastavro would write
        (:mod:`schemas.avro_writer`, several times faster on arrays of doubles).
        """
        schema = current_schema(name)
        try:
            body = _writer(name)(record)
        except (ValueError, TypeError, KeyError, AttributeError, struct.error) as error:
            raise ValueError(f"{name} record does not fit its schema: {error}") from error
        return self._header(schema) + body

    def encode_many(self, name: str, records: Iterable[Record]) -> list[bytes]:
        """Encode a batch of records of one schema."""
        return [self.encode(name, record) for record in records]

    def _writer_and_reader(self, data: bytes) -> tuple[Schema, Schema, int]:
        if not data:
            raise DecodeError("undecodable", "empty message")
        magic = data[0]
        if magic == FORESIGHT_MAGIC:
            if len(data) < 2 or len(data) < 4 + data[1]:
                raise DecodeError("undecodable", "truncated Foresight header")
            end = 2 + data[1]
            name = data[2:end].decode("ascii", errors="replace")
            (version,) = struct.unpack_from(">H", data, end)
            if name not in SCHEMA_NAMES:
                raise DecodeError("unknown_schema", f"unknown schema name {name!r}")
            current = current_schema(name)
            writer = current if version == current.version else schema_history(name).get(version)
            if writer is None:
                raise DecodeError(
                    "unknown_schema",
                    f"{name} schema version {version} is unknown "
                    f"(this build knows up to {current.version})",
                )
            return writer, current, end + 2
        if magic == CONFLUENT_MAGIC:
            if self._registry is None:
                raise DecodeError(
                    "unknown_schema",
                    "Confluent-framed message but no SCHEMA_REGISTRY_URL is configured",
                )
            if len(data) < 5:
                raise DecodeError("undecodable", "truncated Confluent header")
            (schema_id,) = struct.unpack_from(">I", data, 1)
            pair = self._by_id.get(schema_id)
            if pair is None:
                try:
                    name, raw = self._registry.schema_for(schema_id)
                except LookupError as error:  # unknown id, or no registry answers
                    raise DecodeError("unknown_schema", str(error)) from error
                current = current_schema(name)
                pair = (current if raw == current.raw else _parse(name, raw), current)
                self._by_id[schema_id] = pair
            return pair[0], pair[1], 5
        raise DecodeError(
            "undecodable",
            f"unknown framing byte 0x{magic:02x} (not Foresight 0xf5 or Confluent 0x00)",
        )

    def decode(self, data: bytes) -> tuple[str, Record]:
        """Decode one framed message into ``(schema name, record)``; raises DecodeError.

        A body written with the current schema is read by :mod:`schemas.avro_reader` (the
        records fastavro gives, several times faster on arrays); one of an older version by
        fastavro, which resolves it into the current schema.
        """
        writer, reader, start = self._writer_and_reader(data)
        record: Any
        try:
            if writer is reader:
                record, end = _reader(writer.name)(data, start)
            else:
                buffer = io.BytesIO(data)
                buffer.seek(start)
                record = fastavro.schemaless_reader(buffer, writer.parsed, reader.parsed)
                end = buffer.tell()
        except CorruptBodyError as error:
            raise self._corrupt(writer, str(error)) from error
        except Exception as error:  # fastavro raises many types on corrupt bodies
            raise self._corrupt(writer, repr(error)) from error
        if end != len(data):
            raise DecodeError(
                "undecodable", f"{writer.name} v{writer.version}: {len(data) - end} trailing bytes"
            )
        assert isinstance(record, dict)
        return reader.name, record

    @staticmethod
    def _corrupt(writer: Schema, reason: str) -> DecodeError:
        return DecodeError(
            "undecodable", f"{writer.name} v{writer.version} body is corrupt: {reason}"
        )

    def decode_message(self, message: Message, expect: str) -> Record | DeadLetter:
        """Decode a Kafka message that should hold schema ``expect``, or dead-letter it."""
        try:
            name, record = self.decode(message.value)
        except DecodeError as error:
            return self._dead(message, error.kind, str(error))
        if name != expect:
            return self._dead(
                message, "unknown_schema", f"expected a {expect} record, got a {name} record"
            )
        return record

    def decode_many(
        self, messages: Iterable[Message], expect: str
    ) -> tuple[list[Record], list[DeadLetter]]:
        """Decode a batch; undecodable messages come back as dead letters, in order."""
        records: list[Record] = []
        dead: list[DeadLetter] = []
        for message in messages:
            result = self.decode_message(message, expect)
            if isinstance(result, DeadLetter):
                dead.append(result)
            else:
                records.append(result)
        return records, dead

    @staticmethod
    def _dead(message: Message, kind: str, reason: str) -> DeadLetter:
        return DeadLetter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            reason=reason,
            error_kind=kind,
        )
