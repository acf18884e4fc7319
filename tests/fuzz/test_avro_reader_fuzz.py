"""The compiled Avro reader against fastavro, the oracle: random valid records of every schema
(current and past versions) read the same; cut and flipped bodies fail in both or read the
same, except where fastavro reads bytes that no Avro writer writes (its record re-encodes to
other bytes), which the compiled reader refuses."""

from __future__ import annotations

import io
from typing import Any

import fastavro
from hypothesis import event, given
from hypothesis import strategies as st

from schemas.avro_reader import CorruptBodyError, compile_reader
from schemas.codec import SCHEMA_NAMES, Schema, current_schema, schema_history
from tests.fuzz.budget import fuzz
from tests.schemas.test_avro_reader import typed

SCHEMAS = [current_schema(n) for n in sorted(SCHEMA_NAMES)] + [
    s for n in sorted(SCHEMA_NAMES) for v, s in sorted(schema_history(n).items())
]
READERS = {id(s): compile_reader(s.raw) for s in SCHEMAS}
_TEXT = st.text(st.characters(codec="utf-8"), max_size=20)
_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.one_of(st.integers(-100, 100), st.integers(-(2**63), 2**63 - 1)),
    "float": st.floats(width=32),
    "double": st.floats(),
    "string": _TEXT,
    "bytes": st.binary(max_size=20),
}


def values(schema: Any, named: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Values of an Avro ``schema``; ``named`` collects the named types met on the way."""
    if isinstance(schema, list):
        return st.one_of(*(values(branch, named) for branch in schema))
    if isinstance(schema, str):
        return _PRIMITIVES[schema] if schema in _PRIMITIVES else named[schema.rpartition(".")[2]]
    kind = schema["type"]
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    if kind == "array":
        return st.lists(values(schema["items"], named), max_size=80)
    if kind == "map":
        return st.dictionaries(_TEXT, values(schema["values"], named), max_size=4)
    if kind == "enum":
        named[schema["name"]] = st.sampled_from(schema["symbols"])
    else:
        fields = {f["name"]: values(f["type"], named) for f in schema["fields"]}
        named[schema["name"]] = st.fixed_dictionaries(fields)
    return named[schema["name"]]


def write(schema: Schema, record: Any) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema.parsed, record)
    return buffer.getvalue()


def fastavro_read(schema: Schema, body: bytes) -> tuple[Any, int] | None:
    buffer = io.BytesIO(body)
    try:
        return fastavro.schemaless_reader(buffer, schema.parsed, None), buffer.tell()
    except Exception:  # fastavro raises many types on corrupt bodies
        return None


def compiled_read(schema: Schema, body: bytes) -> tuple[Any, int] | None:
    try:
        return READERS[id(schema)](body, 0)
    except CorruptBodyError:
        return None


bodies = st.sampled_from(SCHEMAS).flatmap(
    lambda s: st.tuples(st.just(s), values(s.raw, {}).map(lambda r: write(s, r)))
)


@fuzz(300)
@given(bodies)
def test_valid_records_read_as_fastavro_reads_them(body: tuple[Schema, bytes]) -> None:
    schema, data = body
    expected = fastavro_read(schema, data)
    assert expected is not None and expected[1] == len(data)
    assert typed(compiled_read(schema, data)) == typed(expected)


def _corrupted(body: tuple[Schema, bytes]) -> st.SearchStrategy[tuple[Schema, bytes]]:
    schema, data = body
    cut = st.integers(0, max(len(data) - 1, 0)).map(lambda n: data[:n])
    flips = st.lists(
        st.tuples(st.integers(0, max(len(data) - 1, 0)), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    )
    flipped = flips.map(lambda changes: _flip(data, changes))
    return st.tuples(st.just(schema), st.one_of(cut, flipped))


def _flip(data: bytes, changes: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for at, byte in changes:
        if at < len(out):
            out[at] = byte
    return bytes(out)


@fuzz(600)
@given(bodies.flatmap(_corrupted))
def test_corrupt_bodies_fail_in_both_or_read_the_same(body: tuple[Schema, bytes]) -> None:
    schema, data = body
    expected = fastavro_read(schema, data)
    found = compiled_read(schema, data)
    if found is not None:
        event("read")
        assert typed(found) == typed(expected)
    elif expected is not None:  # fastavro read what no writer writes
        event("fastavro alone read it")
        assert write(schema, expected[0]) != data[: expected[1]]
