"""Run Foresight commands in their own processes: a worker (knowing when it reads every
partition), the quality processor, the retrain controller, the ClickHouse sink, the gateway.

The demo, the benchmarks and the integration tests start them this way.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from connectors.kafka_clients import KafkaConfig
from connectors.kafka_producer import RecordProducer
from deploy.local.processes import ChildProcess, free_port
from schemas.codec import PROBE_HEADER
from streams import topics
from streams.access import local_url, open_local
from streams.settings import Settings


class ForesightProcess(ChildProcess):
    """``foresight <command>`` in its own process group, logging to ``log``."""

    def __init__(self, command: list[str], log: Path, env: dict[str, str]) -> None:
        super().__init__([sys.executable, "-m", "streams.cli", *command], log, env)


class ServingProcess(ForesightProcess):
    """A Foresight process serving /health and /metrics on ``port`` of this machine."""

    def __init__(
        self, command: list[str], log: Path, env: dict[str, str], settings: Settings, port: int
    ) -> None:
        self.settings = settings
        self.port = port
        super().__init__(command, log, env)

    def health(self) -> dict[str, Any] | None:
        """The process's /health report (https with the settings' TLS); ``None`` until it
        answers."""
        url = local_url(self.settings, self.port, "/health")
        try:
            with open_local(self.settings, url, 2) as response:
                loaded: dict[str, Any] = json.loads(response.read())
                return loaded
        except urllib.error.HTTPError as error:
            loaded = json.loads(error.read())
            return loaded
        except OSError:
            return None

    def metric(self, name: str) -> float:
        """The sum of the samples of /metrics whose line starts with ``name`` (a name, or a
        name and its first labels: ``foresight_events_in_total{topic="t"``)."""
        return self.metrics(name)[0]

    def metrics(self, *names: str) -> list[float]:
        """:meth:`metric` of each of ``names``, from one read of /metrics (each read makes
        the process render every metric it has)."""
        url = local_url(self.settings, self.port, "/metrics")
        # A long vectorised pass holds the worker's event loop, and its web server with it.
        with open_local(self.settings, url, 30) as response:
            lines = [line for line in response.read().decode().splitlines() if line[:1] != "#"]
        return [
            sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name))
            for name in names
        ]


class QualityProcess(ServingProcess):
    """``foresight quality run`` on ``topic``, in the group ``<worker_id>-quality``, on a
    port of its own."""

    def __init__(self, settings: Settings, worker_id: str, topic: str, log: Path) -> None:
        port = free_port()
        env = {"FORESIGHT_WORKER_ID": worker_id, "FORESIGHT_QUALITY_PORT": str(port)}
        super().__init__(["quality", "run", "--topic", topic], log, env, settings, port)


class RetrainProcess(ServingProcess):
    """``foresight retrain --json`` following ``topic``, on a port of its own; ``env`` gives
    it what the controller needs (its operate key, its registry)."""

    def __init__(self, settings: Settings, topic: str, log: Path, **env: str) -> None:
        port = free_port()
        env = {"FORESIGHT_RETRAIN_PORT": str(port), **env}
        super().__init__(["retrain", "--json", "--topic", topic], log, env, settings, port)


class WorkerProcess(ServingProcess):
    """A worker with its own consumer group and web port, reading from the topics' end."""

    def __init__(self, settings: Settings, worker_id: str, log: Path, **env: str) -> None:
        self.group = worker_id
        port = free_port()
        env = {
            "FORESIGHT_WORKER_ID": worker_id,
            "FORESIGHT_WORKER_OFFSET_RESET": "latest",
            "FORESIGHT_WORKER_DATA_DIR": str(log.parent / "worker-data"),
            "FORESIGHT_WORKER_PORT": str(port),
            **env,
        }
        super().__init__(["worker"], log, env, settings, port)

    async def ready(self, timeout_s: float = 90) -> None:
        """Wait until the worker reads every partition of ``telemetry.metrics``."""
        await group_ready([self], timeout_s)

    def cpu_seconds(self) -> float | None:
        """CPU time the worker process has used (user and system), from ``/proc``; None
        where there is no ``/proc``."""
        assert self.process is not None
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def committed_offsets(kafka: KafkaConfig, group: str, topic: str) -> dict[int, int]:
    """The offsets ``group`` has committed on ``topic``'s partitions (those it has)."""
    admin = kafka.admin()
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def group_ready(workers: list[WorkerProcess], timeout_s: float = 90) -> None:
    """Wait until the workers of one group have settled, between them read every partition
    of ``telemetry.metrics``, and committed an offset on each.

    A new group reading from ``latest`` fixes its start offsets on its first fetch, so this
    sends a probe to each partition until the group has consumed one from each: records
    produced after that are certain to be read. A probe carries the header
    :data:`~schemas.codec.PROBE_HEADER`, which a worker counts consumed and leaves at that (no
    dead letter). Until the group commits an offset on a partition, a worker killed there
    leaves the next owner only the reset policy to go by, the topic's end, past the records
    the killed one had not finished; so this waits for the commits too (a second apart).

    The partitions are those the topic has, which need not be ``topic_partitions`` (a topic a
    producer's first record auto-created, or an operator made with a count of their own).
    Settled means no worker is rebalancing, each reads its own partitions (none twice) and each
    has some, while there are enough to go round: the first worker up reads them all until the
    others join, and a group that still has to rebalance is not ready.
    """
    settings = workers[0].settings
    deadline = time.monotonic() + timeout_s
    producer = RecordProducer(settings.kafka())
    await producer.start()
    try:
        partitions = await producer.partitions(topics.METRICS.name)
        done: dict[int, int] = {}
        while True:
            reports = []
            for worker in workers:
                if worker.process is None or worker.process.poll() is not None:
                    raise AssertionError(f"worker exited; see {worker.log}")
                reports.append(worker.health() or {})
            owned = [
                {key for key, offset in report.get("consumed", {}).items()
                 if key.startswith(topics.METRICS.name) and offset >= 0}
                for report in reports
            ]  # fmt: skip
            consumed = set().union(*owned)
            settled = (
                all(report.get("status") in ("ok", "degraded") for report in reports)
                and sum(map(len, owned)) == len(consumed)
                and (all(owned) or len(workers) > len(partitions))
            )
            if settled and len(consumed) >= len(partitions):
                group = workers[0].group
                done = await committed_offsets(settings.kafka(), group, topics.METRICS.name)
                if set(partitions) <= set(done):
                    return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"workers not ready in {timeout_s}s: each read {[sorted(o) for o in owned]}"
                    f", the group committed on {sorted(done)} of {sorted(partitions)}"
                )
            for partition in partitions:
                await producer.send_to_partition(
                    topics.METRICS.name, partition, b"probe", b"", [(PROBE_HEADER, b"1")]
                )
            await producer.flush()
            await asyncio.sleep(0.5)
    finally:
        await producer.stop()
