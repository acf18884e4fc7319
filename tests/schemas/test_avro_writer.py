"""The compiled Avro writer writes what fastavro writes, byte for byte, and refuses the same."""

from __future__ import annotations

import copy
import io
import math
from typing import Any

import fastavro
import numpy as np
import pytest

from schemas.avro_writer import compile_writer
from schemas.codec import SCHEMA_NAMES, Codec, current_schema, schema_history
from tests.schemas.samples import SAMPLES, V1_SAMPLES


def _fastavro(raw: dict[str, Any], record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    parsed = fastavro.parse_schema(copy.deepcopy(raw))
    fastavro.schemaless_writer(buffer, parsed, record, strict_allow_default=True)
    return buffer.getvalue()


def _variants(name: str) -> list[dict[str, Any]]:
    """The sample, with defaults left out, and with odd but valid values."""
    sample = SAMPLES[name]
    raw = current_schema(name).raw
    defaulted = {f["name"] for f in raw["fields"] if "default" in f}
    odd = copy.deepcopy(sample)
    free_text = {f["name"] for f in raw["fields"] if f["type"] in ("string", ["null", "string"])}
    for key, value in odd.items():
        if isinstance(value, str) and key in free_text:
            odd[key] = value + " ünï €𝄞"
        elif isinstance(value, float):
            odd[key] = -0.0 if value else math.inf
        elif isinstance(value, int) and not isinstance(value, bool):
            odd[key] = -value or (1 << 62)
    return [sample, {k: v for k, v in sample.items() if k not in defaulted}, odd]


@pytest.mark.parametrize("name", sorted(SCHEMA_NAMES))
def test_every_sample_is_written_as_fastavro_writes_it(name: str) -> None:
    raw = current_schema(name).raw
    write = compile_writer(raw)
    for record in _variants(name):
        assert write(record) == _fastavro(raw, record)


@pytest.mark.parametrize("name", sorted(V1_SAMPLES))
def test_version_1_records_too(name: str) -> None:
    raw = schema_history(name)[1].raw
    assert compile_writer(raw)(V1_SAMPLES[name]) == _fastavro(raw, V1_SAMPLES[name])


def test_arrays_of_doubles_may_be_numpy_and_special_values_survive() -> None:
    raw = current_schema("feature_vector").raw
    values = np.array([1.5, math.nan, math.inf, -math.inf, -0.0, 1e308])
    record = dict(SAMPLES["feature_vector"], values=values)
    written = compile_writer(raw)(record)
    assert written == _fastavro(raw, dict(record, values=values.tolist()))
    _, decoded = Codec().decode(Codec().encode("feature_vector", record))
    np.testing.assert_array_equal(decoded["values"], values)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"entity": 7}, "not a string"),
        ({"event_time": "now"}, "not an int"),
        ({"values": ["x"]}, "could not convert"),
        ({"feature_set": None}, "not a string"),
    ],
)
def test_a_record_that_does_not_fit_is_refused(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Codec().encode("feature_vector", dict(SAMPLES["feature_vector"], **changes))


def test_a_required_field_left_out_is_refused() -> None:
    record = {k: v for k, v in SAMPLES["alert"].items() if k != "summary"}
    with pytest.raises(ValueError, match="summary"):
        Codec().encode("alert", record)
