"""The remote_write door's decoder: any body becomes a decoded write or a RemoteWriteError (the
400 the route answers), never another exception, and its work is bounded by the body.

Bodies come at every layer: bytes that are not snappy, snappy around bytes that are not
protobuf, snappy around protobuf messages made field by field (any field number, any wire
type, nested or not), and real WriteRequests from protobuf's own encoder with hostile labels,
values and timestamps, intact or damaged. Only the public entry point,
:meth:`RemoteWriteDecoder.decode`, is fuzzed.
"""

from __future__ import annotations

import struct
from typing import Any

import cramjam
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from connectors.remote_write import DecodedWrite, RemoteWriteDecoder, RemoteWriteError
from schemas.codec import Codec
from tests.connectors.prometheus_proto import Series, snappy, snappy_literals, write_request
from tests.fuzz.budget import fuzz
from tests.fuzz.strategies import NOW_MS, label_maps, mutated, names, numbers, timestamps

ENTITY_LABELS = ("entity", "instance", "host", "job")
CODEC = Codec()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _protobuf(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A message: fields of any number and wire type, whose length-delimited payloads are
    bytes or, through ``children``, messages of their own."""
    number = st.one_of(st.integers(1, 5), st.integers(0, 2**29 - 1))
    varint = st.builds(
        lambda n, v: _field(n, 0, _varint(v)), number, st.integers(0, 2**70)
    )  # over 64 bits too
    fixed = st.builds(
        lambda n, w, b: _field(n, w, b),
        number,
        st.sampled_from([1, 5]),
        st.binary(min_size=0, max_size=9),
    )
    delimited = st.builds(
        lambda n, body, extra: _field(n, 2, _varint(max(len(body) + extra, 0)) + body),
        number,
        st.one_of(st.binary(max_size=40), children),
        st.sampled_from([0, 0, 0, 1, -1, 2**40]),  # a length that lies, now and then
    )
    invalid = st.builds(lambda n, w: _field(n, w, b""), number, st.sampled_from([3, 4, 6, 7]))
    return st.lists(st.one_of(varint, fixed, delimited, invalid), max_size=8).map(b"".join)


protobuf_messages = st.recursive(st.just(b""), _protobuf, max_leaves=20)


@st.composite
def write_requests(draw: st.DrawFn) -> bytes:
    """A WriteRequest serialised by protobuf itself, with hostile series."""
    ordinary = st.fixed_dictionaries({"__name__": st.sampled_from(["up", "node_load1"])})
    label_sets = st.one_of(
        st.builds(lambda base, more: {**more, **base}, ordinary, label_maps(most=200)),
        ordinary.map(lambda base: {**base, "instance": "web-1"}),
        st.builds(lambda base, more: {**base, **more}, ordinary, label_maps(most=200)),
        st.dictionaries(names, names, max_size=4),
    )
    near_now = st.integers(NOW_MS - 60_000, NOW_MS + 60_000)
    times = st.one_of(near_now, near_now, timestamps)
    values = st.one_of(st.floats(-1e3, 1e3), numbers)
    series: list[Series] = draw(
        st.lists(
            st.tuples(label_sets, st.lists(st.tuples(times, values), max_size=4)),
            max_size=6,
        )
    )
    families = st.dictionaries(names, st.integers(0, 2**31 - 1), max_size=3)
    return write_request(series, metadata=draw(families), histogram_series=draw(st.integers(0, 2)))


def _compressed(data: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(data.map(snappy), data.map(snappy_literals))


bodies = st.one_of(
    st.binary(max_size=200),
    _compressed(st.binary(max_size=200)),
    _compressed(protobuf_messages),
    _compressed(write_requests()),
    _compressed(write_requests().flatmap(mutated)),
    write_requests().map(snappy).flatmap(mutated),
)


def _decoded(body: bytes, decoder: RemoteWriteDecoder | None = None) -> DecodedWrite | str:
    """The decoded write, or the reason the decoder refused the body."""
    try:
        return (decoder or RemoteWriteDecoder(ENTITY_LABELS)).decode(body, now_ms=NOW_MS)
    except RemoteWriteError as error:
        return str(error)


@fuzz(400)
@given(bodies)
@example(b"")
@example(snappy(b"\x0a\xff\xff\xff\xff\x0f"))  # a length past the end
@example(snappy(b"\x0a\x02\x12\x00"))  # a series without __name__, with an empty sample
@example(snappy(b"\x0a\x11\x0a\x0f\x0a\x08__name__\x12\x03\xed\xa0\x80"))  # a lone surrogate
def test_any_body_decodes_or_is_refused_with_a_reason(body: bytes) -> None:
    result = _decoded(body)
    if isinstance(result, str):
        assert result, "a RemoteWriteError without a reason"
        event("refused")
        return
    event("decoded, with batches" if result.batches else "decoded, empty")
    # Bounded work: a sample takes at least two bytes of the decompressed body.
    samples = sum(len(b["names"]) + len(b["ended"]) for b in result.batches)
    assert 2 * samples <= cramjam.snappy.decompress_raw_len(body)
    for batch in result.batches:
        assert len(batch["names"]) == len(batch["values"]) <= 1000
        CODEC.encode("metric_batch", batch)  # what the door produces fits the schema


# -- the findings of issue 16 at this door ------------------------------------------------


def _request(series: list[Series]) -> bytes:
    return snappy(write_request(series))


def _text(number: int, text: str) -> bytes:
    data = text.encode()
    return _field(number, 2, _varint(len(data)) + data)


def test_a_request_with_100_000_entities_is_refused_whole() -> None:
    """Written field by field: protobuf's own encoder takes seconds for 100,000 series."""
    sample = _field(1, 1, struct.pack("<d", 1.0)) + _field(2, 0, _varint(NOW_MS))
    name = _text(1, "__name__") + _text(2, "up")
    series = (
        _field(1, 2, _varint(len(name)) + name)
        + _field(1, 2, _varint(len(label)) + label)
        + _field(2, 2, _varint(len(sample)) + sample)
        for label in (_text(1, "instance") + _text(2, f"host-{i}") for i in range(100_000))
    )
    body = b"".join(_field(1, 2, _varint(len(one)) + one) for one in series)
    with pytest.raises(RemoteWriteError, match=r"100,000 entities, over the limit of 10,000"):
        RemoteWriteDecoder(ENTITY_LABELS).decode(snappy(body), now_ms=NOW_MS)


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        ({"__name__": "m" * 100_000, "instance": "web-1"}, "label_value_too_long"),
        (
            {"__name__": "up", "instance": "web-1", **{f"k{i}": "v" for i in range(10_000)}},
            "too_many_labels",
        ),
    ],
    ids=["a 100,000-character metric name", "10,000 labels on one series"],
)
def test_a_series_past_the_limits_is_dropped_and_the_rest_is_kept(
    labels: dict[str, Any], reason: str
) -> None:
    series: list[Series] = [(labels, [(NOW_MS, 1.0)]), ({"__name__": "ok"}, [(NOW_MS, 2.0)])]
    decoded = RemoteWriteDecoder(ENTITY_LABELS).decode(_request(series), now_ms=NOW_MS)
    assert [b["names"] for b in decoded.batches] == [["ok"]]
    assert decoded.summary.over_limits == {reason: 1}
