"""Prometheus remote_write 1.0 receiver core: snappy + protobuf bytes in, MetricBatch records out.

A remote_write body is a ``prometheus.WriteRequest`` protobuf, compressed with snappy's block
format (not the framed format)::

    WriteRequest { repeated TimeSeries timeseries = 1; repeated MetricMetadata metadata = 3; }
    TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
    Label        { string name = 1; string value = 2; }
    Sample       { double value = 1; int64 timestamp = 2; }   // timestamp in epoch ms

The protobuf wire format is read by hand (varints, length-delimited fields, fixed 64-bit
doubles) so no generated code has to be kept in step; unknown fields are skipped by wire type,
as protobuf readers must, so newer senders (exemplars, native histograms, metadata) still work.

How samples become records (the design's "batches on the wire, columnar"):

* **Entity**: the value of the first label of ``entity_labels`` that a series has with a
  non-empty value (Prometheus treats an empty label as absent). A series with none of them,
  typically a recording-rule aggregate such as ``sum(rate(x[5m]))`` that dropped ``instance``
  and ``job``, goes to :data:`FALLBACK_ENTITY` rather than failing the whole request: a 4xx
  makes Prometheus drop the entire batch, valid samples included, and never retry it.
* **Batch labels**: the entity labels (``entity_labels``' keys) that every series of the
  entity in the request carries with the same value, e.g. ``instance`` and ``job``.
* **Series names**: ``__name__`` with every other label folded in Prometheus-style, keys
  sorted: ``http_requests_total{code="500",method="get"}``, so nothing is lost. A series'
  name depends only on its own labels and the entity labels, never on which other series
  Prometheus happened to put in the same request (it shards series across requests), so a
  series keeps one name from request to request.
* **Kinds**: each series' type (counter, gauge, histogram, summary...) from the metadata
  Prometheus sends (``WriteRequest.metadata``, in requests of their own every minute in
  Prometheus 2.x), remembered per metric family by this decoder; ``kinds`` is left empty
  when no series of a batch has a known type, and the worker types those by their names.
* **Ended series**: a staleness marker (a NaN with a special bit pattern that means "this
  series disappeared") is carried in the batch's ``ended`` list, so the worker stops the
  series instead of holding its last value.
* **One MetricBatch per (entity, timestamp)**, split every ``max_batch_samples`` samples or
  256 KiB of names to stay far below Kafka's message size limit; ``source`` is
  ``"remote_write"``.

Samples that cannot become Avro doubles are dropped and counted in :class:`WriteSummary`,
never fail the request: NaNs and infinities other than staleness markers (a summary
quantile with no observations is NaN in normal operation), and timestamps more than an hour
in the future. A series over the limits of :mod:`schemas.limits` (a label name over 256
characters, a value over 1,024, a metric name over 256, more than 64 labels, or a folded
name over 2,048) is dropped with its samples and counted by reason, and logged once per
metric name. A request for more than ``max_entities`` entities is refused whole: no
Prometheus configuration sends one (it would need a ``max_samples_per_send`` that large),
and each entity costs a Kafka record. A malformed body (empty, not snappy, not protobuf,
truncated, a series without ``__name__``) raises :class:`RemoteWriteError` before any record
is built, so the caller produces nothing.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cramjam

from models.signals import MetricKind
from models.signals.kinds import family_names
from models.signals.series import NAME, series_name
from schemas import limits
from schemas.field_rules import control_problem

log = logging.getLogger(__name__)
Record = dict[str, Any]

SOURCE = "remote_write"
FALLBACK_ENTITY = "global"
STALE_NAN_BITS = 0x7FF0000000000002  # Prometheus' value.StaleNaN
MAX_FUTURE_MS = 3_600_000  # FORESIGHT_MAX_FUTURE_S's default; the server passes the setting
MAX_ENTITIES = 10_000
MAX_BATCH_NAME_BYTES = 256 << 10
MAX_FAMILIES = 100_000  # metric families whose type the decoder remembers

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5
_DOUBLE = struct.Struct("<d")
_UINT64 = struct.Struct("<Q")


class RemoteWriteError(ValueError):
    """A remote_write body that cannot be decoded; the message says why, for the 400 reply."""


@dataclass
class WriteSummary:
    """What one request held: series, samples and staleness markers kept, and samples
    dropped by reason (``over_limits``: samples of series over the label limits, by which)."""

    series: int = 0
    samples: int = 0
    stale_markers: int = 0
    non_finite: int = 0
    future: int = 0
    histogram_series: int = 0  # native histograms: not representable as a MetricBatch value
    over_limits: dict[str, int] = field(default_factory=dict)

    def dropped(self) -> dict[str, int]:
        """Samples (or histogram series) not produced, by reason, for the ingest metrics."""
        return {
            "non_finite": self.non_finite,
            "future": self.future,
            "native_histogram": self.histogram_series,
            **self.over_limits,
        }


@dataclass
class DecodedWrite:
    """The MetricBatch records of one request, in (entity, event_time) order."""

    batches: list[Record] = field(default_factory=list)
    summary: WriteSummary = field(default_factory=WriteSummary)


@dataclass
class _Series:
    labels: dict[str, str]
    times: list[int]
    values: list[float]
    ended: list[int]  # times of staleness markers


# -- protobuf wire format ------------------------------------------------------------------


def _varint(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """Read a base-128 varint at ``pos``; returns ``(value, position after it)``."""
    result = 0
    shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise RemoteWriteError(
                f"malformed protobuf: {what} varint at byte {pos} is longer than 10 bytes"
            )
    raise RemoteWriteError(
        f"truncated protobuf: {what} varint runs past the end of its message at byte {end}"
    )


def _fields(buf: bytes, pos: int, end: int, message: str) -> Iterator[tuple[int, int, int, int]]:
    """Walk the fields of the message in ``buf[pos:end]``.

    Yields ``(field number, wire type, a, b)``: for a varint ``a`` is the value; for a
    length-delimited field ``buf[a:b]`` is its payload; for fixed 64/32-bit fields ``a`` is
    the offset of their bytes.
    """
    while pos < end:
        key = buf[pos]
        if key < 0x80:  # one-byte keys and lengths are the norm: skip the varint call
            pos += 1
        else:
            key, pos = _varint(buf, pos, end, f"{message} field key")
        number, wire = key >> 3, key & 7
        if number == 0:
            raise RemoteWriteError(f"malformed protobuf: {message} has field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end, f"{message} field {number}")
            yield number, wire, value, pos
        elif wire == _LENGTH_DELIMITED:
            if pos < end and buf[pos] < 0x80:
                size, start = buf[pos], pos + 1
            else:
                size, start = _varint(buf, pos, end, f"{message} field {number} length")
            pos = start + size
            if pos > end:
                raise RemoteWriteError(
                    f"truncated protobuf: {message} field {number} declares {size} bytes "
                    f"but only {end - start} remain"
                )
            yield number, wire, start, pos
        elif wire in (_FIXED64, _FIXED32):
            start = pos
            pos += 8 if wire == _FIXED64 else 4
            if pos > end:
                raise RemoteWriteError(
                    f"truncated protobuf: {message} field {number} needs {pos - start} bytes "
                    f"but only {end - start} remain"
                )
            yield number, wire, start, pos
        else:
            raise RemoteWriteError(
                f"malformed protobuf: {message} field {number} has wire type {wire}, "
                "which is a deprecated group or invalid; this is not a prometheus.WriteRequest"
            )


def _expect(message: str, number: int, wire: int, expected: int) -> None:
    if wire != expected:
        raise RemoteWriteError(
            f"malformed protobuf: {message} field {number} has wire type {wire}, expected "
            f"{expected}; this is not a prometheus.WriteRequest"
        )


def _text(buf: bytes, start: int, end: int, what: str) -> str:
    try:
        return buf[start:end].decode("utf-8")
    except UnicodeDecodeError as error:
        raise RemoteWriteError(f"malformed protobuf: {what} is not UTF-8 ({error})") from None


def _label(buf: bytes, start: int, end: int) -> tuple[str, str]:
    name = value = ""
    for number, wire, a, b in _fields(buf, start, end, "Label"):
        if number in (1, 2):
            _expect("Label", number, wire, _LENGTH_DELIMITED)
            if number == 1:
                name = _text(buf, a, b, "label name")
            else:
                value = _text(buf, a, b, f"value of label {name!r}")
    return name, value


def _int64(varint: int) -> int:
    """A varint read as protobuf's int64: the low 64 bits, two's complement."""
    varint &= 0xFFFF_FFFF_FFFF_FFFF
    return varint - (1 << 64) if varint >= 1 << 63 else varint


def _sample(buf: bytes, start: int, end: int) -> tuple[float, int, int]:
    """``(value, raw 64 bits of the value, timestamp ms)``; proto3 omits zero fields."""
    if end - start >= 11 and buf[start] == 0x09 and buf[start + 9] == 0x10:
        # The common encoding, value then timestamp, read without the generic walk.
        (bits,) = _UINT64.unpack_from(buf, start + 1)
        timestamp, pos = _varint(buf, start + 10, end, "Sample timestamp")
        if pos == end:
            value = _DOUBLE.unpack_from(buf, start + 1)[0]
            return value, bits, _int64(timestamp)
    bits = timestamp = 0
    for number, wire, a, _ in _fields(buf, start, end, "Sample"):
        if number == 1:
            _expect("Sample", number, wire, _FIXED64)
            (bits,) = _UINT64.unpack_from(buf, a)
        elif number == 2:
            _expect("Sample", number, wire, _VARINT)
            timestamp = _int64(a)
    value = _DOUBLE.unpack(_UINT64.pack(bits))[0]
    return value, bits, timestamp


def _metadata(buf: bytes, start: int, end: int) -> tuple[str, MetricKind]:
    """A MetricMetadata's family name and type."""
    family, number = "", 0
    for field_number, wire, a, b in _fields(buf, start, end, "MetricMetadata"):
        if field_number == 1:
            _expect("MetricMetadata", field_number, wire, _VARINT)
            number = a
        elif field_number == 2:
            _expect("MetricMetadata", field_number, wire, _LENGTH_DELIMITED)
            family = _text(buf, a, b, "metric family name")
    return family, MetricKind.from_number(number)


def over_limits(labels: dict[str, str]) -> str | None:
    """Why a series' labels are over the limits of :mod:`schemas.limits`, or None."""
    if len(labels) > limits.MAX_LABELS:
        return "too_many_labels"
    for name, value in labels.items():
        if len(name) > limits.MAX_NAME_CHARS:
            return "label_name_too_long"
        limit = limits.MAX_NAME_CHARS if name == NAME else limits.MAX_LABEL_VALUE_CHARS
        if len(value) > limit:
            return "label_value_too_long"
    return None


def parse_write_request(
    data: bytes, summary: WriteSummary, metadata: dict[str, MetricKind]
) -> list[_Series]:
    """Parse an uncompressed ``prometheus.WriteRequest`` into series with their samples.

    Drops non-finite samples other than staleness markers (counted in ``summary``), skips
    native histogram series, and adds the families the request types to ``metadata``;
    raises :class:`RemoteWriteError` on a malformed message.
    """
    series: list[_Series] = []
    # Label messages repeat across series (job, instance...): decode each distinct one once.
    known_labels: dict[bytes, tuple[str, str]] = {}
    for number, wire, start, end in _fields(data, 0, len(data), "WriteRequest"):
        if number == 3:
            _expect("WriteRequest", number, wire, _LENGTH_DELIMITED)
            family, kind = _metadata(data, start, end)
            if family and kind is not MetricKind.UNKNOWN:
                metadata[family] = kind
            continue
        if number != 1:
            continue  # fields of newer protocol versions
        _expect("WriteRequest", number, wire, _LENGTH_DELIMITED)
        one = _Series({}, [], [], [])
        histograms = 0
        for field_number, field_wire, a, b in _fields(data, start, end, "TimeSeries"):
            if field_number == 1:
                _expect("TimeSeries", field_number, field_wire, _LENGTH_DELIMITED)
                raw = data[a:b]
                pair = known_labels.get(raw)
                if pair is None:
                    pair = known_labels[raw] = _label(data, a, b)
                name, value = pair
                if value:
                    one.labels[name] = value
            elif field_number == 2:
                _expect("TimeSeries", field_number, field_wire, _LENGTH_DELIMITED)
                sample, bits, timestamp = _sample(data, a, b)
                if math.isfinite(sample):
                    one.times.append(timestamp)
                    one.values.append(sample)
                elif bits == STALE_NAN_BITS:
                    one.ended.append(timestamp)
                else:
                    summary.non_finite += 1
            elif field_number == 4:
                histograms += 1
        if NAME not in one.labels:
            raise RemoteWriteError(
                f"a series has no __name__ label (labels {one.labels}); remote_write requires "
                "every series to be named"
            )
        summary.histogram_series += histograms > 0
        if one.values or one.ended:
            series.append(one)
    return series


# -- snappy --------------------------------------------------------------------------------


def decompress(body: bytes, max_bytes: int) -> bytes:
    """Undo snappy's block compression, refusing bodies that would expand past ``max_bytes``."""
    if not body:
        raise RemoteWriteError("empty body: expected a snappy-compressed prometheus.WriteRequest")
    try:
        size = cramjam.snappy.decompress_raw_len(body)
    except cramjam.DecompressionError as error:
        raise RemoteWriteError(
            f"body is not snappy block-compressed ({error}); send Content-Encoding: snappy "
            "with snappy's block format, not the framed format"
        ) from None
    if size > max_bytes:
        raise RemoteWriteError(
            f"body would decompress to {size} bytes, over the limit of {max_bytes}; "
            "lower queue_config.max_samples_per_send in the sender"
        )
    try:
        return bytes(cramjam.snappy.decompress_raw(body, output_len=size))
    except cramjam.DecompressionError as error:
        raise RemoteWriteError(
            f"body is not snappy block-compressed ({error}); send Content-Encoding: snappy "
            "with snappy's block format, not the framed format"
        ) from None


# -- series to MetricBatch records ---------------------------------------------------------


@dataclass
class _Group:
    """The samples of one (entity, timestamp)."""

    labels: dict[str, str]
    names: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    kinds: list[MetricKind] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)

    def batches(self, entity: str, timestamp: int, max_samples: int) -> Iterator[Record]:
        """The group as MetricBatch records, split by sample count and by name bytes."""
        typed = any(kind is not MetricKind.UNKNOWN for kind in self.kinds)
        start = size = 0
        for i, name in enumerate(self.names):
            size += len(name)
            if i - start == max_samples or (size > MAX_BATCH_NAME_BYTES and i > start):
                yield self._batch(entity, timestamp, start, i, typed, [])
                start, size = i, len(name)
        yield self._batch(entity, timestamp, start, len(self.names), typed, self.ended)

    def _batch(
        self, entity: str, timestamp: int, start: int, end: int, typed: bool, ended: list[str]
    ) -> Record:
        return {
            "entity": entity,
            "event_time": timestamp,
            "labels": dict(self.labels),
            "names": self.names[start:end],
            "values": self.values[start:end],
            "source": SOURCE,
            "kinds": [k.value for k in self.kinds[start:end]] if typed else [],
            "ended": ended,
        }


class RemoteWriteDecoder:
    """Turns remote_write bodies into per-entity MetricBatch records.

    Parameters
    ----------
    entity_labels
        Labels tried in order to name a series' entity (the ``FORESIGHT_ENTITY_LABELS``
        setting, default ``entity,instance,host,job``).
    max_batch_samples
        Most samples in one MetricBatch; an (entity, timestamp) group with more is split.
        Default 1000.
    max_decoded_bytes
        Largest uncompressed WriteRequest accepted. Default 64 MiB.
    max_entities
        Most entities one request may hold (default 10,000); more refuse the request.
    scrub
        Applied to each series' labels before anything else sees them (the ingest server's
        PII rules, :meth:`connectors.pii.Scrubber.labels`), so the entity, the batch labels
        and the series names are all built from scrubbed values. Default: labels unchanged.
    max_future_ms
        Samples stamped further ahead of the receiver's clock are not produced (the
        ``FORESIGHT_MAX_FUTURE_S`` setting, which the worker holds them to). Default an hour.

    Examples
    --------
    >>> import cramjam
    >>> decoder = RemoteWriteDecoder(["instance", "job"])
    >>> decoder.decode(bytes(cramjam.snappy.compress_raw(b"")), now_ms=0).batches
    []
    >>> decoder.entity_of({"__name__": "up", "job": "api", "instance": "web-1:9100"})
    'web-1:9100'
    """

    def __init__(
        self,
        entity_labels: Sequence[str],
        max_batch_samples: int = 1000,
        max_decoded_bytes: int = 64 << 20,
        max_entities: int = MAX_ENTITIES,
        scrub: Callable[[dict[str, str]], dict[str, str]] | None = None,
        max_future_ms: int = MAX_FUTURE_MS,
    ) -> None:
        self.entity_labels = tuple(label for label in entity_labels if label)
        self.max_future_ms = max_future_ms
        if not self.entity_labels:
            raise ValueError("entity_labels is empty: name at least one label, e.g. instance")
        if max_batch_samples < 1:
            raise ValueError(f"max_batch_samples must be at least 1, got {max_batch_samples}")
        self.max_batch_samples = max_batch_samples
        self.max_decoded_bytes = max_decoded_bytes
        self.max_entities = max_entities
        self.scrub = scrub
        # The type of each metric family, from the metadata Prometheus sends now and then,
        # oldest first; and the (metric, reason) pairs already logged as over the limits.
        self.metadata: dict[str, MetricKind] = {}
        self._logged: set[tuple[str, str]] = set()

    def entity_of(self, labels: dict[str, str]) -> str:
        """The first entity label the series has, or :data:`FALLBACK_ENTITY`."""
        for key in self.entity_labels:
            value = labels.get(key)
            if value:
                return value
        return FALLBACK_ENTITY

    def kind_of(self, name: str) -> MetricKind:
        """The type the sender's metadata gave the family of the sample ``name``."""
        for family in family_names(name):
            kind = self.metadata.get(family)
            if kind is not None:
                return kind
        return MetricKind.UNKNOWN

    def decode(self, body: bytes, now_ms: int) -> DecodedWrite:
        """Decode one snappy-compressed WriteRequest; raises :class:`RemoteWriteError`.

        ``now_ms`` is the receiver's clock: samples stamped more than an hour after it are
        dropped and counted.
        """
        summary = WriteSummary()
        metadata: dict[str, MetricKind] = {}
        data = decompress(body, self.max_decoded_bytes)
        series = parse_write_request(data, summary, metadata)
        if self.scrub is not None:
            for one in series:
                one.labels = self.scrub(one.labels)
        self._remember(metadata)
        by_entity: dict[str, list[_Series]] = {}
        for one in series:
            by_entity.setdefault(self.entity_of(one.labels), []).append(one)
        if len(by_entity) > self.max_entities:
            raise RemoteWriteError(
                f"the request holds series of {len(by_entity):,} entities, over the limit of "
                f"{self.max_entities:,} per request (each entity is a Kafka record): lower "
                "queue_config.max_samples_per_send in the sender"
            )
        latest = now_ms + self.max_future_ms
        groups: dict[tuple[str, int], _Group] = {}
        for entity, members in by_entity.items():
            shared = self._shared_entity_labels(members)
            unnamed = "entity_control_character" if control_problem(entity) else None
            for one in members:
                name = series_name(one.labels, shared)
                reason = (
                    over_limits(one.labels)
                    or ("series_name_too_long" if len(name) > limits.MAX_SERIES_CHARS else None)
                    or unnamed
                )
                if reason:
                    self._refuse(one, reason, summary)
                    continue
                summary.series += 1
                kind = self.kind_of(one.labels[NAME])
                for timestamp, value in zip(one.times, one.values, strict=True):
                    if timestamp > latest:
                        summary.future += 1
                        continue
                    group = groups.get((entity, timestamp))
                    if group is None:
                        group = groups[(entity, timestamp)] = _Group(shared)
                    group.names.append(name)
                    group.values.append(value)
                    group.kinds.append(kind)
                    summary.samples += 1
                for timestamp in one.ended:
                    if timestamp <= latest:
                        group = groups.setdefault((entity, timestamp), _Group(shared))
                        group.ended.append(name)
                        summary.stale_markers += 1
        batches = [
            batch
            for (entity, timestamp), group in sorted(groups.items())
            for batch in group.batches(entity, timestamp, self.max_batch_samples)
        ]
        return DecodedWrite(batches, summary)

    def _remember(self, metadata: dict[str, MetricKind]) -> None:
        for family, kind in metadata.items():
            self.metadata.pop(family, None)
            self.metadata[family] = kind
        while len(self.metadata) > MAX_FAMILIES:
            self.metadata.pop(next(iter(self.metadata)))

    def _refuse(self, one: _Series, reason: str, summary: WriteSummary) -> None:
        """Count a series over the limits, and log it once per metric name."""
        summary.over_limits[reason] = summary.over_limits.get(reason, 0) + len(one.values)
        name = one.labels[NAME][: limits.MAX_NAME_CHARS]
        if (name, reason) not in self._logged and len(self._logged) < MAX_FAMILIES:
            self._logged.add((name, reason))
            log.warning(
                "remote_write: dropping series of %s (%s: %d labels, longest name %d and value "
                "%d characters; limits %d, %d and %d); logged once per metric",
                name,
                reason,
                len(one.labels),
                max(len(k) for k in one.labels),
                max(len(v) for v in one.labels.values()),
                limits.MAX_LABELS,
                limits.MAX_NAME_CHARS,
                limits.MAX_LABEL_VALUE_CHARS,
            )

    def _shared_entity_labels(self, members: list[_Series]) -> dict[str, str]:
        """The entity labels every series of one entity carries with the same value."""
        first = members[0].labels
        return {
            key: first[key]
            for key in self.entity_labels
            if key in first and all(m.labels.get(key) == first[key] for m in members)
        }
