"""Each shipped profile on what its exporter really sends: which signals, and their values
checked by hand against the input."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest

from models.signals import SignalRules, SignalStage
from streams.simulation import Simulation, SimulationConfig
from tests.exposition import NODE_EXPORTER, ScrapedSeries, as_batch, scrape

T0 = 1_700_000_000_000
RULES = SignalRules.shipped()


def _signals(
    scrapes: list[list[ScrapedSeries]], interval_ms: int = 5_000
) -> dict[str, tuple[float, float]]:
    """Each scrape through a fresh entity's stage; the last scrape's signals, as
    ``{name: (value, capacity)}``."""
    stage = SignalStage(RULES)
    for k, series in enumerate(scrapes):
        stage.observe(T0 + k * interval_ms, *as_batch(series))
    (signals,) = stage.close().signals
    assert signals.errors == []
    return {
        n: (v, c)
        for n, v, c in zip(
            signals.names, signals.values.tolist(), signals.capacities.tolist(), strict=True
        )
    }


def _text(text: str) -> list[ScrapedSeries]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scrape.prom"
        path.write_text(text)
        return scrape(path)


def _value(series: list[ScrapedSeries], name: str, **labels: str) -> float:
    (found,) = [s.value for s in series if s.labels == {"__name__": name, **labels}]
    return found


# -- node_exporter: a real scrape ------------------------------------------------------------

FIRST, SECOND = scrape(NODE_EXPORTER[0]), scrape(NODE_EXPORTER[1])
NODE_SIGNALS = {
    "cpu_used_fraction",
    "cpu_iowait_fraction",
    "cpu_steal_fraction",
    "load1_per_cpu",
    "memory_used_fraction",
    'filesystem_used_fraction{mountpoint="/"}',
    'filesystem_inodes_used_fraction{mountpoint="/"}',
    'disk_io_busy_fraction{device="vda"}',
    'network_receive_bytes_per_second{device="eth0"}',
    'network_transmit_bytes_per_second{device="eth0"}',
    'network_errors_per_second{device="eth0"}',
    'network_drops_per_second{device="eth0"}',
    "file_descriptors_used_fraction",
    "conntrack_used_fraction",
    "node_pressure_cpu_waiting_seconds_total",
    "node_pressure_io_stalled_seconds_total",
    "node_pressure_io_waiting_seconds_total",
    "node_pressure_memory_stalled_seconds_total",
    "node_pressure_memory_waiting_seconds_total",
    "node_procs_blocked",
    "node_procs_running",
    "process_fds_used_fraction",  # the exporter's own, from the generic profile
}
CAPACITY_BOUND = {
    "memory_used_fraction",
    'filesystem_used_fraction{mountpoint="/"}',
    'filesystem_inodes_used_fraction{mountpoint="/"}',
    "file_descriptors_used_fraction",
    "conntrack_used_fraction",
    "process_fds_used_fraction",
}


def test_a_node_exporter_scrape_becomes_a_few_dozen_signals() -> None:
    assert len(SECOND) == 507
    signals = _signals([FIRST, SECOND])
    assert set(signals) == NODE_SIGNALS
    assert {n for n, (_, capacity) in signals.items() if capacity == 1.0} == CAPACITY_BOUND
    assert all(math.isnan(c) for n, (_, c) in signals.items() if n not in CAPACITY_BOUND)


def test_node_exporter_signals_are_computed_as_by_hand() -> None:
    signals = _signals([FIRST, SECOND])
    available = _value(SECOND, "node_memory_MemAvailable_bytes")
    total = _value(SECOND, "node_memory_MemTotal_bytes")
    assert signals["memory_used_fraction"][0] == pytest.approx(1 - available / total)
    root = {"device": "/dev/vda", "fstype": "ext4", "mountpoint": "/"}
    free = _value(SECOND, "node_filesystem_avail_bytes", **root)
    size = _value(SECOND, "node_filesystem_size_bytes", **root)
    used, capacity = signals['filesystem_used_fraction{mountpoint="/"}']
    assert used == pytest.approx(1 - free / size) and capacity == 1.0

    def cpu_seconds(series: list[ScrapedSeries], mode: str | None) -> float:
        return sum(
            s.value
            for s in series
            if s.labels["__name__"] == "node_cpu_seconds_total" and mode in (None, s.labels["mode"])
        )

    idle = cpu_seconds(SECOND, "idle") - cpu_seconds(FIRST, "idle")
    busy = 1 - idle / (cpu_seconds(SECOND, None) - cpu_seconds(FIRST, None))
    assert signals["cpu_used_fraction"][0] == pytest.approx(busy)
    cpus = len(
        {s.labels["cpu"] for s in SECOND if s.labels["__name__"] == "node_cpu_seconds_total"}
    )
    assert signals["load1_per_cpu"][0] == pytest.approx(_value(SECOND, "node_load1") / cpus)
    io = _value(SECOND, "node_disk_io_time_seconds_total", device="vda") - _value(
        FIRST, "node_disk_io_time_seconds_total", device="vda"
    )
    assert signals['disk_io_busy_fraction{device="vda"}'][0] == pytest.approx(io / 5.0)


def test_a_first_scrape_has_no_rates_yet() -> None:
    signals = _signals([FIRST])
    assert "memory_used_fraction" in signals and "cpu_used_fraction" not in signals


FILESYSTEMS = """
# TYPE node_filesystem_avail_bytes gauge
node_filesystem_avail_bytes{device="/dev/sda1",fstype="ext4",mountpoint="/"} 25
node_filesystem_avail_bytes{device="/dev/sda2",fstype="vfat",mountpoint="/boot/efi"} 90
node_filesystem_avail_bytes{device="tmpfs",fstype="tmpfs",mountpoint="/run"} 10
node_filesystem_avail_bytes{device="tmpfs",fstype="tmpfs",mountpoint="/dev/shm"} 10
node_filesystem_avail_bytes{device="overlay",fstype="overlay",mountpoint="/var/lib/docker/o"} 1
node_filesystem_avail_bytes{device="/dev/sdb",fstype="ext4",mountpoint="/var/lib/kubelet/pods/f"} 1
# TYPE node_filesystem_size_bytes gauge
node_filesystem_size_bytes{device="/dev/sda1",fstype="ext4",mountpoint="/"} 100
node_filesystem_size_bytes{device="/dev/sda2",fstype="vfat",mountpoint="/boot/efi"} 100
node_filesystem_size_bytes{device="tmpfs",fstype="tmpfs",mountpoint="/run"} 10
node_filesystem_size_bytes{device="tmpfs",fstype="tmpfs",mountpoint="/dev/shm"} 10
node_filesystem_size_bytes{device="overlay",fstype="overlay",mountpoint="/var/lib/docker/o"} 10
node_filesystem_size_bytes{device="/dev/sdb",fstype="ext4",mountpoint="/var/lib/kubelet/pods/f"} 10
# TYPE node_filesystem_files gauge
node_filesystem_files{device="/dev/sda1",fstype="ext4",mountpoint="/"} 1000
node_filesystem_files{device="/dev/sda2",fstype="vfat",mountpoint="/boot/efi"} 0
# TYPE node_filesystem_files_free gauge
node_filesystem_files_free{device="/dev/sda1",fstype="ext4",mountpoint="/"} 900
node_filesystem_files_free{device="/dev/sda2",fstype="vfat",mountpoint="/boot/efi"} 0
"""


def test_filesystems_are_real_disks_by_mountpoint_and_inodes_where_counted() -> None:
    signals = _signals([_text(FILESYSTEMS)])
    assert signals == {
        'filesystem_used_fraction{mountpoint="/"}': (0.75, 1.0),
        'filesystem_used_fraction{mountpoint="/boot/efi"}': (pytest.approx(0.1), 1.0),
        'filesystem_inodes_used_fraction{mountpoint="/"}': (pytest.approx(0.1), 1.0),
    }


# -- cAdvisor (kubelet /metrics/cadvisor) ----------------------------------------------------

_POD = 'namespace="shop",pod="cart-7d9f"'
_CART = f'container="cart",id="/kubepods/burstable/pod1/c1",image="shop/cart:1.4",name="c1",{_POD}'
_PAUSE = f'container="POD",id="/kubepods/burstable/pod1/p1",image="pause:3.9",name="p1",{_POD}'
_POD_CGROUP = f'container="",id="/kubepods/burstable/pod1",image="",name="",{_POD}'
_BATCH = (
    'container="etl",id="/kubepods/besteffort/pod2/c2",image="etl:2",name="c2",'
    'namespace="jobs",pod="etl-1"'
)


def _cadvisor(cpu: float, etl_cpu: float, periods: float, throttled: float, memory: float) -> str:
    return f"""
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{{cpu="total",{_CART}}} {cpu} 1700000000000
container_cpu_usage_seconds_total{{cpu="total",{_PAUSE}}} 0.01 1700000000000
container_cpu_usage_seconds_total{{cpu="total",{_POD_CGROUP}}} {cpu + 0.01} 1700000000000
container_cpu_usage_seconds_total{{cpu="total",{_BATCH}}} {etl_cpu} 1700000000000
# TYPE container_cpu_cfs_periods_total counter
container_cpu_cfs_periods_total{{{_CART}}} {periods} 1700000000000
# TYPE container_cpu_cfs_throttled_periods_total counter
container_cpu_cfs_throttled_periods_total{{{_CART}}} {throttled} 1700000000000
# TYPE container_spec_cpu_quota gauge
container_spec_cpu_quota{{{_CART}}} 50000
# TYPE container_spec_cpu_period gauge
container_spec_cpu_period{{{_CART}}} 100000
container_spec_cpu_period{{{_BATCH}}} 100000
# TYPE container_spec_memory_limit_bytes gauge
container_spec_memory_limit_bytes{{{_CART}}} 536870912
container_spec_memory_limit_bytes{{{_PAUSE}}} 0
container_spec_memory_limit_bytes{{{_BATCH}}} 0
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{{{_CART}}} {memory} 1700000000000
container_memory_working_set_bytes{{{_PAUSE}}} 300000 1700000000000
container_memory_working_set_bytes{{{_BATCH}}} 99999999 1700000000000
# TYPE container_network_receive_bytes_total counter
container_network_receive_bytes_total{{interface="eth0",{_POD_CGROUP}}} 5000 1700000000000
# TYPE machine_cpu_cores gauge
machine_cpu_cores 8
"""


def test_cadvisor_gives_container_cpu_and_memory_against_their_limits() -> None:
    # In 10 s, the cart container used 4 CPU-seconds (0.4 cores, 80% of its 0.5-core quota),
    # was throttled in 25 of 100 periods; etl used 1 (no limits).
    first = _text(_cadvisor(100.0, 50.0, 1000.0, 10.0, 268435456.0))
    second = _text(_cadvisor(104.0, 51.0, 1100.0, 35.0, 402653184.0))
    signals = _signals([first, second], interval_ms=10_000)
    cart = 'container="cart",namespace="shop",pod="cart-7d9f"'
    etl = 'container="etl",namespace="jobs",pod="etl-1"'
    assert signals == {
        f"container_cpu_cores{{{cart}}}": (
            pytest.approx(0.4),
            pytest.approx(math.nan, nan_ok=True),
        ),
        f"container_cpu_cores{{{etl}}}": (pytest.approx(0.1), pytest.approx(math.nan, nan_ok=True)),
        f"container_cpu_limit_used_fraction{{{cart}}}": (
            pytest.approx(0.8),
            pytest.approx(math.nan, nan_ok=True),
        ),
        f"container_cpu_throttled_fraction{{{cart}}}": (
            pytest.approx(0.25),
            pytest.approx(math.nan, nan_ok=True),
        ),
        f"container_memory_limit_used_fraction{{{cart}}}": (0.75, 1.0),
    }


# -- RED: a service's HTTP metrics -----------------------------------------------------------


def _service(ok: float, errors: float, buckets: list[float], seconds: float) -> str:
    bounds = ["0.05", "0.1", "0.25", "0.5", "1", "+Inf"]
    lines = "\n".join(
        f'http_request_duration_seconds_bucket{{handler="/api",le="{b}"}} {c}'
        for b, c in zip(bounds, buckets, strict=True)
    )
    return f"""
# TYPE http_requests_total counter
http_requests_total{{code="200",handler="/api",method="get"}} {ok}
http_requests_total{{code="500",handler="/api",method="get"}} {errors}
http_requests_total{{code="200",handler="/health",method="get"}} 10
# TYPE http_request_duration_seconds histogram
{lines}
http_request_duration_seconds_sum{{handler="/api"}} {seconds}
http_request_duration_seconds_count{{handler="/api"}} {buckets[-1]}
# TYPE go_goroutines gauge
go_goroutines 42
# TYPE process_open_fds gauge
process_open_fds 900
# TYPE process_max_fds gauge
process_max_fds 1024
# TYPE orders_in_queue gauge
orders_in_queue 17
"""


def test_red_gives_rate_errors_and_latency_of_the_whole_service() -> None:
    # In 10 s: 95 good and 5 failed requests; 100 durations: 20 under 50 ms, 40 in (50,
    # 100], 30 in (100, 250], 8 in (250, 500], 2 in (0.5, 1]; 12 s in all.
    first = _text(_service(1000.0, 50.0, [200, 600, 900, 980, 1000, 1000], 130.0))
    second = _text(_service(1095.0, 55.0, [220, 660, 990, 1078, 1100, 1100], 142.0))
    signals = {n: v for n, (v, _) in _signals([first, second], interval_ms=10_000).items()}
    assert signals == {
        "request_rate": pytest.approx(10.0),
        "error_ratio": pytest.approx(0.05),
        # p50: rank 50 of 100, in (0.05, 0.1] holding 40 from 20: 0.05 + 0.05 * 30/40.
        "request_duration_p50_seconds": pytest.approx(0.0875),
        # p95: rank 95, in (0.25, 0.5] holding 8 from 90: 0.25 + 0.25 * 5/8.
        "request_duration_p95_seconds": pytest.approx(0.40625),
        # p99: rank 99, in (0.5, 1] holding 2 from 98: 0.5 + 0.5 * 1/2.
        "request_duration_p99_seconds": pytest.approx(0.75),
        "request_duration_mean_seconds": pytest.approx(0.12),
        # Not HTTP: the generic profile's, for the same service.
        "process_fds_used_fraction": pytest.approx(900 / 1024),
        "orders_in_queue": 17.0,
    }


def test_a_service_with_no_failures_has_an_error_ratio_of_zero() -> None:
    text = '# TYPE http_requests_total counter\nhttp_requests_total{{code="200"}} {n}\n'
    signals = _signals([_text(text.format(n=10)), _text(text.format(n=30))])
    assert signals["error_ratio"][0] == 0.0
    assert signals["request_rate"][0] == pytest.approx(4.0)


# -- the simulator and anything else ---------------------------------------------------------


def test_the_simulator_keeps_its_metrics_with_memory_and_disk_capacity_bound() -> None:
    _, _, record = next(Simulation(SimulationConfig(hosts=1, agents=0)).events(60))
    series = [
        ScrapedSeries({"__name__": n}, v, n, "gauge")
        for n, v in zip(record["names"], record["values"], strict=True)
    ]
    signals = _signals([series])
    assert list(signals) == record["names"]
    assert {n for n, (_, c) in signals.items() if c == 100.0} == {
        "memory_percent",
        "disk_used_percent",
    }
    assert [v for v, _ in signals.values()] == record["values"]


def test_any_other_exporter_keeps_its_own_series_without_runtime_internals() -> None:
    text = """
# TYPE jobs_processed_total counter
jobs_processed_total{{queue="mail"}} {jobs}
# TYPE job_seconds histogram
job_seconds_bucket{{le="1"}} {fast}
job_seconds_bucket{{le="+Inf"}} {jobs}
job_seconds_sum {total}
job_seconds_count {jobs}
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{{quantile="0.5"}} 0.001
go_gc_duration_seconds_sum 1
go_gc_duration_seconds_count 10
# TYPE build_info gauge
build_info{{version="1.2"}} 1
# TYPE up gauge
up 1
# TYPE queue_depth gauge
queue_depth 4
"""
    first = _text(text.format(jobs=100, fast=50, total=80))
    second = _text(text.format(jobs=120, fast=60, total=100))
    signals = {n: v for n, (v, _) in _signals([first, second], interval_ms=10_000).items()}
    assert signals == {
        'jobs_processed_total{queue="mail"}': 2.0,
        'job_seconds{quantile="0.5"}': pytest.approx(1.0),  # 10 of 20 under 1 s: rank 10
        'job_seconds{quantile="0.95"}': pytest.approx(1.0),  # in +Inf: the highest bound
        'job_seconds{quantile="0.99"}': pytest.approx(1.0),
        "job_seconds_mean": pytest.approx(1.0),
        "queue_depth": 4.0,
    }
