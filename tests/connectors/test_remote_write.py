"""The remote_write decoder against payloads serialised by the reference protobuf encoder."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest

from connectors.remote_write import (
    FALLBACK_ENTITY,
    MAX_FUTURE_MS,
    RemoteWriteDecoder,
    RemoteWriteError,
    WriteSummary,
)
from schemas.codec import Codec
from tests.connectors.prometheus_proto import (
    STALE_NAN,
    Series,
    snappy,
    snappy_literals,
    write_request,
)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
NOW = T0 + 60_000
ENTITY_LABELS = ("entity", "instance", "host", "job")
WEB1 = {"instance": "web-1:9100", "job": "node"}
WEB2 = {"instance": "web-2:9100", "job": "node"}

SERIES: list[Series] = [
    ({"__name__": "node_load1", **WEB1}, [(T0, 0.5), (T0 + 15_000, 0.75)]),
    ({"__name__": "http_requests_total", "code": "500", "method": "get", **WEB1}, [(T0, 3.0)]),
    ({"__name__": "up", **WEB1}, [(T0, STALE_NAN)]),
    ({"__name__": "go_gc_duration_seconds", "quantile": "0.5", **WEB2}, [(T0, math.nan)]),
    (
        {"__name__": "cpu_seconds", **WEB2},
        [(T0, math.inf), (T0 + 15_000, 2.0), (NOW + MAX_FUTURE_MS + 1, 5.0)],
    ),
    ({"__name__": "queue_depth", "entity": "checkout", **WEB2}, [(T0, 7.0)]),
    ({"__name__": "cluster:cpu:sum"}, [(T0, 10.0)]),
    ({"__name__": "temp", "host": "db-1", "sensor": "a"}, [(T0, 40.0)]),
    ({"__name__": "temp", "host": "db-1", "job": "ipmi", "sensor": "b"}, [(T0, 41.0)]),
    ({"__name__": "jobs_done", "instance": "", "job": "batch"}, [(0, 0.0)]),
]


def _batch(entity: str, time: int, labels: dict[str, str], **samples: float) -> dict[str, Any]:
    return {
        "entity": entity,
        "event_time": time,
        "labels": labels,
        "names": list(samples),
        "values": list(samples.values()),
        "source": "remote_write",
        "kinds": [],
        "ended": [],
    }


EXPECTED = [
    _batch("batch", 0, {"job": "batch"}, jobs_done=0.0),
    _batch("checkout", T0, {"entity": "checkout", **WEB2}, queue_depth=7.0),
    _batch("db-1", T0, {"host": "db-1"}, **{'temp{sensor="a"}': 40.0}),
    _batch("db-1", T0, {"host": "db-1"}, **{'temp{job="ipmi",sensor="b"}': 41.0}),
    _batch(FALLBACK_ENTITY, T0, {}, **{"cluster:cpu:sum": 10.0}),
    {
        **_batch(
            "web-1:9100",
            T0,
            WEB1,
            node_load1=0.5,
            **{'http_requests_total{code="500",method="get"}': 3.0},
        ),
        "kinds": ["UNKNOWN", "COUNTER"],  # the request's metadata types http_requests_total
        "ended": ["up"],  # its staleness marker
    },
    _batch("web-1:9100", T0 + 15_000, WEB1, node_load1=0.75),
    _batch("web-2:9100", T0 + 15_000, WEB2, cpu_seconds=2.0),
]


def _merged(batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Batches of one (entity, time) joined, so the expectation does not fix the split."""
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for batch in batches:
        key = (batch["entity"], batch["event_time"])
        if key in merged:
            for column in ("names", "values", "kinds", "ended"):
                merged[key][column] += batch[column]
        else:
            merged[key] = {
                **batch,
                **{c: list(batch[c]) for c in ("names", "values", "kinds", "ended")},
            }
    return list(merged.values())


@pytest.fixture
def payload() -> bytes:
    return write_request(SERIES, metadata={"http_requests_total": 1}, histogram_series=1)


@pytest.mark.parametrize("compress", [snappy, snappy_literals], ids=["cramjam", "hand-written"])
def test_decodes_series_into_entity_batches(payload: bytes, compress: Any) -> None:
    decoded = RemoteWriteDecoder(ENTITY_LABELS).decode(compress(payload), now_ms=NOW)
    assert decoded.batches == _merged(EXPECTED)
    assert decoded.summary == WriteSummary(
        series=9, samples=9, stale_markers=1, non_finite=2, future=1, histogram_series=1
    )


def test_records_fit_the_metric_batch_schema(payload: bytes) -> None:
    codec = Codec()
    for batch in RemoteWriteDecoder(ENTITY_LABELS).decode(snappy(payload), now_ms=NOW).batches:
        assert codec.decode(codec.encode("metric_batch", batch)) == ("metric_batch", batch)


def test_entity_label_order_is_configurable(payload: bytes) -> None:
    decoded = RemoteWriteDecoder(["job"]).decode(snappy(payload), now_ms=NOW)
    node = [b for b in decoded.batches if b["entity"] == "node"]
    assert node[0]["labels"] == {"job": "node"}
    assert 'node_load1{instance="web-1:9100"}' in node[0]["names"]
    assert 'queue_depth{entity="checkout",instance="web-2:9100"}' in node[0]["names"]


def test_large_groups_are_split_into_batches() -> None:
    series: list[Series] = [({"__name__": f"m{i}", **WEB1}, [(T0, float(i))]) for i in range(25)]
    decoded = RemoteWriteDecoder(ENTITY_LABELS, max_batch_samples=10).decode(
        snappy(write_request(series)), now_ms=NOW
    )
    assert [len(b["names"]) for b in decoded.batches] == [10, 10, 5]
    assert [v for b in decoded.batches for v in b["values"]] == [float(i) for i in range(25)]


def test_metadata_only_request_is_valid_and_empty() -> None:
    decoded = RemoteWriteDecoder(ENTITY_LABELS).decode(
        snappy(write_request([], metadata={"up": 2})), now_ms=NOW
    )
    assert decoded.batches == []


def test_negative_timestamps_survive_int64_decoding() -> None:
    decoded = RemoteWriteDecoder(ENTITY_LABELS).decode(
        snappy(write_request([({"__name__": "up", **WEB1}, [(-1_000, 1.0)])])), now_ms=NOW
    )
    assert decoded.batches[0]["event_time"] == -1_000


BAD_BODIES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "empty": (lambda p: b"", "empty body"),
    "garbage": (lambda p: b"\xff" * 12, "not snappy"),
    "text": (lambda p: b"hello, this is not snappy", "not snappy"),
    "uncompressed protobuf": (lambda p: p, "not snappy"),
    "truncated snappy": (lambda p: snappy(p)[:-7], "not snappy"),
    "truncated protobuf": (lambda p: snappy(p[:-3]), "truncated protobuf"),
    "snappy but not protobuf": (lambda p: snappy(b"plain text, not protobuf"), "protobuf"),
    "wrong wire type": (lambda p: snappy(b"\x08\x01"), "wire type 0, expected 2"),
    "unnamed series": (
        lambda p: snappy(write_request([({"job": "x"}, [(T0, 1.0)])])),
        "no __name__",
    ),
}


@pytest.mark.parametrize("case", BAD_BODIES, ids=list(BAD_BODIES))
def test_bad_bodies_raise_with_a_reason(payload: bytes, case: str) -> None:
    make, reason = BAD_BODIES[case]
    with pytest.raises(RemoteWriteError, match=reason):
        RemoteWriteDecoder(ENTITY_LABELS).decode(make(payload), now_ms=NOW)


def test_decompression_bombs_are_refused_before_decompressing(payload: bytes) -> None:
    decoder = RemoteWriteDecoder(ENTITY_LABELS, max_decoded_bytes=100)
    with pytest.raises(RemoteWriteError, match=r"over the limit of 100"):
        decoder.decode(snappy(payload), now_ms=NOW)


def test_truncated_or_corrupted_bodies_raise_only_the_decoders_error(payload: bytes) -> None:
    """Cutting or flipping any byte gives a valid shorter message or a RemoteWriteError."""
    decoder = RemoteWriteDecoder(ENTITY_LABELS)
    rng = random.Random(7)
    flipped = [bytearray(payload) for _ in range(300)]
    for body in flipped:
        body[rng.randrange(len(body))] = rng.randrange(256)
    reasons: list[str] = []
    for data in [payload[:cut] for cut in range(len(payload))] + [bytes(b) for b in flipped]:
        try:
            decoder.decode(snappy_literals(data), now_ms=NOW)
        except RemoteWriteError as error:
            reasons.append(str(error))
    assert len(reasons) > 100
    assert [r for r in reasons if "protobuf" not in r and "__name__" not in r] == []


# -- types, staleness, limits ------------------------------------------------------------------


def _decode(decoder: RemoteWriteDecoder, series: list[Series], **kw: Any) -> list[dict[str, Any]]:
    return decoder.decode(snappy(write_request(series, **kw)), now_ms=NOW).batches


def test_types_come_from_metadata_remembered_across_requests() -> None:
    decoder = RemoteWriteDecoder(ENTITY_LABELS)
    # Prometheus 2.x sends metadata in requests of its own; OpenMetrics names a counter's
    # family without _total; metadata wins over naming (a gauge that ends in _total).
    metadata = {"rpc_duration_seconds": 3, "jobs_queued_total": 2, "requests": 1}
    assert _decode(decoder, [], metadata=metadata) == []
    series: list[Series] = [
        ({"__name__": "rpc_duration_seconds_bucket", "le": "0.1", **WEB1}, [(T0, 4.0)]),
        ({"__name__": "rpc_duration_seconds_sum", **WEB1}, [(T0, 0.2)]),
        ({"__name__": "jobs_queued_total", **WEB1}, [(T0, 7.0)]),
        ({"__name__": "requests_total", **WEB1}, [(T0, 9.0)]),
        ({"__name__": "node_load1", **WEB1}, [(T0, 0.5)]),
    ]
    (batch,) = _decode(decoder, series)
    assert dict(zip(batch["names"], batch["kinds"], strict=True)) == {
        'rpc_duration_seconds_bucket{le="0.1"}': "HISTOGRAM",
        "rpc_duration_seconds_sum": "HISTOGRAM",
        "jobs_queued_total": "GAUGE",
        "requests_total": "COUNTER",
        "node_load1": "UNKNOWN",
    }
    untyped = _decode(RemoteWriteDecoder(ENTITY_LABELS), series[-1:])
    assert untyped[0]["kinds"] == []  # nothing known: the worker types by name


def test_a_staleness_marker_ends_its_series_in_the_batch_of_its_time() -> None:
    series: list[Series] = [
        ({"__name__": "node_load1", **WEB1}, [(T0, 0.5), (T0 + 15_000, STALE_NAN)]),
        ({"__name__": "node_load5", **WEB1}, [(T0, 0.4), (T0 + 15_000, 0.4)]),
    ]
    batches = _decode(RemoteWriteDecoder(ENTITY_LABELS), series)
    assert [(b["event_time"], b["names"], b["ended"]) for b in batches] == [
        (T0, ["node_load1", "node_load5"], []),
        (T0 + 15_000, ["node_load5"], ["node_load1"]),
    ]


def test_series_over_the_label_limits_are_dropped_and_counted_alone() -> None:
    series: list[Series] = [
        ({"__name__": "ok", **WEB1}, [(T0, 1.0)]),
        ({"__name__": "many", **WEB1, **{f"l{i}": "v" for i in range(63)}}, [(T0, 1.0)]),
        ({"__name__": "long_value", "path": "p" * 1025, **WEB1}, [(T0, 1.0), (T0 + 1, 2.0)]),
        ({"__name__": "long_name", "k" * 257: "v", **WEB1}, [(T0, 1.0)]),
        ({"__name__": "m" * 257, **WEB1}, [(T0, 1.0)]),
        ({"__name__": "wide", **{f"l{i}": "v" * 1000 for i in range(3)}, **WEB1}, [(T0, 1.0)]),
    ]
    decoded = RemoteWriteDecoder(ENTITY_LABELS).decode(snappy(write_request(series)), now_ms=NOW)
    assert [b["names"] for b in decoded.batches] == [["ok"]]
    assert decoded.summary.dropped() == {
        "non_finite": 0,
        "future": 0,
        "native_histogram": 0,
        "too_many_labels": 1,
        "label_value_too_long": 3,
        "label_name_too_long": 1,
        "series_name_too_long": 1,
    }


def test_an_entity_named_with_a_control_character_is_dropped_and_counted() -> None:
    """The worker dead-letters such a batch whole; the door drops those series alone."""
    series: list[Series] = [
        ({"__name__": "ok", **WEB1}, [(T0, 1.0)]),
        ({"__name__": "up", "instance": "web-9\n2026 FIRING"}, [(T0, 1.0), (T0 + 1, 1.0)]),
    ]
    decoded = RemoteWriteDecoder(ENTITY_LABELS).decode(snappy(write_request(series)), now_ms=NOW)
    assert [b["entity"] for b in decoded.batches] == ["web-1:9100"]
    assert decoded.summary.dropped()["entity_control_character"] == 2


def test_samples_ahead_are_held_to_the_limit_given() -> None:
    series: list[Series] = [({"__name__": "up", **WEB1}, [(NOW + 1_800_000, 1.0)])]
    body = snappy(write_request(series))
    assert RemoteWriteDecoder(ENTITY_LABELS).decode(body, now_ms=NOW).summary.future == 0
    strict = RemoteWriteDecoder(ENTITY_LABELS, max_future_ms=600_000)
    assert strict.decode(body, now_ms=NOW).summary.future == 1


def test_a_request_for_absurdly_many_entities_is_refused_whole() -> None:
    series: list[Series] = [
        ({"__name__": "up", "instance": f"h{i}"}, [(T0, 1.0)]) for i in range(11)
    ]
    with pytest.raises(RemoteWriteError, match=r"11 entities, over the limit of 10 per request"):
        RemoteWriteDecoder(ENTITY_LABELS, max_entities=10).decode(
            snappy(write_request(series)), now_ms=NOW
        )
    assert len(_decode(RemoteWriteDecoder(ENTITY_LABELS, max_entities=11), series)) == 11


def test_batches_are_split_by_the_size_of_their_names() -> None:
    series: list[Series] = [
        (
            {"__name__": f"m{i}", "a": "x" * 500, "b": "y" * 500, "c": "z" * 500, **WEB1},
            [(T0, float(i))],
        )
        for i in range(400)
    ]
    batches = _decode(RemoteWriteDecoder(ENTITY_LABELS), series)
    assert len(batches) == 3
    assert all(sum(len(n) for n in b["names"]) <= 256 << 10 for b in batches)
    assert [v for b in batches for v in b["values"]] == [float(i) for i in range(400)]
