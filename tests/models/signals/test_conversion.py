"""The conversion stage: counters to rates with resets, histograms to quantiles and means,
staleness, limits, and a checkpoint that resumes where it stopped."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.signals import MetricKind
from models.signals.conversion import SeriesTable

T0 = 1_700_000_000_000
U = MetricKind.UNKNOWN


def _observe(
    table: SeriesTable, t_ms: int, samples: dict[str, float], kind: MetricKind = U
) -> None:
    table.observe(t_ms, list(samples), np.array(list(samples.values())), [kind] * len(samples))


def _values(table: SeriesTable, t_ms: int) -> dict[str, float]:
    scrape = table.scrape(t_ms)
    return {key: s.value for key, s in zip(scrape.keys, scrape.samples, strict=True)}


def test_a_counter_is_its_per_second_rate_and_a_decrease_is_a_reset() -> None:
    table = SeriesTable()
    _observe(table, T0, {"requests_total": 100.0, "temperature": 20.0})
    assert _values(table, T0) == {"temperature": 20.0}  # no rate from one sample
    _observe(table, T0 + 10_000, {"requests_total": 150.0, "temperature": 21.0})
    assert _values(table, T0 + 10_000) == {"requests_total": 5.0, "temperature": 21.0}
    # The process restarted: 150 -> 30 means 30 new requests since the reset, not -120.
    _observe(table, T0 + 20_000, {"requests_total": 30.0})
    assert _values(table, T0 + 20_000) == {"requests_total": 3.0, "temperature": 21.0}


def test_the_senders_type_wins_over_the_name() -> None:
    table = SeriesTable()
    for k, value in enumerate([7.0, 5.0]):
        _observe(table, T0 + k * 10_000, {"jobs_queued_total": value}, MetricKind.GAUGE)
        _observe(table, T0 + k * 10_000, {"pg_connections_count": value}, MetricKind.GAUGE)
        _observe(table, T0 + k * 10_000, {"restarts": 10.0 * (k + 1)}, MetricKind.COUNTER)
    assert _values(table, T0 + 10_000) == {
        "jobs_queued_total": 5.0,
        "pg_connections_count": 5.0,
        "restarts": 1.0,
    }


def test_a_gap_longer_than_the_lookback_gives_no_rate() -> None:
    table = SeriesTable(lookback_ms=60_000)
    _observe(table, T0, {"requests_total": 100.0})
    _observe(table, T0 + 120_000, {"requests_total": 160.0})
    assert _values(table, T0 + 120_000) == {}
    _observe(table, T0 + 130_000, {"requests_total": 170.0})
    assert _values(table, T0 + 130_000) == {"requests_total": 1.0}


def _histogram(table: SeriesTable, t_ms: int, counts: list[float], total: float) -> None:
    bounds = ["0.1", "0.5", "1", "+Inf"]
    samples = {
        f'rpc_seconds_bucket{{le="{b}",path="/a"}}': c for b, c in zip(bounds, counts, strict=True)
    }
    samples |= {'rpc_seconds_sum{path="/a"}': total, 'rpc_seconds_count{path="/a"}': counts[-1]}
    _observe(table, t_ms, samples, MetricKind.HISTOGRAM)


def test_a_histogram_gives_quantiles_and_a_mean_from_its_bucket_deltas() -> None:
    table = SeriesTable()
    _histogram(table, T0, [100.0, 200.0, 300.0, 300.0], 120.0)
    # In 10 s: 10 observations under 0.1, 30 in (0.1, 0.5], 10 in (0.5, 1], none above;
    # they took 16 s in all.
    _histogram(table, T0 + 10_000, [110.0, 240.0, 350.0, 350.0], 136.0)
    values = _values(table, T0 + 10_000)
    # p50: rank 25 of 50, in (0.1, 0.5] which holds 30: 0.1 + 0.4 * 15/30 = 0.3.
    assert values['rpc_seconds{path="/a",quantile="0.5"}'] == pytest.approx(0.3)
    # p95: rank 47.5, in (0.5, 1] which holds 10: 0.5 + 0.5 * 7.5/10 = 0.875.
    assert values['rpc_seconds{path="/a",quantile="0.95"}'] == pytest.approx(0.875)
    assert values['rpc_seconds{path="/a",quantile="0.99"}'] == pytest.approx(0.975)
    assert values['rpc_seconds_mean{path="/a"}'] == pytest.approx(16.0 / 50)
    # The buckets themselves are rates too (the rules decide whether they are signals).
    assert values['rpc_seconds_bucket{le="0.1",path="/a"}'] == pytest.approx(1.0)


def test_a_quiet_histogram_has_no_quantile_and_a_summary_keeps_its_own() -> None:
    table = SeriesTable()
    for k in range(2):
        _histogram(table, T0 + k * 10_000, [100.0, 200.0, 300.0, 300.0], 120.0)
        summary = {'gc_seconds{quantile="0.5"}': 0.002, "gc_seconds_sum": 3.0 + k}
        summary["gc_seconds_count"] = 100.0 + 4 * k
        _observe(table, T0 + k * 10_000, summary, MetricKind.SUMMARY)
    values = _values(table, T0 + 10_000)
    assert not [key for key in values if "quantile" in key and "rpc" in key]
    assert values['gc_seconds{quantile="0.5"}'] == 0.002
    assert values["gc_seconds_mean"] == pytest.approx(0.25)  # 1 s over 4 observations


def test_an_ended_series_is_left_out_and_starts_anew() -> None:
    table = SeriesTable()
    _observe(table, T0, {"requests_total": 100.0, "temperature": 20.0})
    _observe(table, T0 + 10_000, {"requests_total": 110.0, "temperature": 20.0})
    table.end(["requests_total"])
    assert _values(table, T0 + 10_000) == {"temperature": 20.0}
    _observe(table, T0 + 20_000, {"requests_total": 5.0})  # back, from a fresh process
    assert "requests_total" not in _values(table, T0 + 20_000)
    _observe(table, T0 + 30_000, {"requests_total": 15.0})
    assert _values(table, T0 + 30_000)["requests_total"] == 1.0


def test_a_series_not_seen_for_the_lookback_is_gone_not_held() -> None:
    table = SeriesTable(lookback_ms=60_000)
    _observe(table, T0, {"temperature": 20.0, "humidity": 0.4})
    assert _values(table, T0) == {"temperature": 20.0, "humidity": 0.4}
    _observe(table, T0 + 30_000, {"humidity": 0.5})
    scrape = table.scrape(T0 + 30_000)
    # Still within the lookback: its last value, but not new at this scrape.
    assert [(k, s.fresh) for k, s in zip(scrape.keys, scrape.samples, strict=True)] == [
        ("temperature", False),
        ("humidity", True),
    ]
    _observe(table, T0 + 70_000, {"humidity": 0.6})
    assert _values(table, T0 + 70_000) == {"humidity": 0.6}


def test_an_old_sample_is_refused_and_series_past_the_limit_wait_for_room() -> None:
    table = SeriesTable(max_series=2, lookback_ms=60_000)
    table.observe(T0, ["a", "b"], np.array([1.0, 2.0]), [U, U])
    observed = table.observe(T0 - 1, ["a", "c"], np.array([0.0, 3.0]), [U, U])
    assert (observed.out_of_order, observed.over_limit) == (["a"], ["c"])
    assert _values(table, T0) == {"a": 1.0, "b": 2.0}
    # Once a and b are unseen for the lookback, they are forgotten and c has room.
    observed = table.observe(T0 + 61_000, ["c"], np.array([3.0]), [U])
    assert observed.over_limit == [] and len(table) == 1


def test_a_checkpoint_resumes_the_rates_where_they_were() -> None:
    table = SeriesTable()
    _histogram(table, T0, [100.0, 200.0, 300.0, 300.0], 120.0)
    _observe(table, T0, {"requests_total": 100.0})
    header, saved = table.state()
    restored = SeriesTable.restore(header, saved.copy(), 10_000, 300_000)
    for t in (table, restored):
        _histogram(t, T0 + 10_000, [110.0, 240.0, 350.0, 350.0], 136.0)
        _observe(t, T0 + 10_000, {"requests_total": 150.0})
    assert _values(restored, T0 + 10_000) == _values(table, T0 + 10_000)
    assert math.isclose(_values(restored, T0 + 10_000)["requests_total"], 5.0)


def test_a_batch_converts_as_its_series_do_one_by_one() -> None:
    """Batches of gauges only take a shorter path than those with counters: the table must
    be the same, bit for bit, as when each series comes on its own."""
    batched, single = SeriesTable(), SeriesTable()
    rng = np.random.default_rng(2)
    batches = [["cpu", "mem"], ["cpu", "mem", "requests_total"], ["requests_total"], ["mem"]]
    for i in range(60):
        names = batches[i % len(batches)]
        t_ms = T0 + i * 5_000 - (12_000 if i % 9 == 4 else 0)  # some are not newer
        values = rng.uniform(0, 100, len(names)) + i * 10
        batched.observe(t_ms, names, values, [U] * len(names))
        for name, value in zip(names, values, strict=True):
            single.observe(t_ms, [name], np.array([value]), [U])
    assert batched.names == single.names
    np.testing.assert_array_equal(batched.table, single.table)


def test_the_usual_batch_converts_as_any_other() -> None:
    """A batch of the same consecutive gauges as the last one, all newer and all with values,
    is written in place and its scrape read from it: the same table and the same scrapes as
    the same samples in another order (which takes the general path), through NaN values,
    old samples, scrapes of some series or in two parts, ended series, a checkpoint and a
    kind that changes."""
    usual, shuffled = SeriesTable(), SeriesTable()
    names = ["cpu", "mem", "disk", "load"]
    rng = np.random.default_rng(5)

    def both(
        t_ms: int, values: np.ndarray, kinds: list[MetricKind], some: list[str] = names
    ) -> None:
        usual.observe(t_ms, some, values, kinds)
        shuffled.observe(t_ms, some[::-1], values[::-1].copy(), kinds[::-1])

    for i in range(80):
        t_ms = T0 + i * 10_000
        values = rng.uniform(0, 100, len(names))
        if i % 11 == 3:
            values[1] = np.nan
        if i % 13 == 5:
            t_ms -= 25_000  # older than the last scrape: refused
        if i % 17 == 7:  # a scrape in two parts
            usual.observe(t_ms, names[:2], values[:2], [U] * 2)
            shuffled.observe(t_ms, names[:2][::-1], values[:2][::-1].copy(), [U] * 2)
        if i % 19 == 9:
            for table in (usual, shuffled):
                table.end(["disk"])
        if i == 40:
            usual = SeriesTable.restore(*usual.state(), 10_000, 300_000)
        kinds = [MetricKind.COUNTER] + [U] * 3 if i >= 60 else [U] * 4
        if i % 7 == 2:  # some series only: the others are not fresh
            both(t_ms, values[:2], kinds[:2], names[:2])
        else:
            both(t_ms, values * (i + 1) if i >= 60 else values, kinds)
        if i % 5 != 4:  # else the next batch joins this scrape: two batches in one
            got = [table.fresh_values(t_ms) for table in (usual, shuffled)]
            order = [usual.index[n] for n in shuffled.names]
            np.testing.assert_array_equal(got[0][0][order], got[1][0])
            np.testing.assert_array_equal(got[0][1][order], got[1][1])
    order = [usual.index[n] for n in shuffled.names]
    np.testing.assert_array_equal(usual.table[: len(names)][order], shuffled.table[: len(names)])


def test_a_series_that_becomes_a_counter_is_one_in_the_usual_batch_too() -> None:
    """A batch past the series limit that says a series is a counter leaves the usual batch
    of that series (kept from before) reading it as a counter."""
    table = SeriesTable(max_series=2)
    _observe(table, T0, {"cpu": 1.0, "served": 100.0})
    _observe(table, T0 + 10_000, {"cpu": 1.0, "served": 100.0})
    observed = table.observe(
        T0 + 20_000, ["served", "disk"], np.array([150.0, 6.0]), [MetricKind.COUNTER, U]
    )
    assert observed.over_limit == ["disk"]
    _observe(table, T0 + 30_000, {"cpu": 1.0, "served": 200.0})
    assert _values(table, T0 + 30_000)["served"] == 5.0
