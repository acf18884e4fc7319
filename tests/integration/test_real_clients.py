"""Real clients end to end: this machine's node_exporter, scraped by a real Prometheus whose
remote_write is the README's, into ``foresight ingest`` and a worker; a real filesystem filling
up; a real Alertmanager receiving the alert through the Kafka Connect sink.

Each client runs on a free port with its own folder (:mod:`deploy.local.host_telemetry`). The
host is one entity named for this run, and its filesystems alone (a second node_exporter with
only the filesystem collector) another, so the fill's alert is the filesystem's whatever the
memory of this shared machine does meanwhile. The worker steps every 2 s and Prometheus scrapes
every second and sends within one; the models and alert rules are the defaults.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.alert_sinks import apply_sink, ensure_sink_topics, sink_config
from connectors.kafka_connect import ConnectError, connector_status, delete_connector
from deploy.local.host_telemetry import (
    Alertmanager,
    NodeExporter,
    Prometheus,
    answers,
    program,
    prometheus_config,
    scrape_config,
)
from deploy.local.processes import free_port
from deploy.local.stack import connect_secrets_dir
from schemas.predictions import prediction_rows
from streams import topics
from streams.settings import Settings
from streams.worker_process import ForesightProcess, WorkerProcess
from tests.integration.http_receiver import Receiver, serving
from tests.integration.kafka_io import TopicReader

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STEP_S = 2
FILESYSTEM_MB = 48
FILL_BYTES_PER_S = 320 * 1024
Records = list[tuple[str, bytes | None, Any]]


def readme_remote_write(ingest_url: str, key: str) -> list[dict[str, Any]]:
    """The README's remote_write block (section "Sending data"), its placeholders filled; the
    only addition is a quicker send, so a test step does not wait Prometheus' default 5 s."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Sending data") :]
    start = section.index("```yaml\n") + len("```yaml\n")
    snippet = section[start : section.index("```", start)]
    filled = snippet.replace("http://HOST:9201", ingest_url)
    filled = filled.replace("credentials: KEY", f"credentials: {json.dumps(key)}")
    remote_writes: list[dict[str, Any]] = yaml.safe_load(filled)["remote_write"]
    for target in remote_writes:
        target["queue_config"] = {"batch_send_deadline": "1s"}
    return remote_writes


def _create_key(env: dict[str, str]) -> str:
    """A key of the write role, made as the README says (``foresight keys create``)."""
    create = ["keys", "create", "prometheus", "--roles", "write", "--json"]
    made = subprocess.run(
        [sys.executable, "-m", "streams.cli", *create],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    key: str = json.loads(made.stdout)["key"]
    return key


async def _until(what: str, done: Any, timeout_s: float) -> None:
    """Poll ``done()`` until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s:.0f}s"
        await asyncio.sleep(0.5)


@dataclass
class Host:
    """This machine as one entity: its node_exporter, through Prometheus, into a worker."""

    entity: str
    prometheus: Prometheus
    worker: WorkerProcess
    disks: str  # the same machine's filesystems alone, so its memory cannot raise the alert


@pytest.fixture(scope="module")
async def host(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Host]:
    folder = tmp_path_factory.mktemp("real-clients")
    run = uuid.uuid4().hex[:8]
    keys = {
        "FORESIGHT_KEYS_FILE": str(folder / "keys.json"),
        "FORESIGHT_CREDENTIALS_FILE": str(folder / "credentials"),
    }
    key = _create_key(keys)
    ingest_port = free_port()
    ingest = ForesightProcess(
        ["ingest"], folder / "ingest.log", {**keys, "FORESIGHT_INGEST_PORT": str(ingest_port)}
    )
    worker = WorkerProcess(
        stack_settings, f"test-real-{run}", folder / "worker.log", FORESIGHT_STEP_S=str(STEP_S)
    )
    node = NodeExporter(program("node_exporter"), folder / "node_exporter")
    disks = NodeExporter(
        program("node_exporter"),
        folder / "node_exporter_disks",
        ["--collector.disable-defaults", "--collector.filesystem"],
    )
    started: list[Any] = [ingest.start(), worker.start(), node.start(), disks.start()]
    try:
        node.ready()
        disks.ready()
        await _until("ingest", lambda: answers(f"http://127.0.0.1:{ingest_port}/health"), 60)
        await worker.ready()
        # The README's relabelling names the entity by the instance's host part.
        entity, disks_entity = f"host-{run}", f"disks-{run}"
        config = prometheus_config(
            [
                scrape_config("node", f"127.0.0.1:{node.port}", f"{entity}:{node.port}", 1),
                scrape_config(
                    "disks", f"127.0.0.1:{disks.port}", f"{disks_entity}:{disks.port}", 1
                ),
            ],
            readme_remote_write(f"http://127.0.0.1:{ingest_port}", key),
        )
        prometheus = Prometheus(program("prometheus"), folder / "prometheus", config)
        started.append(prometheus.start())
        prometheus.ready()
        yield Host(entity, prometheus, worker, disks_entity)
    finally:
        for process in reversed(started):
            process.stop()


def _kinds(records: Records, entity: str) -> dict[str, set[str]]:
    """Per signal of ``entity``: the prediction kinds seen."""
    kinds: dict[str, set[str]] = {}
    for topic, _, record in records:
        if topic == topics.PREDICTIONS.name and record["entity"] == entity:
            for p in prediction_rows(record):
                kinds.setdefault(p["metric"], set()).add(p["kind"])
    return kinds


def _predictions(records: Records, entity: str, metric: str, kind: str) -> list[dict[str, Any]]:
    return [
        p
        for topic, _, record in records
        if topic == topics.PREDICTIONS.name and record["entity"] == entity
        for p in prediction_rows(record)
        if p["metric"] == metric and p["kind"] == kind
    ]


def _profile_expr(record: str) -> str:
    """The PromQL of signal ``record`` in the shipped node_exporter profile."""
    profile = yaml.safe_load(
        (ROOT / "models" / "signals" / "profiles" / "node_exporter.yaml").read_text()
    )
    (expr,) = [s["expr"] for s in profile["signals"] if s["record"] == record]
    return str(expr)


async def test_the_readme_recipe_gives_predictions_for_memory_each_filesystem_and_cpu(
    stack_settings: Settings, host: Host
) -> None:
    # The shipped profile's rule for filesystems is PromQL that the real Prometheus runs too
    # (only gauges in it): each mountpoint it finds must be a signal of Foresight's, valued alike.
    rule = _profile_expr("filesystem_used_fraction")
    filesystems: dict[str, float] = {}

    def prometheus_sees_filesystems() -> bool:
        filesystems.update(
            {r["metric"]["mountpoint"]: float(r["value"][1]) for r in host.prometheus.query(rule)}
        )
        return bool(filesystems)

    await _until("Prometheus' first scrape", prometheus_sees_filesystems, 60)
    wanted = {
        "memory_used_fraction": {"FAILURE_RISK", "ANOMALY"},
        "cpu_used_fraction": {"ANOMALY"},
        **{
            f'filesystem_used_fraction{{mountpoint="{m}"}}': {"FAILURE_RISK", "ANOMALY"}
            for m in filesystems
        },
    }

    missing: dict[str, set[str]] = {}

    def predicted(records: Records) -> bool:
        kinds = _kinds(records, host.entity)
        missing.clear()
        missing.update({m: w - kinds.get(m, set()) for m, w in wanted.items()})
        return not any(missing.values())

    async with TopicReader(stack_settings.kafka(), topics.PREDICTIONS.name) as r:
        try:
            seen = await r.until(predicted, timeout_s=120)
        except AssertionError as error:
            raise AssertionError(f"{error}; not predicted: {missing}") from None
    for mountpoint, used in filesystems.items():
        metric = f'filesystem_used_fraction{{mountpoint="{mountpoint}"}}'
        observed = _predictions(seen, host.entity, metric, "ANOMALY")[-1]["value"]
        assert observed == pytest.approx(used, abs=0.01), metric
    risk = _predictions(seen, host.entity, "memory_used_fraction", "FAILURE_RISK")[-1]
    assert risk["horizon_s"] == stack_settings.failure_horizon_s
    assert 0 <= risk["score"] <= 1


@contextmanager
def ext4(folder: Path, size_mb: int) -> Iterator[Path]:
    """A real ext4 filesystem of ``size_mb`` on a loop device, mounted in ``folder``, with no
    blocks reserved for root (so full is full for this test too)."""
    image, mountpoint = folder / "fs.img", folder / "fs"
    with image.open("wb") as out:
        out.truncate(size_mb << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(mountpoint)], capture_output=True, text=True
    )
    assert mounted.returncode == 0, f"cannot mount a loop device here: {mounted.stderr}"
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "--lazy", str(mountpoint)], check=True)


def fill(path: Path, bytes_per_s: float) -> float:
    """Write ``path`` at ``bytes_per_s`` until the filesystem is full; when it was (epoch s)."""
    chunk = b"\xa5" * (64 << 10)
    started = time.monotonic()
    written = 0
    with path.open("wb") as out:
        while True:
            try:
                out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                return time.time()
            written += len(chunk)
            ahead = written / bytes_per_s - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)  # pace the writer, not waiting on a condition


@pytest.mark.timeout(600)  # the filesystem takes two and a half minutes to fill
async def test_a_filling_filesystem_fires_in_alertmanager_before_it_is_full_then_resolves(
    stack_settings: Settings, host: Host, tmp_path: Path, unique: str
) -> None:
    with serving(Receiver(lambda path: 200)) as notifications:
        alertmanager = Alertmanager(
            program("alertmanager"), tmp_path / "alertmanager", notifications.url + "/notify"
        ).start()
        sink = sink_config(
            "alertmanager",
            alertmanager.alerts_endpoint,
            secrets_dir=connect_secrets_dir(Path(stack_settings.stack_dir)),
            name=f"test-alertmanager-{unique}",
        )
        # The sink reads the worker's alerts.alertmanager.json from now on.
        config = {**sink.config, "consumer.override.auto.offset.reset": "latest"}
        sink = dataclasses.replace(sink, config=config)
        try:
            alertmanager.ready()
            await ensure_sink_topics(stack_settings.kafka(), [sink], 1, {})
            apply_sink(stack_settings.kafka_connect_url, sink)

            def running() -> bool:
                try:
                    status = connector_status(stack_settings.kafka_connect_url, sink.name)
                except ConnectError:  # no status yet, just after the connector was made
                    return False
                return [t["state"] for t in status.get("tasks", [])] == ["RUNNING"]

            await _until("the Alertmanager connector running", running, 60)
            with ext4(tmp_path, FILESYSTEM_MB) as mountpoint:
                await _fill_and_free(stack_settings, host, alertmanager, notifications, mountpoint)
        finally:
            delete_connector(stack_settings.kafka_connect_url, sink.name)
            sink.secrets_file.unlink(missing_ok=True)
            alertmanager.stop()


def _mine(alerts: list[dict[str, Any]], entity: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"].get("entity") == entity]


async def _fill_and_free(
    settings: Settings,
    host: Host,
    alertmanager: Alertmanager,
    notifications: Receiver,
    mountpoint: Path,
) -> None:
    metric = f'filesystem_used_fraction{{mountpoint="{mountpoint}"}}'
    entity = host.disks
    watched = (topics.PREDICTIONS.name, topics.ALERTS.name)
    async with TopicReader(settings.kafka(), *watched) as reader:
        await reader.until(lambda rs: "FAILURE_RISK" in _kinds(rs, entity).get(metric, ()), 60)
        ballast = mountpoint / "ballast"
        full_s = await asyncio.to_thread(fill, ballast, FILL_BYTES_PER_S)

        def fired(records: Records) -> list[dict[str, Any]]:
            return [
                r
                for topic, _, r in records
                if topic == topics.ALERTS.name
                and r["entity"] == entity
                and r["rule"] == "failure_risk"
                and r["status"] == "FIRING"
            ]

        seen = await reader.until(lambda rs: bool(fired(rs)), timeout_s=60)
        alert = fired(seen)[0]
        lead_s = full_s - alert["starts_at"] / 1000
        print(f"\nfailure_risk fired {lead_s:.0f} s before {mountpoint} was full: {alert}")
        assert alert["labels"]["metric"] == metric
        assert lead_s > 0, "the alert came only once the filesystem was full"

        def shown() -> list[dict[str, Any]]:
            return _mine(alertmanager.alerts(), entity)

        await _until("Alertmanager showing the alert", shown, 60)
        (shown_alert,) = shown()
        assert shown_alert["status"]["state"] == "active"
        assert shown_alert["labels"]["alertname"] == "failure_risk"
        assert shown_alert["annotations"]["metric"] == metric

        ballast.unlink()
        await reader.until(
            lambda rs: any(
                topic == topics.ALERTS.name
                and r["alert_id"] == alert["alert_id"]
                and r["status"] == "RESOLVED"
                for topic, _, r in rs
            ),
            # The risk must fall below half its threshold over the entity's recent steps;
            # on a loaded machine the scrapes and steps that show it take over a minute.
            timeout_s=150,
        )
    await _until("Alertmanager resolving it", lambda: not shown(), 60)

    def notified(status: str) -> bool:
        return any(
            r.body["status"] == status and _mine(r.body["alerts"], entity)
            for r in notifications.requests
        )

    await _until("Alertmanager's resolved notification", lambda: notified("resolved"), 30)
    assert notified("firing")
