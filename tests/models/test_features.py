"""Rolling windows: exact statistics, event time, late samples, idle windows, cardinality."""

from __future__ import annotations

import numpy as np
import pytest

from models.features import (
    STATISTICS,
    WINDOW_NAMES,
    FeatureWindows,
    WindowArena,
    feature_names,
    statistic,
    window_statistics,
)

T0 = 1_700_000_000_000


def _fill(windows: FeatureWindows, n: int, step_ms: int = 10_000) -> int:
    for i in range(n):
        windows.add(T0 + i * step_ms, ["cpu", "mem"], np.array([float(i), 50.0]))
    return T0 + (n - 1) * step_ms


def _features(windows: FeatureWindows, now: int) -> dict[str, float]:
    names, values = windows.features(now)
    return dict(zip(names, values.tolist(), strict=True))


def test_names_follow_the_one_definition() -> None:
    windows = FeatureWindows()
    now = _fill(windows, 3)
    names, values = windows.features(now)
    assert names == feature_names(["cpu", "mem"])
    assert len(values) == 2 * len(WINDOW_NAMES) * len(STATISTICS)


def test_statistics_of_a_planted_trend() -> None:
    windows = FeatureWindows()
    now = _fill(windows, 400)
    f = _features(windows, now)
    assert f["cpu:1h:count"] == 360  # 1 h of 10 s samples (six 10-minute buckets)
    assert f["cpu:1m:slope"] == pytest.approx(0.1)  # +1 per 10 s
    assert f["cpu:15m:slope"] == pytest.approx(0.1)
    assert f["cpu:15m:r2"] == pytest.approx(1.0)
    assert f["cpu:5m:roc"] == pytest.approx(0.1)
    assert f["cpu:1m:max"] == 399
    assert f["cpu:1m:last"] == 399
    assert f["mem:1h:std"] == pytest.approx(0.0)
    assert f["mem:1h:mean"] == 50.0
    assert f["cpu:1m:p95"] <= f["cpu:1m:max"]


def test_a_late_sample_amends_its_own_bucket() -> None:
    windows = FeatureWindows()
    windows.add(T0 + 60_000, ["cpu"], np.array([10.0]))
    windows.add(T0 + 30_000, ["cpu"], np.array([30.0]))  # late, same 5 m window
    f = _features(windows, T0 + 60_000)
    assert f["cpu:5m:count"] == 2
    assert f["cpu:5m:mean"] == 20.0
    assert f["cpu:5m:last"] == 10.0  # "last" is by event time, not arrival


def test_idle_windows_empty_out_as_time_passes() -> None:
    windows = FeatureWindows()
    now = _fill(windows, 30)
    later = _features(windows, now + 10 * 60_000)
    assert later["cpu:1m:count"] == 0
    assert np.isnan(later["cpu:1m:mean"])
    assert later["cpu:1h:count"] == 30


def test_cardinality_limit_refuses_new_metrics() -> None:
    windows = FeatureWindows(max_metrics=2)
    refused = windows.add(T0, ["a", "b", "c", "d"], np.array([1.0, 2.0, 3.0, 4.0]))
    assert refused == ["c", "d"]
    assert windows.metrics == ["a", "b"]


def test_stacked_rows_equal_each_entity_alone() -> None:
    a, b = FeatureWindows(), FeatureWindows()
    rng = np.random.default_rng(3)
    for i in range(50):
        a.add(T0 + i * 7_000, ["x"], rng.normal(size=1))
        b.add(T0 + i * 9_000, ["y", "z"], rng.normal(size=2))
    now_a, now_b = T0 + 49 * 7_000, T0 + 49 * 9_000
    stacked = window_statistics(
        np.concatenate([a.buckets[:1], b.buckets[:2]]),
        np.concatenate([a.bucket_ids[:1], b.bucket_ids[:2]]),
        np.concatenate([a.last[:1], b.last[:2]]),
        np.concatenate([a.ewma[:1], b.ewma[:2]]),
        np.array([now_a, now_b, now_b]),
    )
    np.testing.assert_array_equal(stacked[:1], a.grid(now_a))
    np.testing.assert_array_equal(stacked[1:], b.grid(now_b))
    assert statistic(stacked, "count", "1h").tolist() == [50, 50, 50]


def test_a_batch_adds_what_its_samples_add_one_by_one() -> None:
    """The usual batch (every metric, in order) takes a shorter path than a reordered or
    partial one or a single sample: all must leave the same windows, bit for bit."""
    batched, single = FeatureWindows(max_metrics=5), FeatureWindows(max_metrics=5)
    rng = np.random.default_rng(5)
    batches = [["a", "b", "c"], ["a", "b", "c"], ["c", "a"], ["a", "b", "c", "d"], ["d", "b"]]
    for i in range(120):
        names = batches[i % len(batches)] + (["e", "f"] if i == 60 else [])  # f: refused
        t_ms = T0 + i * 4_000 - (30_000 if i % 7 == 3 else 0)  # some samples come late
        values = rng.normal(50, 10, len(names))
        assert batched.add(t_ms, names, values) == (["f"] if i == 60 else [])
        for name, value in zip(names, values, strict=True):
            single.add(t_ms, [name], np.array([value]))
    assert batched.metrics == single.metrics == ["a", "b", "c", "d", "e"]
    for part in ("buckets", "bucket_ids", "last", "ewma"):
        np.testing.assert_array_equal(getattr(batched, part), getattr(single, part))


def test_entities_sharing_an_arena_end_as_each_alone() -> None:
    """Adds queue in the shared arena and land together when read: several entities, some
    adding more than once between reads, late samples among them, must leave each
    entity's windows bit for bit as a FeatureWindows of its own would."""
    arena = WindowArena()
    shared = [FeatureWindows(4, arena) for _ in range(3)]
    alone = [FeatureWindows(4) for _ in range(3)]
    rng = np.random.default_rng(11)
    names = [["a", "b"], ["b", "c", "d"], ["x"]]
    for i in range(300):
        e = int(rng.integers(3))
        t_ms = T0 + i * 3_000 - int(rng.integers(0, 40_000))
        values = rng.normal(50, 10, len(names[e]))
        for windows in (shared[e], alone[e]):
            windows.add(t_ms, names[e], values)
        if rng.random() < 0.1:  # a read mid-way lands what is queued
            np.testing.assert_array_equal(shared[e].grid(t_ms), alone[e].grid(t_ms))
    for s, a in zip(shared, alone, strict=True):
        for part in ("buckets", "bucket_ids", "last", "ewma"):
            np.testing.assert_array_equal(getattr(s, part), getattr(a, part))


def test_a_row_taken_again_holds_none_of_its_last_owners_samples() -> None:
    arena = WindowArena()
    gone = FeatureWindows(4, arena)
    gone.add(T0, ["cpu"], np.array([90.0]))  # queued, not landed
    arena.states.release(gone.rows)
    taken = FeatureWindows(4, arena)
    taken.add(T0 + 10_000, ["mem"], np.array([10.0]))
    assert taken.rows.tolist() == gone.rows.tolist()  # the same row, fresh again
    assert _features(taken, T0 + 10_000)["mem:1m:count"] == 1
    assert _features(taken, T0 + 10_000)["mem:1m:max"] == 10.0
