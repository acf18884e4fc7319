"""The codec: every schema round-trips, framing is checked, bad bytes become dead letters."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pytest

from schemas.codec import (
    FORESIGHT_MAGIC,
    SCHEMA_NAMES,
    Codec,
    DeadLetter,
    DecodeError,
    Message,
    current_schema,
)
from tests.schemas.samples import SAMPLES


def test_every_schema_has_a_sample() -> None:
    assert set(SAMPLES) == set(SCHEMA_NAMES)


@pytest.mark.parametrize("name", sorted(SCHEMA_NAMES))
def test_round_trip(name: str) -> None:
    codec = Codec()
    data = codec.encode(name, SAMPLES[name])
    assert data[0] == FORESIGHT_MAGIC
    decoded_name, record = codec.decode(data)
    assert decoded_name == name
    assert record == SAMPLES[name]


@pytest.mark.parametrize("name", sorted(SCHEMA_NAMES))
def test_every_field_is_documented(name: str) -> None:
    def fields(node: Any) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            for field in node.get("fields", []):
                yield field
                yield from fields(field["type"])
            for key in ("items", "values"):
                if key in node:
                    yield from fields(node[key])
        elif isinstance(node, list):
            for branch in node:
                yield from fields(branch)

    undocumented = [f["name"] for f in fields(current_schema(name).raw) if not f.get("doc")]
    assert undocumented == []


def test_timestamps_decode_as_int_millis() -> None:
    codec = Codec()
    _, record = codec.decode(codec.encode("metric_batch", SAMPLES["metric_batch"]))
    assert isinstance(record["event_time"], int)


def test_encode_rejects_a_record_that_violates_the_schema() -> None:
    bad = dict(SAMPLES["agent_event"], phase="EXPLODED")
    with pytest.raises(ValueError, match="agent_event"):
        Codec().encode("agent_event", bad)


def test_encode_many_then_decode_many() -> None:
    codec = Codec()
    values = codec.encode_many("metric_batch", [SAMPLES["metric_batch"]] * 3)
    messages = [Message("telemetry.metrics", 0, i, b"web-1", v) for i, v in enumerate(values)]
    records, dead = codec.decode_many(messages, expect="metric_batch")
    assert len(records) == 3
    assert dead == []


def _message(value: bytes) -> Message:
    return Message("telemetry.metrics", 2, 17, b"web-1", value)


@pytest.mark.parametrize(
    ("value", "kind", "reason"),
    [
        (b"", "undecodable", "empty"),
        (b"\x7fnot avro", "undecodable", "framing byte"),
        (bytes([FORESIGHT_MAGIC, 4]) + b"nope" + struct.pack(">H", 1), "unknown_schema", "nope"),
        (
            bytes([FORESIGHT_MAGIC, 12]) + b"metric_batch" + struct.pack(">H", 99) + b"\x00",
            "unknown_schema",
            "version 99",
        ),
        (
            bytes([FORESIGHT_MAGIC, 12]) + b"metric_batch" + struct.pack(">H", 1) + b"\xff" * 3,
            "undecodable",
            "corrupt",
        ),
        (b"\x00\x00\x00\x00\x01abc", "unknown_schema", "SCHEMA_REGISTRY_URL"),
    ],
)
def test_bad_bytes_become_dead_letters(value: bytes, kind: str, reason: str) -> None:
    result = Codec().decode_message(_message(value), expect="metric_batch")
    assert isinstance(result, DeadLetter)
    assert result.error_kind == kind
    assert reason in result.reason
    assert (result.topic, result.partition, result.offset, result.key, result.value) == (
        "telemetry.metrics",
        2,
        17,
        b"web-1",
        value,
    )
    record = result.to_record(now_ms=5)
    assert Codec().decode(Codec().encode("dead_letter", record))[1] == record


def test_trailing_bytes_are_rejected() -> None:
    codec = Codec()
    data = codec.encode("label", SAMPLES["label"]) + b"\x00"
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(data)


def test_wrong_record_type_is_dead_lettered() -> None:
    codec = Codec()
    result = codec.decode_message(_message(codec.encode("label", SAMPLES["label"])), "metric_batch")
    assert isinstance(result, DeadLetter)
    assert "expected a metric_batch record, got a label record" in result.reason
