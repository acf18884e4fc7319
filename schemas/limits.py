"""Size limits of input records, shared by every door that accepts them.

The HTTP doors answer 400 past these limits; the worker dead-letters what reaches Kafka some
other way. One set of numbers, so a record one door accepts the other does not refuse.
Outputs are built from inputs: these bounds are what keeps every output record under Kafka's
message size.
"""

from __future__ import annotations

MAX_NAME_CHARS = 256
"""Entity, metric, label key, agent, task and error-class names."""

MAX_SERIES_CHARS = 2048
"""A series' name with its labels folded in (``name{key="value",...}``, a MetricBatch name):
a container's series from cAdvisor carry ids and image digests, and run to 500 characters."""

MAX_LABEL_VALUE_CHARS = 1024
"""A label's value."""

MAX_LABELS = 64
"""Labels on one record (or one remote_write series)."""

MAX_SAMPLES = 10_000
"""Samples in one MetricBatch."""
