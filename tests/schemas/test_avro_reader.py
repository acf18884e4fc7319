"""The compiled Avro reader reads what fastavro reads, and refuses hostile bodies with a reason."""

from __future__ import annotations

import copy
import io
import math
import struct
from typing import Any

import fastavro
import pytest

from schemas.avro_reader import CorruptBodyError, compile_reader
from schemas.avro_writer import _long
from schemas.codec import (
    SCHEMA_NAMES,
    Codec,
    DecodeError,
    Schema,
    _strip_timestamp_types,
    current_schema,
    schema_history,
)
from tests.schemas.samples import SAMPLES, V1_SAMPLES


def varint(n: int) -> bytes:
    out = bytearray()
    _long(out, n)
    return bytes(out)


def text(value: str) -> bytes:
    return varint(len(value.encode())) + value.encode()


def typed(value: Any) -> Any:
    """``value`` with every leaf's type kept, and floats by their bits (NaN equals NaN)."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return (type(value).__name__, [typed(v) for v in value])
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    return (type(value).__name__, value)


def parsed(raw: dict[str, Any]) -> Any:
    """``raw`` parsed as the codec parses it for fastavro (timestamps as int milliseconds)."""
    return fastavro.parse_schema(_strip_timestamp_types(copy.deepcopy(raw)), _force=True)


def fastavro_read(raw: dict[str, Any], body: bytes) -> tuple[Any, int]:
    buffer = io.BytesIO(body)
    record = fastavro.schemaless_reader(buffer, parsed(raw), None)
    return record, buffer.tell()


def fastavro_write(raw: dict[str, Any], record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed(raw), record)
    return buffer.getvalue()


def record_of(*fields: tuple[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "T", "fields": [{"name": n, "type": t} for n, t in fields]}


SAMPLED = [(name, SAMPLES[name], current_schema(name).raw) for name in sorted(SCHEMA_NAMES)] + [
    (f"{name} v1", V1_SAMPLES[name], schema_history(name)[1].raw) for name in sorted(V1_SAMPLES)
]


@pytest.mark.parametrize(("name", "sample", "raw"), SAMPLED, ids=[s[0] for s in SAMPLED])
def test_every_sample_reads_as_fastavro_reads_it(
    name: str, sample: dict[str, Any], raw: dict[str, Any]
) -> None:
    odd = {k: (-0.0 if v else math.nan) if isinstance(v, float) else v for k, v in sample.items()}
    for record in (sample, odd):
        body = b"junk" + fastavro_write(raw, record)
        expected, end = fastavro_read(raw, body[4:])
        assert typed(compile_reader(raw)(body, 4)) == typed((expected, end + 4))


ARRAYS = [
    ("double", [1.5, -0.0], struct.pack("<2d", 1.5, -0.0)),
    ("long", [3, -1], varint(3) + varint(-1)),
    ("long", [300, 2], varint(300) + varint(2)),
    ("string", ["a", "é"], text("a") + text("é")),
    ({"type": "enum", "name": "E", "symbols": ["A", "B"]}, ["B", "A"], b"\x02\x00"),
]


@pytest.mark.parametrize(("items", "values", "encoded"), ARRAYS)
def test_arrays_in_several_blocks_and_blocks_with_their_size(
    items: Any, values: list[Any], encoded: bytes
) -> None:
    raw = record_of(("a", {"type": "array", "items": items}))
    one, two = values
    cut = len(encoded) // 2 if items != "long" else len(varint(one))
    first, second = encoded[:cut], encoded[cut:]
    for body in (
        varint(1) + first + varint(1) + second + b"\x00",
        varint(-1) + varint(len(first)) + first + varint(-1) + varint(99) + second + b"\x00",
    ):
        assert typed(compile_reader(raw)(body, 0)) == typed(fastavro_read(raw, body))
        assert compile_reader(raw)(body, 0)[0] == {"a": [one, two]}


def test_maps_in_blocks_and_a_repeated_key() -> None:
    raw = record_of(("m", {"type": "map", "values": "double"}))
    body = b"\x02" + text("k") + struct.pack("<d", 1.0)
    body += varint(-2) + varint(20) + text("j") + struct.pack("<d", 2.0)
    body += text("k") + struct.pack("<d", 3.0) + b"\x00"
    assert (
        compile_reader(raw)(body, 0)
        == fastavro_read(raw, body)
        == ({"m": {"k": 3.0, "j": 2.0}}, len(body))
    )


def test_large_blocks_and_multi_byte_ints() -> None:
    raw = record_of(
        ("d", {"type": "array", "items": "double"}), ("i", {"type": "array", "items": "int"})
    )
    record = {"d": [float(i) for i in range(500)], "i": list(range(-200, 200))}
    body = fastavro_write(raw, record)
    assert compile_reader(raw)(body, 0) == (record, len(body))


def test_arrays_of_strings_read_again_are_the_same_and_their_own() -> None:
    """The reader keeps arrays of strings it read, by their bytes: a repeat, an array that
    starts as a kept one and goes on otherwise, and one cut short inside a kept one's bytes
    each read as fastavro reads them, and each list is the caller's own."""
    raw = record_of(("names", {"type": "array", "items": "string"}), ("n", "long"))
    read = compile_reader(raw)
    names = [f"node_cpu_seconds_total_{i}" for i in range(6)]
    body = fastavro_write(raw, {"names": names, "n": 1})
    first, _ = read(body, 0)
    first["names"].append("mine")
    for record in (
        {"names": names, "n": 2},
        {"names": [*names[:5], "other"], "n": 3},
        {"names": names[:5], "n": 4},
        {"names": [*names, "more"], "n": 5},
        {"names": ["x" * 3000] * 4, "n": 6},  # too long to keep: read each time
        {"names": ["x" * 3000] * 4, "n": 7},
        {"names": [str(i % 10) for i in range(300)], "n": 8},  # too many strings to keep
        {"names": [str(i % 10) for i in range(300)], "n": 9},
    ):
        again = fastavro_write(raw, record)
        assert read(again, 0) == fastavro_read(raw, again) == (record, len(again))
    cut = body[: len(body) - 3]
    with pytest.raises(CorruptBodyError):
        read(cut, 0)


def test_a_record_that_refers_to_itself() -> None:
    raw = {
        "type": "record",
        "name": "Node",
        "fields": [
            {"name": "value", "type": "long"},
            {"name": "next", "type": ["null", "Node"]},
            {"name": "flag", "type": "boolean"},
            {"name": "ratio", "type": "float"},
            {"name": "raw", "type": "bytes"},
        ],
    }
    record = {
        "value": 1,
        "next": {"value": 2, "next": None, "flag": False, "ratio": 0.5, "raw": b""},
    }
    record.update(flag=True, ratio=1.25, raw=b"\x00\xff")
    body = fastavro_write(raw, record)
    assert compile_reader(raw)(body, 0) == fastavro_read(raw, body) == (record, len(body))


# Hostile bodies: each refused with where and what, never read as something else.
DOUBLES = record_of(("values", {"type": "array", "items": "double"}))
STRINGS = record_of(("names", {"type": "array", "items": "string"}))
LABELS = record_of(("labels", {"type": "map", "values": "string"}))
ENTITY = record_of(("entity", "string"))
TIME = record_of(("event_time", "long"))
HUGE = 2**60


@pytest.mark.parametrize(
    ("raw", "body", "reason"),
    [
        (
            DOUBLES,
            varint(HUGE) + bytes(64),
            f"field values: a block of {HUGE} items at byte 9, with 64 bytes left",
        ),
        (DOUBLES, varint(-HUGE) + varint(8) + bytes(8), f"a block of {HUGE} items"),
        (DOUBLES, varint(2) + bytes(15), "a block of 2 items at byte 1, with 15 bytes left"),
        (STRINGS, varint(HUGE) + b"\x00" * 9, f"field names: a block of {HUGE} items"),
        (STRINGS, varint(1) + varint(-1) + b"\x00", "field names: a length of -1 at byte 2"),
        (LABELS, varint(HUGE) + b"\x00", f"field labels: a block of {HUGE} items"),
        (LABELS, varint(1) + text("k") + varint(2**40), f"a length of {2**40}"),
        (ENTITY, varint(5) + b"ab", "field entity: a length of 5 at byte 1, with 2 bytes left"),
        (ENTITY, varint(2**62) + b"ab", f"a length of {2**62}"),
        (
            ENTITY,
            varint(2) + b"\xff\xfe",
            "field entity: not UTF-8: invalid start byte at its byte 0",
        ),
        (ENTITY, varint(3) + "\ud800".encode("utf-8", "surrogatepass"), "not UTF-8"),
        (ENTITY, b"", "field entity: the body ends inside it"),
        (TIME, b"\xff" * 100_000, "field event_time: the varint at byte 0 runs past 10 bytes"),
        (TIME, b"\xff" * 9 + b"\x03", "the varint at byte 0 does not fit 64 bits"),
        (TIME, b"\xff" * 5, "field event_time: the body ends inside it"),
        (record_of(("x", "double")), bytes(7), "field x: the body ends inside it"),
        (record_of(("x", "boolean")), b"\x02", "field x: a boolean byte of 2 at byte 0"),
        (
            record_of(("x", {"type": "enum", "name": "E", "symbols": ["A", "B"]})),
            b"\x04",
            "field x: enum index 2 of 2 symbols",
        ),
        (
            record_of(("x", {"type": "enum", "name": "E", "symbols": ["A", "B"]})),
            b"\x01",
            "enum index -1 of 2 symbols",
        ),
        (record_of(("x", ["null", "long"])), b"\x04", "field x: union branch 2 of 2"),
        (record_of(("x", ["null", "long"])), b"\x01\x02", "union branch -1 of 2"),
        (
            record_of(
                ("x", {"type": "array", "items": {"type": "enum", "name": "E", "symbols": ["A"]}})
            ),
            b"\x02\x02\x00",
            "enum index 1 of 1",
        ),
        (
            record_of(("x", {"type": "array", "items": "long"})),
            b"\x02\xff\xff\x00",
            "field x: the body ends inside it",
        ),
        (
            record_of(("x", {"type": "array", "items": record_of(("y", "string"))})),
            b"\x02\x04",
            "field x.y: a length of 2",
        ),
    ],
)
def test_hostile_bodies_are_refused_with_where_and_why(
    raw: dict[str, Any], body: bytes, reason: str
) -> None:
    with pytest.raises(CorruptBodyError) as refused:
        compile_reader(raw)(body, 0)
    assert reason in str(refused.value)


def test_what_fastavro_accepts_but_avro_does_not_allow_is_refused() -> None:
    """fastavro reads a boolean byte of 2 as true, an index of -1 from the end, an 11-byte
    varint wrapped; each re-encodes to other bytes, which is what the fuzz oracle allows."""
    lenient = [
        (record_of(("x", "boolean")), b"\x02"),
        (record_of(("x", {"type": "enum", "name": "E", "symbols": ["A", "B"]})), b"\x01"),
        (record_of(("x", ["null", "long"])), b"\x01\x02"),
        (record_of(("x", "long")), b"\xff" * 10 + b"\x01"),
    ]
    for raw, body in lenient:
        record, _ = fastavro_read(raw, body)
        assert fastavro_write(raw, record) != body
        with pytest.raises(CorruptBodyError):
            compile_reader(raw)(body, 0)


@pytest.mark.parametrize("name", sorted(SCHEMA_NAMES))
def test_every_cut_of_a_body_is_a_dead_letter_reason(name: str) -> None:
    codec = Codec()
    data = codec.encode(name, SAMPLES[name])
    for end in range(len(data) - 1, 3 + len(name), -1):
        with pytest.raises(DecodeError, match=f"^{name} v\\d+ body is corrupt: field ") as refused:
            codec.decode(data[:end])
        assert refused.value.kind == "undecodable"


def test_the_codec_names_the_schema_and_the_field() -> None:
    codec = Codec()
    data = codec.encode("feature_vector", SAMPLES["feature_vector"])
    header = data[: 2 + data[1] + 2]
    hostile = header + text("web-1") + varint(0) + b"\x00" + varint(HUGE)
    with pytest.raises(DecodeError) as refused:
        codec.decode(hostile)
    assert refused.value.kind == "undecodable"
    assert str(refused.value).startswith(
        f"feature_vector v2 body is corrupt: field values: a block of {HUGE} items at byte"
    )
    with pytest.raises(DecodeError, match="feature_vector v2: 2 trailing bytes"):
        codec.decode(data + b"\x00\x00")


class LabelRegistry:
    """A schema registry that holds the current Label schema, as id 7."""

    def id_for(self, schema: Schema) -> int:
        return 7

    def schema_for(self, schema_id: int) -> tuple[str, dict[str, Any]]:
        return "label", copy.deepcopy(current_schema("label").raw)


def test_a_record_of_no_fields_and_a_confluent_body_of_the_current_schema() -> None:
    assert compile_reader(record_of())(b"\x07", 0) == ({}, 0)
    codec = Codec(LabelRegistry())
    data = codec.encode("label", SAMPLES["label"])
    assert codec.decode(data) == ("label", SAMPLES["label"])
    with pytest.raises(DecodeError, match="label v1 body is corrupt: field incident_type: "):
        codec.decode(data[:12])
