"""The PromQL subset of derived signals: PromQL's results on hand-made series."""

from __future__ import annotations

import math
import re

import pytest

from models.signals.expressions import (
    EvaluationError,
    RuleError,
    Sample,
    SeriesIndex,
    bucket_quantile,
    parse,
)


def _index(*series: tuple[str, dict[str, str], float, bool]) -> SeriesIndex:
    return SeriesIndex([Sample({"__name__": n, **ls}, v, f) for n, ls, v, f in series])


CPU = _index(
    ("cpu_seconds_total", {"cpu": "0", "mode": "idle"}, 0.25, True),
    ("cpu_seconds_total", {"cpu": "0", "mode": "user"}, 0.75, True),
    ("cpu_seconds_total", {"cpu": "1", "mode": "idle"}, 0.75, False),
    ("cpu_seconds_total", {"cpu": "1", "mode": "user"}, 0.25, False),
    ("load1", {}, 3.0, False),
    ("node_filesystem_avail_bytes", {"mountpoint": "/", "fstype": "ext4"}, 30.0, True),
    ("node_filesystem_size_bytes", {"mountpoint": "/", "fstype": "ext4"}, 120.0, False),
    ("node_filesystem_avail_bytes", {"mountpoint": "/run", "fstype": "tmpfs"}, 9.0, True),
    ("node_filesystem_size_bytes", {"mountpoint": "/run", "fstype": "tmpfs"}, 10.0, False),
)


def _result(expr: str, index: SeriesIndex = CPU) -> list[tuple[dict[str, str], float, bool]]:
    value = parse(expr).evaluate(index)
    assert isinstance(value, list)
    return sorted(
        ((dict(s.labels), s.value, s.fresh) for s in value), key=lambda r: sorted(r[0].items())
    )


def test_matchers_are_anchored_as_in_prometheus() -> None:
    assert _result('cpu_seconds_total{mode=~"idl"}') == []
    assert len(_result('cpu_seconds_total{mode=~"idl.*"}')) == 2
    assert len(_result('cpu_seconds_total{mode!~"idle|system"}')) == 2
    assert len(_result('cpu_seconds_total{cpu="1",mode!="idle"}')) == 1
    assert [r[0]["__name__"] for r in _result('{__name__=~"load.+|none"}')] == ["load1"]
    assert _result('cpu_seconds_total{missing=""}') != []  # an absent label is ""


def test_one_to_one_matching_drops_the_name_and_spreads_freshness() -> None:
    used = _result("1 - node_filesystem_avail_bytes / node_filesystem_size_bytes")
    assert [(r[0], r[2]) for r in used] == [
        ({"fstype": "ext4", "mountpoint": "/"}, True),
        ({"fstype": "tmpfs", "mountpoint": "/run"}, True),
    ]
    assert [r[1] for r in used] == pytest.approx([0.75, 0.1])
    on = _result("node_filesystem_avail_bytes / on(mountpoint) node_filesystem_size_bytes")
    assert [r[0] for r in on] == [{"mountpoint": "/"}, {"mountpoint": "/run"}]
    ignoring = _result("node_filesystem_avail_bytes / ignoring(fstype) node_filesystem_size_bytes")
    assert [r[0] for r in ignoring] == [{"mountpoint": "/"}, {"mountpoint": "/run"}]
    assert _result("load1 / node_filesystem_size_bytes") == []  # nothing matches


def test_matching_many_series_to_one_is_an_error() -> None:
    with pytest.raises(EvaluationError, match="more than one series on the right"):
        parse("load1 / on() cpu_seconds_total").evaluate(CPU)
    with pytest.raises(EvaluationError, match="more than one series on the left"):
        parse("cpu_seconds_total / on() load1").evaluate(CPU)


def test_aggregations_group_as_prometheus_does() -> None:
    assert _result('1 - sum(cpu_seconds_total{mode="idle"}) / sum(cpu_seconds_total)') == [
        ({}, 0.5, True)
    ]
    assert _result("sum by (mode) (cpu_seconds_total)") == [
        ({"mode": "idle"}, 1.0, True),
        ({"mode": "user"}, 1.0, True),
    ]
    assert _result("max(cpu_seconds_total) by (cpu)") == [
        ({"cpu": "0"}, 0.75, True),
        ({"cpu": "1"}, 0.75, False),  # neither input of cpu 1 is new
    ]
    assert _result("avg without (cpu) (cpu_seconds_total)") == [
        ({"mode": "idle"}, 0.5, True),
        ({"mode": "user"}, 0.5, True),
    ]
    assert _result('min(cpu_seconds_total{mode="user"})') == [({}, 0.25, True)]
    assert _result('load1 / count(cpu_seconds_total{mode="idle"})') == [({}, 1.5, True)]


def test_comparisons_filter_and_keep_the_name() -> None:
    assert _result("cpu_seconds_total > 0.5") == [
        ({"__name__": "cpu_seconds_total", "cpu": "0", "mode": "user"}, 0.75, True),
        ({"__name__": "cpu_seconds_total", "cpu": "1", "mode": "idle"}, 0.75, False),
    ]
    assert [r[1] for r in _result("0.5 >= cpu_seconds_total")] == [0.25, 0.25]
    sized = _result("node_filesystem_avail_bytes / (node_filesystem_size_bytes > 50)")
    assert [r[0]["mountpoint"] for r in sized] == ["/"]


def test_or_fills_in_what_is_missing() -> None:
    assert _result('(sum(cpu_seconds_total{mode="steal"}) or vector(0)) / sum(load1)') == [
        ({}, 0.0, False)
    ]
    assert _result("sum(missing) or sum(load1)") == [({}, 3.0, False)]


def test_functions() -> None:
    assert [r[1] for r in _result("clamp_max(cpu_seconds_total, 0.5)")] == [0.25, 0.5, 0.5, 0.25]
    assert [r[1] for r in _result("clamp_min(-load1, -1)")] == [-1.0]
    assert [r[1] for r in _result("abs(-load1 * 2 + 1)")] == [5.0]


def test_histogram_quantile_interpolates_within_the_bucket_like_prometheus() -> None:
    # Bucket rates (per second): 10 under 0.1 s, 20 more under 0.5 s, 10 more under 1 s, 0 over.
    buckets = _index(
        *[
            ("rpc_bucket", {"le": le, "path": path}, rate * k, True)
            for le, rate in (("0.1", 10.0), ("0.5", 30.0), ("1", 40.0), ("+Inf", 40.0))
            for path, k in (("/a", 1.0), ("/b", 3.0))
        ]
    )
    # Summed over paths: 40, 120, 160, 160. p50: rank 80, in (0.1, 0.5]: 0.1 + 0.4 * 40/80.
    ((labels, p50, fresh),) = _result("histogram_quantile(0.5, sum by (le) (rpc_bucket))", buckets)
    assert (labels, fresh) == ({}, True) and p50 == pytest.approx(0.3)
    # p95: rank 152, in (0.5, 1]: 0.5 + 0.5 * 32/40.
    p95 = _result("histogram_quantile(0.95, rpc_bucket)", buckets)
    assert [r[0] for r in p95] == [{"path": "/a"}, {"path": "/b"}]
    assert [r[1] for r in p95] == pytest.approx([0.9, 0.9])


@pytest.mark.parametrize(
    ("q", "bounds", "counts", "expected"),
    [
        (0.5, [1.0, 2.0, math.inf], [10.0, 30.0, 40.0], 1.5),
        (0.99, [1.0, 2.0, math.inf], [10.0, 30.0, 40.0], 2.0),  # in +Inf: the highest bound
        (0.2, [1.0, 2.0, math.inf], [10.0, 30.0, 40.0], 0.8),  # first bucket starts at 0
        (0.1, [-1.0, 2.0, math.inf], [10.0, 30.0, 40.0], -1.0),  # first bound <= 0
        (0.5, [1.0, 2.0], [10.0, 30.0], math.nan),  # no +Inf bucket
        (0.5, [1.0, 2.0, math.inf], [0.0, 0.0, 0.0], math.nan),  # no observations
        (0.5, [1.0, math.inf], [10.0, 10.0], 0.5),
        (0.5, [2.0, 1.0, math.inf], [30.0, 10.0, 40.0], 1.5),  # any order
        (0.375, [1.0, 2.0, 3.0, math.inf], [10.0, 5.0, 30.0, 40.0], 2.25),  # made monotonic
        (-0.1, [1.0, math.inf], [1.0, 1.0], -math.inf),
        (1.1, [1.0, math.inf], [1.0, 1.0], math.inf),
    ],
)
def test_bucket_quantile(
    q: float, bounds: list[float], counts: list[float], expected: float
) -> None:
    result = bucket_quantile(q, bounds, counts)
    assert result == pytest.approx(expected, nan_ok=True)


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("rate(x[5m])", "rate() is not needed"),
        ("x[5m]", "range selectors are not supported"),
        ("foo(x)", "unknown function foo()"),
        ("sum(x, y)", "sum takes one argument"),
        ("x and y", "and is not supported"),
        ("x / on(a) group_left y", "group_left is not supported"),
        ("1 > 2", "comparison between two numbers"),
        ("x or 1", "'or' needs vectors on both sides"),
        ("sum(1)", "sum needs a vector"),
        ("histogram_quantile(x, y)", "argument 1 of histogram_quantile() must be a number"),
        ('x{a=~"("}', "bad regex"),
        ("x{a=b}", "expected a quoted label value"),
        ("(x", "expected ')', found the end"),
        ("x y", "unexpected 'y'"),
        ("x $ y", "unexpected character '$'"),
    ],
)
def test_parse_errors_say_where_and_why(expr: str, words: str) -> None:
    with pytest.raises(RuleError, match=re.escape(words)):
        parse(expr)
