"""Hostile values, shared by the fuzz targets: the inputs a careless or malicious sender makes.

Each strategy mixes the ordinary with the extreme: names from empty to 100,000 characters and
odd Unicode (controls, bidirectional overrides, combining marks, astral characters), numbers
from subnormals to infinities and NaN, timestamps at the edges of a 64-bit long, label maps
from none to 10,000 entries. Text that must travel as Avro strings is valid UTF-8 here (lone
surrogates cannot be encoded); the doors that read raw bytes or JSON get surrogates from
their own strategies.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import strategies as st

from models.signals import MetricKind
from schemas import limits

NOW_MS = 1_800_000_000_000
HOUR_MS = 3_600_000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

ODD = [
    "",
    " ",
    "\x00",
    "\n",
    "a\x00b",
    "\u202eevil",  # right-to-left override
    "e\u0301" * 50,  # combining accents
    "\ufeff",
    "\U0001f4a5" * 10,
    "..",
    "../../etc/passwd",
    "*",
    "[",
    "web-*",
    "%00",
    '"quoted"',
    "{",
    "__name__",
    "DROP TABLE alerts",
]

unicode_text = st.text(st.characters(codec="utf-8"), max_size=300)
"""Any UTF-8 encodable text, short."""


def long_text(most: int = 120_000) -> st.SearchStrategy[str]:
    """One character repeated up to ``most`` times: huge, and cheap to make."""
    return st.builds(lambda c, n: c * n, st.sampled_from("m\u00e9\U0001f4a5"), st.integers(0, most))


names = st.one_of(
    st.sampled_from(["cpu", "web-1", "node_load1", "m" * limits.MAX_NAME_CHARS]),
    st.sampled_from(ODD),
    unicode_text,
    long_text(),
)
"""Entity, metric, label, agent and task names."""


def label_maps(most: int = 12_000) -> st.SearchStrategy[dict[str, str]]:
    """Label maps: a few hostile entries, or very many plain ones."""
    return st.one_of(
        st.dictionaries(names, names, max_size=6),
        st.integers(0, most).map(lambda n: {f"k{i}": "v" for i in range(n)}),
    )


_EDGE_FLOATS = [0.0, -0.0, 5e-324, -5e-324, 1e308, -1e308, 1.7976931348623157e308, 2.0**53]
_STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
numbers = st.one_of(
    st.floats(),  # NaN and both infinities included
    st.sampled_from([*_EDGE_FLOATS, float("nan"), float("inf"), -float("inf"), _STALE_NAN]),
    st.floats(-100.0, 100.0),
)
"""Doubles, finite or not."""

timestamps = st.one_of(
    st.sampled_from([INT64_MIN, INT64_MAX, 0, -1, NOW_MS, NOW_MS + HOUR_MS + 1, NOW_MS * 1000]),
    st.integers(INT64_MIN, INT64_MAX),
    st.integers(NOW_MS - 2 * HOUR_MS, NOW_MS + 2 * HOUR_MS),
)
"""Epoch milliseconds as an Avro long: the edges, anything, and near now."""


def _record(
    draw: st.DrawFn,
    ordinary: dict[str, st.SearchStrategy[Any]],
    hostile: dict[str, st.SearchStrategy[Any]],
) -> dict[str, Any]:
    """A record whose fields are ordinary but for a few drawn hostile: a record hostile in
    every field is refused by its first check, and the checks after it would go untried."""
    chosen = draw(st.sets(st.sampled_from(sorted(hostile)), max_size=3))
    return {name: draw(hostile[name] if name in chosen else ordinary[name]) for name in ordinary}


_series = st.sampled_from([f"m{i}" for i in range(6)] + ["node_load1", "up"])
_near_now = st.integers(NOW_MS - 30 * 60_000, NOW_MS)


@st.composite
def metric_batches(draw: st.DrawFn) -> dict[str, Any]:
    """MetricBatch records that fit the schema; names and values usually parallel."""
    count = draw(st.integers(0, 30))
    parallel = st.lists(numbers, min_size=count, max_size=count)
    record = _record(
        draw,
        {
            "entity": st.sampled_from(["web-1", "web-2"]),
            "event_time": _near_now,
            "labels": st.dictionaries(st.sampled_from(["job", "region"]), names, max_size=2),
            "names": st.lists(_series, min_size=count, max_size=count),
            "values": st.lists(st.floats(0, 1e6), min_size=count, max_size=count),
            "source": st.just("fuzz"),
            "kinds": st.just([]),
            "ended": st.just([]),
        },
        {
            "entity": names,
            "event_time": timestamps,
            "labels": label_maps(),
            "names": st.lists(st.one_of(_series, names), min_size=count, max_size=count + 1),
            "values": st.one_of(parallel, st.lists(numbers, max_size=count + 1)),
            "source": names,
            "kinds": st.lists(st.sampled_from([k.value for k in MetricKind]), max_size=count + 1),
            "ended": st.lists(st.one_of(_series, names), max_size=4),
        },
    )
    return record


@st.composite
def agent_events(draw: st.DrawFn) -> dict[str, Any]:
    """AgentEvent records that fit the schema."""
    maybe_number = st.one_of(st.none(), numbers)
    return _record(
        draw,
        {
            "agent": st.sampled_from(["a1", "a2"]),
            "task_id": st.sampled_from(["t1", "t2", "t3"]),
            "task_type": st.sampled_from(["triage", "deploy"]),
            "phase": st.sampled_from(["STARTED", "SUCCEEDED", "FAILED"]),
            "event_time": _near_now,
            "duration_ms": st.one_of(st.none(), st.floats(0, 1e7)),
            "cost": st.one_of(st.none(), st.floats(0, 100)),
            "error_class": st.one_of(st.none(), st.just("timeout")),
            "labels": st.just({}),
            "workflow_id": st.one_of(st.none(), st.sampled_from(["w1", "w2"])),
            "parent_task_id": st.one_of(st.none(), st.sampled_from(["t1", "t2"])),
            "step": st.one_of(st.none(), st.integers(0, 5)),
        },
        {
            "agent": names,
            "task_id": names,
            "task_type": names,
            "event_time": timestamps,
            "duration_ms": maybe_number,
            "cost": maybe_number,
            "error_class": st.one_of(st.none(), names),
            "labels": label_maps(),
            "workflow_id": st.one_of(st.none(), names),
            "parent_task_id": st.one_of(st.none(), names),
            "step": st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
        },
    )


@st.composite
def routing_requests(draw: st.DrawFn) -> dict[str, Any]:
    """RoutingRequest records that fit the schema."""
    agents = st.sampled_from(["a1", "a2", "a3"])
    return _record(
        draw,
        {
            "task_id": st.sampled_from(["t1", "t2", "t3"]),
            "task_type": st.sampled_from(["triage", "deploy"]),
            "candidates": st.lists(agents, max_size=3),
            "deadline": st.one_of(st.none(), _near_now),
            "priority": st.integers(-2, 2),
            "event_time": _near_now,
        },
        {
            "task_id": names,
            "task_type": names,
            "candidates": st.lists(st.one_of(agents, names), max_size=40),
            "deadline": st.one_of(st.none(), timestamps),
            "priority": st.integers(-(2**31), 2**31 - 1),
            "event_time": timestamps,
        },
    )


@st.composite
def labels(draw: st.DrawFn) -> dict[str, Any]:
    """Label records (ground truth) that fit the schema."""
    return _record(
        draw,
        {
            "entity": st.sampled_from(["web-1", "web-2"]),
            "kind": st.sampled_from(["INCIDENT", "FAILURE"]),
            "incident_type": st.just("oom"),
            "start_time": _near_now,
            "end_time": st.none(),
            "metric": st.none(),
            "description": st.just(""),
        },
        {
            "entity": names,
            "incident_type": names,
            "start_time": timestamps,
            "end_time": st.one_of(st.none(), timestamps),
            "metric": st.one_of(st.none(), names),
            "description": names,
        },
    )


def mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` cut short, with bytes flipped, or with bytes added: nearly valid input."""
    size = len(data)
    cut = st.integers(0, size).map(lambda n: data[:n])
    flips = st.lists(st.tuples(st.integers(0, max(size - 1, 0)), st.integers(0, 255)), max_size=4)

    def flipped(changes: list[tuple[int, int]]) -> bytes:
        out = bytearray(data)
        for at, value in changes:
            if out:
                out[at] = value
        return bytes(out)

    return st.one_of(cut, flips.map(flipped), st.binary(max_size=64).map(lambda tail: data + tail))


@st.composite
def quality_snapshots(draw: st.DrawFn) -> dict[str, Any]:
    """CodeQualitySnapshot records that fit the schema (events at any time: history too)."""
    count = st.integers(0, 10**6)
    hostile_count = st.one_of(count, st.integers(INT64_MIN, INT64_MAX))
    share = st.one_of(st.none(), st.floats(0, 1))
    return _record(
        draw,
        {
            "repository": st.sampled_from(["shop", "acme/api"]),
            "commit": st.text("0123456789abcdef", min_size=7, max_size=40),
            "event_time": st.integers(0, NOW_MS),
            **dict.fromkeys(("files", "lines", "functions"), count),
            "mean_complexity": st.floats(0, 20),
            "max_complexity": st.floats(20, 200),
            **dict.fromkeys(("test_files", "test_lines", "test_count"), count),
            "coverage": share,
            "lint_warnings": st.one_of(st.none(), count),
            "duplication": share,
            **dict.fromkeys(("churn_added", "churn_deleted", "churn_files"), count),
            "source": st.just("fuzz"),
        },
        {
            "repository": names,
            "commit": names,
            "event_time": timestamps,
            **dict.fromkeys(("files", "lines", "functions", "test_count"), hostile_count),
            "mean_complexity": numbers,
            "max_complexity": numbers,
            "coverage": st.one_of(st.none(), numbers),
            "lint_warnings": st.one_of(st.none(), hostile_count),
            "duplication": st.one_of(st.none(), numbers),
            "churn_added": hostile_count,
            "source": names,
        },
    )
