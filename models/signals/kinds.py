"""What a series is (counter, gauge, histogram...), from the sender's word or its name.

Prometheus' remote_write carries each family's type in its metadata
(``prometheus.MetricMetadata.type``); :class:`MetricKind` has the same members in the same
order, and the MetricBatch schema's ``kinds`` enum the same symbols. A series whose type was
not sent is typed by Prometheus' naming conventions (:func:`infer_kind`).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class MetricKind(StrEnum):
    """A series' type; the order is remote_write's ``MetricMetadata.MetricType`` numbering."""

    UNKNOWN = "UNKNOWN"
    COUNTER = "COUNTER"
    GAUGE = "GAUGE"
    HISTOGRAM = "HISTOGRAM"
    GAUGEHISTOGRAM = "GAUGEHISTOGRAM"
    SUMMARY = "SUMMARY"
    INFO = "INFO"
    STATESET = "STATESET"

    @classmethod
    def from_number(cls, number: int) -> MetricKind:
        """The kind of remote_write's type number; numbers it does not know are UNKNOWN."""
        members = list(cls)
        return members[number] if 0 <= number < len(members) else cls.UNKNOWN


#: Sample-name suffixes that belong to a family of another name, the family name being the
#: sample name without it (OpenMetrics names a counter family without its ``_total``).
FAMILY_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def family_names(name: str) -> list[str]:
    """Family names a sample name may belong to, most specific first.

    >>> family_names("http_request_duration_seconds_bucket")
    ['http_request_duration_seconds_bucket', 'http_request_duration_seconds']
    """
    found = [name]
    for suffix in FAMILY_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            found.append(name[: -len(suffix)])
    return found


def infer_kind(name: str, labels: Mapping[str, str]) -> MetricKind:
    """Prometheus' naming conventions: ``_total`` counter; ``_bucket`` with ``le``, ``_sum``
    and ``_count`` histogram; a ``quantile`` label summary; anything else a gauge.

    >>> infer_kind("node_cpu_seconds_total", {"mode": "idle"}).value
    'COUNTER'
    >>> infer_kind("rpc_duration_seconds", {"quantile": "0.99"}).value
    'SUMMARY'
    """
    if name.endswith("_total"):
        return MetricKind.COUNTER
    if (name.endswith("_bucket") and "le" in labels) or name.endswith(("_sum", "_count")):
        return MetricKind.HISTOGRAM
    if "quantile" in labels:
        return MetricKind.SUMMARY
    return MetricKind.GAUGE
