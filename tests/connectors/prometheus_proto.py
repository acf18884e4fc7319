"""Prometheus remote_write payloads built independently of Foresight's decoder.

The ``prometheus.WriteRequest`` messages are declared here with protobuf's dynamic
descriptors and serialised by the ``protobuf`` package itself, so the tests check the
hand-written wire-format reader against the reference encoder, not against itself.
Beyond remote_write 1.0's fields, ``TimeSeries`` carries a minimal native ``histograms``
field (4) and ``WriteRequest`` its ``metadata`` (3), which a receiver must skip.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]

_F = descriptor_pb2.FieldDescriptorProto


def _message_classes() -> dict[str, Any]:
    proto = descriptor_pb2.FileDescriptorProto(
        name="foresight_test_remote.proto", package="prometheus", syntax="proto3"
    )

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        declared = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            added = declared.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                added.type_name = type_name

    one, many = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    message("Label", ("name", 1, _F.TYPE_STRING, one, ""), ("value", 2, _F.TYPE_STRING, one, ""))
    message(
        "Sample", ("value", 1, _F.TYPE_DOUBLE, one, ""), ("timestamp", 2, _F.TYPE_INT64, one, "")
    )
    message(
        "Histogram", ("count_int", 1, _F.TYPE_UINT64, one, ""), ("sum", 3, _F.TYPE_DOUBLE, one, "")
    )
    message(
        "TimeSeries",
        ("labels", 1, _F.TYPE_MESSAGE, many, ".prometheus.Label"),
        ("samples", 2, _F.TYPE_MESSAGE, many, ".prometheus.Sample"),
        ("histograms", 4, _F.TYPE_MESSAGE, many, ".prometheus.Histogram"),
    )
    message(
        "MetricMetadata",
        ("type", 1, _F.TYPE_INT32, one, ""),
        ("metric_family_name", 2, _F.TYPE_STRING, one, ""),
        ("help", 4, _F.TYPE_STRING, one, ""),
    )
    message(
        "WriteRequest",
        ("timeseries", 1, _F.TYPE_MESSAGE, many, ".prometheus.TimeSeries"),
        ("metadata", 3, _F.TYPE_MESSAGE, many, ".prometheus.MetricMetadata"),
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"prometheus.{name}"))
        for name in ("WriteRequest", "TimeSeries", "Label", "Sample", "Histogram")
    }


MESSAGES = _message_classes()

Series = tuple[Mapping[str, str], Sequence[tuple[int, float]]]


def write_request(
    series: Sequence[Series],
    metadata: Mapping[str, int] | None = None,
    histogram_series: int = 0,
) -> bytes:
    """Serialise a WriteRequest: ``series`` as ``(labels, [(timestamp ms, value), ...])``.

    ``metadata`` adds a MetricMetadata per family name, with its type number (1 counter,
    2 gauge, 3 histogram, 5 summary); ``histogram_series`` adds that many series carrying
    only a native histogram.
    """
    request = MESSAGES["WriteRequest"]()
    for labels, samples in series:
        one = request.timeseries.add()
        for name, text in sorted(labels.items()):
            one.labels.add(name=name, value=text)
        for timestamp, value in samples:
            one.samples.add(value=value, timestamp=timestamp)
    for index in range(histogram_series):
        one = request.timeseries.add()
        one.labels.add(name="__name__", value=f"native_histogram_{index}")
        one.histograms.add(count_int=3, sum=1.5)
    for family, kind in (metadata or {}).items():
        request.metadata.add(type=kind, metric_family_name=family, help="from the test")
    data: bytes = request.SerializeToString()
    return data


def snappy(data: bytes) -> bytes:
    """Snappy block compression by cramjam (the library the decoder also uses)."""
    return bytes(cramjam.snappy.compress_raw(data))


def snappy_literals(data: bytes) -> bytes:
    """Snappy block format written by hand, literals only: a compressor independent of cramjam.

    The block is the uncompressed length as a varint, then elements. A literal element of up
    to 60 bytes is one tag byte, its length minus one shifted left by two; a longer one (up
    to 65536 bytes) is the tag ``61 << 2`` and its length minus one in two little-endian bytes.
    """
    out = bytearray()
    size = len(data)
    while True:
        out.append((size & 0x7F) | (0x80 if size > 0x7F else 0))
        size >>= 7
        if not size:
            break
    for start in range(0, len(data), 65536):
        chunk = data[start : start + 65536]
        if len(chunk) <= 60:
            out += bytes([(len(chunk) - 1) << 2]) + chunk
        else:
            out += bytes([61 << 2]) + struct.pack("<H", len(chunk) - 1) + chunk
    return bytes(out)
