"""The codec's door: any bytes become a record or a dead letter with its reason, never an
exception, whatever the framing (Foresight's, or Confluent's with a schema registry)."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from schemas.codec import SCHEMA_NAMES, Codec, DeadLetter, Message, Schema, current_schema
from tests.fuzz.budget import fuzz
from tests.fuzz.strategies import mutated
from tests.schemas.samples import SAMPLES

KINDS = {"undecodable", "unknown_schema"}
NAMES = sorted(SCHEMA_NAMES)


class Registry:
    """A schema registry in memory: schema ``i`` of :data:`NAMES` has id ``i``."""

    def id_for(self, schema: Schema) -> int:
        return NAMES.index(schema.name)

    def schema_for(self, schema_id: int) -> tuple[str, dict[str, Any]]:
        if not 0 <= schema_id < len(NAMES):
            raise KeyError(f"schema id {schema_id} is not registered")
        return NAMES[schema_id], current_schema(NAMES[schema_id]).raw


CODECS = {"foresight": Codec(), "confluent": Codec(Registry())}
ENCODED = [CODECS[f].encode(name, SAMPLES[name]) for f in CODECS for name in SAMPLES]


def _headers() -> st.SearchStrategy[bytes]:
    """Framing headers, valid and not: known and unknown names and versions, any ids."""
    name = st.one_of(st.sampled_from(NAMES), st.text(max_size=8)).map(
        lambda n: n.encode("utf-8", "surrogatepass")[:255]
    )
    foresight = st.builds(
        lambda n, v: bytes([0xF5, len(n)]) + n + struct.pack(">H", v), name, st.integers(0, 65535)
    )
    confluent = st.integers(0, 2**32 - 1).map(lambda i: b"\x00" + struct.pack(">I", i))
    return st.one_of(foresight, confluent)


messages = st.one_of(
    st.binary(max_size=300),
    st.builds(bytes.__add__, _headers(), st.binary(max_size=300)),
    st.sampled_from(ENCODED).flatmap(mutated),
)


def _decoded(codec: Codec, value: bytes, expect: str) -> dict[str, Any] | DeadLetter:
    return codec.decode_message(Message("fuzz", 0, 7, b"k", value), expect)


@fuzz(800)
@given(st.sampled_from(sorted(CODECS)), messages, st.sampled_from(NAMES))
@example("foresight", b"", "metric_batch")
@example("foresight", b"\xf5\xff", "metric_batch")
@example("confluent", b"\x00\xff\xff\xff\xff", "label")
def test_any_bytes_decode_to_a_record_or_a_dead_letter(
    framing: str, value: bytes, expect: str
) -> None:
    result = _decoded(CODECS[framing], value, expect)
    if isinstance(result, DeadLetter):
        assert result.error_kind in KINDS and result.reason
        assert (result.value, result.offset, result.key) == (value, 7, b"k")
    else:
        assert isinstance(result, dict)
        # What decodes is a record of the expected schema: it encodes again.
        assert CODECS["foresight"].encode(expect, result)
