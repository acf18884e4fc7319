"""``foresight status`` parts that read a process's /metrics page, against a real page."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from deploy.local.processes import free_port
from streams.commands.status import not_modelled, process_urls, processes, serving_url
from streams.demo_run import DemoRun
from streams.settings import Settings


@pytest.fixture
def worker_metrics() -> Iterator[int]:
    """A /metrics page with the worker's dropped-signal counter and the ingest's dropped-sample
    counter, on a free port."""
    registry = CollectorRegistry()
    dropped = Counter(
        "foresight_signals_dropped_total", "x", ["reason", "profile", "rule"], registry=registry
    )
    dropped.labels("signal_limit", "node_exporter", "filesystem_used_fraction").inc(3)
    dropped.labels("series_limit", "", "").inc(2)
    dropped.labels("out_of_order", "", "")  # zero: not reported
    refused = Counter("foresight_ingest_samples_dropped_total", "x", ["reason"], registry=registry)
    refused.labels("not_a_number").inc(4)
    page = generate_latest(registry)

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_not_modelled_says_what_was_dropped_by_reason_profile_and_rule(
    worker_metrics: int,
) -> None:
    settings = Settings(bind_host="127.0.0.1", worker_port=worker_metrics, ingest_port=free_port())
    assert not_modelled(settings, processes(settings)) == {
        "worker": {
            "running": True,
            "dropped": {
                "series_limit": 2.0,
                "signal_limit/node_exporter/filesystem_used_fraction": 3.0,
            },
        },
        "ingest": {"running": False},
    }


def test_while_a_demo_runs_its_worker_and_ingest_are_the_ones_reported(
    worker_metrics: int, tmp_path: Path
) -> None:
    """The demo's worker has its own port and group, and its ingest its own port; status
    reads them from the demo's file while the demo's process lives, and the configured ones
    otherwise."""
    settings = Settings(
        bind_host="127.0.0.1", worker_port=free_port(), ingest_port=free_port(),
        stack_dir=str(tmp_path),
    )  # fmt: skip
    urls = process_urls(settings)
    for name in ("worker", "ingest"):  # no demo
        assert serving_url(processes(settings), name) == urls[name]
    DemoRun(os.getpid(), worker_metrics, "foresight-demo-7").write(tmp_path)
    urls = process_urls(settings)
    assert urls["demo worker"] == f"http://127.0.0.1:{worker_metrics}/metrics"
    assert "demo ingest" not in urls  # not started yet
    assert serving_url(processes(settings), "worker") == urls["demo worker"]
    assert not_modelled(settings, processes(settings))["worker"]["running"]
    assert not not_modelled(settings, processes(settings))["ingest"]["running"]
    DemoRun(os.getpid(), worker_metrics, "foresight-demo-7", worker_metrics).write(tmp_path)
    assert serving_url(processes(settings), "ingest") == process_urls(settings)["demo ingest"]
    ingest = not_modelled(settings, processes(settings))["ingest"]
    assert ingest == {"running": True, "dropped": {"not_a_number": 4.0}}
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    DemoRun(int(gone.stdout), worker_metrics, "foresight-demo-8").write(tmp_path)
    assert "demo worker" not in process_urls(settings)  # a killed demo's file is ignored
    (tmp_path / "demo-run.json").write_text("{not json")
    assert DemoRun.read(tmp_path) is None
