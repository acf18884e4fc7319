"""Faults across every process, each while a stream flows: a poison record on every input
topic, Redis stopped, ClickHouse refusing inserts, the Kafka broker stopped, and the Kafka
Connect worker restarted. Every process keeps running (none is restarted); after each fault,
ClickHouse holds every sample and every output once, each alert episode fires once and
resolves once, and each process's /health said what was wrong while it was wrong.

Stopping Kafka, Redis or Connect must not touch the session's stack, which other tests use:
the module brings up a stack of its own on free ports in a temporary folder (Kafka, Connect,
Redis), runs a worker, the ClickHouse sink, the gateway and ingest on it, and stops exactly
those by their pids at the end. The faults run one after another on that one stack.

Outages last 20 s: longer than the consumers' session timeout (10 s) and than ten rounds of
each process's dependency watch, which is what a longer outage would add to; and short
enough for the module to stay within a few minutes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from connectors.clickhouse_sink import SinkUnavailableError, ask_sink
from connectors.http.keys import ROLES, KeysFile
from connectors.kafka_admin import ensure_topics
from connectors.kafka_clients import KafkaConfig
from deploy.local.processes import free_port
from deploy.local.stack import LocalStack
from schemas.codec import Codec
from streams import topics
from streams.commands.sink import DEFAULT_GROUP
from streams.commands.stack import local_stack, topic_requests
from streams.commands.tail import topic_partitions
from streams.settings import Settings, load_settings
from streams.worker_process import ForesightProcess, WorkerProcess, committed_offsets
from tests.integration.http_receiver import Receiver, serving
from tests.integration.kafka_io import TopicReader, broker_port, until
from tests.schemas.samples import SAMPLES

pytestmark = pytest.mark.integration

KEY = "faults-test-key"  # every role, in the private stack's own keys file
STEP_MS = 10_000
STEPS = 110
OUTAGE_S = 20.0
SERVICES = ("worker", "sink", "gateway", "ingest")


def _get(port: int, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"X-API-Key": KEY})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError as error:
        return 0, {"error": str(error)}


def _post_events(port: int, events: list[dict[str, Any]]) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/agent-events",
        data=json.dumps(events).encode(),
        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@dataclass
class Pipeline:
    """The private stack and the four processes on it."""

    settings: Settings
    stack: LocalStack
    env: dict[str, str]
    folder: Path
    ports: dict[str, int]
    processes: dict[str, ForesightProcess]

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        return ask_sink(self.ports["sql"], statement, KEY).rows

    def health(self, service: str) -> tuple[int, dict[str, Any]]:
        code, body = _get(self.ports[service], "/health")
        return code, body if isinstance(body, dict) else {}

    def down(self, service: str) -> dict[str, Any]:
        """What ``service``'s /health says is down (fails if /health is not 200)."""
        code, body = self.health(service)
        assert code == 200, f"{service} /health answered {code}: {body}"
        down: dict[str, Any] = body.get("down", {})
        return down

    def all_alive(self) -> None:
        for name, process in self.processes.items():
            assert process.alive(), f"{name} exited; see {process.log}"

    def healthy(self, service: str) -> bool:
        code, body = self.health(service)
        return code == 200 and not body.get("down")

    async def stop(self, service: str) -> float:
        """Stop a service of the private stack; returns when it was stopped."""
        await asyncio.to_thread(self.stack.stop, service)
        return time.monotonic()

    async def up(self) -> float:
        """Bring the stopped service back; returns when it answers again."""
        await asyncio.to_thread(self.stack.up, 180)
        return time.monotonic()


@pytest.fixture(scope="module")
async def pipeline(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pipeline]:
    folder = tmp_path_factory.mktemp("faults")
    stack_dir = folder / "stack"
    ports = {name: free_port() for name in (*SERVICES, "sql")}
    settings = load_settings(environ={}).replace(
        kafka_bootstrap_servers=f"127.0.0.1:{broker_port()}",
        kafka_connect_url=f"http://127.0.0.1:{free_port()}",
        schema_registry_port=free_port(),
        feature_store_url=f"redis://127.0.0.1:{free_port()}/0",
        stack_dir=str(stack_dir),
        chdb_path=str(stack_dir / "chdb"),
        topic_partitions=3,
        sink_sql_port=ports["sql"],
        keys_file=str(folder / "keys.json"),
        credentials_file=str(folder / "credentials"),
    )
    KeysFile(settings.keys_file).create("faults-test", ROLES, key=KEY)
    (folder / "credentials").write_text(KEY)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "KAFKA_CONNECT_URL": settings.kafka_connect_url,
        "FEATURE_STORE_URL": settings.feature_store_url,
        "FORESIGHT_STACK_DIR": settings.stack_dir,
        "FORESIGHT_CHDB_PATH": settings.chdb_path,
        "FORESIGHT_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "MODEL_REGISTRY_URL": f"file://{folder / 'models'}",
        "FORESIGHT_KEYS_FILE": settings.keys_file,
        "FORESIGHT_CREDENTIALS_FILE": settings.credentials_file,
        "FORESIGHT_API_KEY": KEY,
        "FORESIGHT_PII_KEY_FILE": str(folder / "pii.key"),
        "FORESIGHT_SINK_METRICS_PORT": str(ports["sink"]),
        "FORESIGHT_SINK_SQL_PORT": str(ports["sql"]),
        "FORESIGHT_GATEWAY_PORT": str(ports["gateway"]),
        "FORESIGHT_INGEST_PORT": str(ports["ingest"]),
        # The feeds replay the past fast: steps close on data, not on a pause of the stream.
        "FORESIGHT_IDLE_TIMEOUT_S": "600",
    }
    stack = local_stack(settings, quiet=True)
    started: list[ForesightProcess] = []
    try:
        began = time.monotonic()
        await asyncio.to_thread(stack.up, 240)
        await ensure_topics(settings.kafka(), topic_requests(settings))
        worker = WorkerProcess(settings, f"faults-{uuid.uuid4().hex[:6]}", folder / "worker.log")
        worker.env.update({**env, "FORESIGHT_WORKER_PORT": str(ports["worker"])})
        worker.port = ports["worker"]
        processes: dict[str, ForesightProcess] = {
            "worker": worker,
            "sink": ForesightProcess(["sink", "clickhouse"], folder / "sink.log", env),
            "gateway": ForesightProcess(["gateway"], folder / "gateway.log", env),
            "ingest": ForesightProcess(["ingest"], folder / "ingest.log", env),
        }
        started = [p.start() for p in processes.values()]
        pipeline = Pipeline(settings, stack, env, folder, ports, processes)
        await worker.ready(timeout_s=180)
        await until("every process healthy", lambda: all(map(pipeline.healthy, SERVICES)), 120)
        print(f"\nprivate stack and processes ready in {time.monotonic() - began:.0f} s")
        yield pipeline
        pipeline.all_alive()
    finally:
        for process in started:
            process.stop()
        stack.down()


class Feed:
    """The stream of a fault: ``entities`` hosts, one MetricBatch each per 10 s step, from an
    idempotent producer (its own retries never write a batch twice, so ClickHouse must hold
    each sample exactly once). Memory leaks on the first ``leaking`` hosts from step 20 and
    falls back at step 70: one failure-risk episode each, firing, then resolving."""

    def __init__(self, pipeline: Pipeline, entities: int = 6, leaking: int = 2) -> None:
        run = uuid.uuid4().hex[:6]
        self.pipeline = pipeline
        self.entities = [f"fault-{run}-{i:02d}" for i in range(entities)]
        self.leaking = set(self.entities[:leaking])
        self.start_ms = int(time.time() * 1000) - STEPS * STEP_MS - 600_000
        self.sent = 0
        self.codec = Codec()
        self.producer = pipeline.settings.kafka().producer(
            enable_idempotence=True,
            linger_ms=5,
        )

    def batch(self, entity: str, k: int) -> dict[str, Any]:
        leak = entity in self.leaking and k < 70
        memory = 40.0 + (min(60.0, max(0.0, (k - 20) * 1.5)) if leak else 0.0)
        return {
            "entity": entity,
            "event_time": self.start_ms + k * STEP_MS,
            "labels": {"test": "faults"},
            "names": ["cpu_percent", "memory_percent"],
            "values": [20.0 + (k % 7), memory],
            "source": "test",
        }

    async def __aenter__(self) -> Feed:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def steps(self, until_step: int, pace_s: float) -> None:
        """Send the steps up to ``until_step`` (excluded), each acknowledged before the next."""
        for k in range(self.sent, until_step):
            pending = [
                await self.producer.send(
                    topics.METRICS.name,
                    self.codec.encode("metric_batch", self.batch(e, k)),
                    key=e.encode(),
                )
                for e in self.entities
            ]
            await asyncio.gather(*pending)
            self.sent = k + 1
            await asyncio.sleep(pace_s)

    @property
    def among(self) -> str:
        return ", ".join(f"'{e}'" for e in self.entities)

    def counts(self) -> dict[str, int]:
        """What ClickHouse holds of this feed: rows, and distinct identities."""
        ((samples, distinct_samples),) = self.pipeline.sql(
            "SELECT count(), uniqExact(entity, ts, metric) FROM metric_samples "
            f"WHERE entity IN ({self.among})"
        )
        ((features, distinct_features),) = self.pipeline.sql(
            f"SELECT count(), uniqExact(entity, ts) FROM features WHERE entity IN ({self.among})"
        )
        ((predictions, distinct_predictions, steps),) = self.pipeline.sql(
            "SELECT count(), uniqExact(prediction_id, metric, kind, model, model_version, "
            f"horizon_s), uniqExact(entity, ts) FROM predictions WHERE entity IN ({self.among})"
        )
        return {
            "samples": samples,
            "distinct_samples": distinct_samples,
            "features": features,
            "distinct_features": distinct_features,
            "predictions": predictions,
            "distinct_predictions": distinct_predictions,
            "predicted_steps": steps,
        }

    def episodes(self) -> dict[str, list[str]]:
        """Per alerting entity, the statuses of its alert rows in ClickHouse, in order."""
        rows = self.pipeline.sql(
            f"SELECT entity, rule, status FROM alerts WHERE entity IN ({self.among}) "
            "ORDER BY entity, ts, status"
        )
        found: dict[str, list[str]] = {}
        for entity, rule, status in rows:
            found.setdefault(f"{rule}/{entity}", []).append(status)
        return found

    async def all_stored(self, timeout_s: float = 120) -> dict[str, int]:
        """:meth:`stored`, and each leak's episode fired and resolved once."""
        counts = await self.stored(timeout_s)
        expected = {f"failure_risk/{e}": ["FIRING", "RESOLVED"] for e in self.leaking}
        seen: dict[str, list[str]] = {}

        def resolved() -> bool:
            seen.update(self.episodes())
            return all(len(statuses) >= 2 for statuses in seen.values()) and set(seen) >= set(
                expected
            )

        await until(f"every episode resolved in ClickHouse (last seen {seen})", resolved, 60)
        assert self.episodes() == expected
        return counts

    async def stored(self, timeout_s: float = 120) -> dict[str, int]:
        """Wait until ClickHouse holds every sample sent so far and a prediction for every
        closed step, then check that nothing is there twice; returns the counts."""
        samples = self.sent * len(self.entities) * 2
        closed = (self.sent - 1) * len(self.entities)  # a step closes when the next arrives
        counts: dict[str, int] = {}

        def stored() -> bool:
            try:
                counts.update(self.counts())
            except SinkUnavailableError:
                return False
            # Each topic reaches the sink on its own: wait for every one, not the first.
            return (
                counts["samples"] >= samples
                and counts["predicted_steps"] >= closed
                and counts["features"] >= closed
            )

        await until(f"the feed stored in ClickHouse (last seen {counts})", stored, timeout_s)
        assert counts["samples"] == counts["distinct_samples"] == samples, counts
        assert counts["features"] == counts["distinct_features"] >= closed, counts
        assert counts["predictions"] == counts["distinct_predictions"], counts
        assert counts["predicted_steps"] == counts["distinct_features"], counts
        return counts


class AlertWatcher:
    """A live-feed client of the gateway, subscribed to a feed's alerts for the whole fault."""

    def __init__(self, pipeline: Pipeline, feed: Feed) -> None:
        self.url = f"ws://127.0.0.1:{pipeline.ports['gateway']}/ws?api_key={KEY}"
        self.pattern = feed.entities[0].rsplit("-", 1)[0] + "-*"
        self.alerts: list[tuple[str, str]] = []
        self._socket: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AlertWatcher:
        self._socket = await connect(self.url)
        await self._socket.send(
            json.dumps({"type": "subscribe", "topics": ["alerts"], "entity": self.pattern})
        )
        self._task = asyncio.create_task(self._read(self._socket))
        return self

    async def _read(self, socket: ClientConnection) -> None:
        async for raw in socket:
            message = json.loads(raw)
            if message["type"] == "alert":
                self.alerts.append((message["data"]["alert_id"], message["data"]["status"]))

    async def __aexit__(self, *exc: object) -> None:
        assert self._socket is not None and self._task is not None
        await self._socket.close()
        self._task.cancel()

    def check(self, feed: Feed) -> None:
        """Each leak's episode reached the client once firing and once resolved, in order."""
        by_entity: dict[str, list[str]] = {}
        for alert_id, status in self.alerts:
            by_entity.setdefault(alert_id.split("@")[0], []).append(status)
        expected = {f"failure_risk/{e}": ["FIRING", "RESOLVED"] for e in feed.leaking}
        assert by_entity == expected, self.alerts


def report(fault: str, **figures: Any) -> None:
    print(f"\n{fault}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))


# -- poison records ---------------------------------------------------------------------------


async def test_a_poison_record_on_every_input_topic_is_dead_lettered_and_the_partition_goes_on(
    pipeline: Pipeline,
) -> None:
    """Garbage on each partition of each topic the worker reads (and on ``models.updates``),
    with a good record behind it: the garbage is dead-lettered with its coordinates, and the
    worker reads on past it. The outputs the sink and the gateway read get garbage too: they
    skip it, count it, and store and relay the good record behind it."""
    run = uuid.uuid4().hex[:6]
    kafka = pipeline.settings.kafka()
    codec = Codec()
    poison = b"\x00\xffpoison-" + run.encode()
    inputs = [topics.METRICS.name, topics.AGENT_EVENTS.name, topics.LABELS.name]
    partitions = range(pipeline.settings.topic_partitions)
    now = int(time.time() * 1000)
    good = {
        topics.METRICS.name: lambda k: codec.encode(
            "metric_batch",
            {"entity": k, "event_time": now, "labels": {}, "names": ["cpu_percent"],
             "values": [1.0], "source": "test"},
        ),
        topics.AGENT_EVENTS.name: lambda k: codec.encode(
            "agent_event",
            {"agent": k, "task_id": k, "task_type": "poison-test", "phase": "STARTED",
             "event_time": now, "duration_ms": None, "cost": None, "error_class": None,
             "labels": {}},
        ),
        topics.LABELS.name: lambda k: codec.encode(
            "label",
            {"entity": k, "kind": "INCIDENT", "incident_type": "test", "start_time": now,
             "end_time": None, "metric": None, "description": "poison test"},
        ),
    }  # fmt: skip
    entity = f"poison-{run}"
    prediction = dict(
        SAMPLES["prediction_batch"], prediction_id=f"{entity}@{now}", entity=entity,
        event_time=now, emitted_at=now,
    )  # fmt: skip
    behind: dict[tuple[str, int], int] = {}
    producer = kafka.producer()
    await producer.start()
    gateway = f"ws://127.0.0.1:{pipeline.ports['gateway']}/ws?api_key={KEY}"
    async with connect(gateway) as client:
        await client.send(json.dumps({"type": "subscribe", "entity": entity}))
        assert json.loads(await client.recv())["type"] == "subscribed"
        async with TopicReader(kafka, topics.DEADLETTER.name) as dead:
            try:
                for topic in inputs:
                    for partition in partitions:
                        key = f"{run}-{topic}-{partition}".encode()
                        await producer.send_and_wait(topic, poison, key=key, partition=partition)
                        sent = await producer.send_and_wait(
                            topic, good[topic](key.decode()), key=key, partition=partition
                        )
                        behind[(topic, partition)] = sent.offset
                await producer.send_and_wait(topics.MODEL_UPDATES.name, poison, key=b"poison")
                for topic in (topics.PREDICTIONS.name, topics.ALERTS.name):
                    await producer.send_and_wait(topic, poison, key=entity.encode(), partition=0)
                await producer.send_and_wait(
                    topics.PREDICTIONS.name,
                    codec.encode("prediction_batch", prediction),
                    key=entity.encode(),
                    partition=0,
                )
            finally:
                await producer.stop()
            expected = {(t, p) for t in inputs for p in partitions} | {
                (topics.MODEL_UPDATES.name, 0)
            }
            letters = await dead.until(
                lambda rs: (
                    expected
                    <= {(r["topic"], r["partition"]) for _, _, r in rs if r["value"] == poison}
                ),
                timeout_s=60,
            )
        relayed = json.loads(await asyncio.wait_for(client.recv(), 30))
    assert relayed["type"] == "prediction" and relayed["data"]["entity"] == entity
    for _, _, letter in letters:
        if letter["value"] == poison:
            assert letter["error_kind"] in ("undecodable", "unknown_schema"), letter
            assert letter["reason"], letter
            assert letter["offset"] >= 0, letter

    def read_past() -> bool:
        consumed = pipeline.health("worker")[1].get("consumed", {})
        return all(consumed.get(f"{t}:{p}", -1) >= o for (t, p), o in behind.items())

    await until("the worker reads past every poison record", read_past, 60)
    stored = await until(
        "the sink stores the prediction behind the poison",
        lambda: (
            pipeline.sql(f"SELECT count() FROM predictions WHERE entity = '{entity}'") == [(1,)]
        ),
        60,
    )
    code, worker = pipeline.health("worker")
    assert code == 200 and worker["crashed_agents"] == {} and worker["stalled_partitions"] == []
    pipeline.all_alive()
    report(
        "poison",
        dead_lettered=len(expected),
        partitions_read_past=len(behind),
        prediction_behind_poison_stored_after_s=round(stored, 1),
    )


# -- Redis ------------------------------------------------------------------------------------


async def _snapshot(pipeline: Pipeline, entity: str) -> list[dict[str, Any]]:
    """What the gateway answers a new subscription for ``entity``, up to its live feed."""
    url = f"ws://127.0.0.1:{pipeline.ports['gateway']}/ws?api_key={KEY}"
    async with connect(url) as client:
        await client.send(json.dumps({"type": "subscribe", "entity": entity}))
        first = json.loads(await asyncio.wait_for(client.recv(), 10))
        rest = [json.loads(await asyncio.wait_for(client.recv(), 10)) for _ in
                range(first["snapshot"])]  # fmt: skip
    return [first, *rest]


async def test_redis_stopped_predictions_flow_the_cache_refills_and_the_snapshot_says_why(
    pipeline: Pipeline,
) -> None:
    async with Feed(pipeline) as feed, AlertWatcher(pipeline, feed) as watcher:
        entity = next(iter(feed.leaking))
        await feed.steps(50, pace_s=0.05)
        await until("the leaks fire", lambda: len(watcher.alerts) >= 2, 60)
        stopped = await pipeline.stop("redis")
        during = asyncio.create_task(feed.steps(70, pace_s=OUTAGE_S / 20))
        said = await until("the worker and the gateway say Redis is down",
                    lambda: "redis" in pipeline.down("worker")
                    and "redis" in pipeline.down("gateway"), 30)  # fmt: skip
        code, answer = _get(pipeline.ports["gateway"], f"/api/entities/{entity}/predictions")
        assert code == 503 and "Redis" in answer["error"]["message"], answer
        snapshot = await _snapshot(pipeline, entity)
        assert snapshot[0]["type"] == "subscribed", snapshot
        assert [m["type"] for m in snapshot[1:]] == ["snapshot_degraded", "snapshot"], snapshot
        assert "Redis" in snapshot[1]["message"]
        assert snapshot[2]["topic"] == "alerts" and snapshot[2]["data"]["entity"] == entity
        await during
        before = (await feed.stored())["predicted_steps"]
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        back = await pipeline.up()
        # The cache refills with the newest of every entity, with no new data needed.
        newest = {e: ts for e, ts in pipeline.sql(
            f"SELECT entity, toUnixTimestamp64Milli(max(ts)) FROM predictions "
            f"WHERE entity IN ({feed.among}) GROUP BY entity")}  # fmt: skip

        def refilled() -> bool:
            for e, ts in newest.items():
                code, cached = _get(pipeline.ports["gateway"], f"/api/entities/{e}/predictions")
                if code != 200 or cached["event_time"] < ts:
                    return False
            return True

        refill_s = await until("the cache refilled", refilled, 30)
        cleared = await until("no process says Redis is down",
                    lambda: all("redis" not in pipeline.down(s) for s in SERVICES), 30)  # fmt: skip
        await feed.steps(STEPS, pace_s=0.05)
        counts = await feed.all_stored()
        await until("both episodes reached the live client", lambda: len(watcher.alerts) >= 4, 30)
        watcher.check(feed)
    pipeline.all_alive()
    report(
        "redis stopped",
        outage_s=round(back - stopped, 1),
        health_degraded_after_s=round(said, 1),
        health_ok_after_s=round(cleared, 1),
        predicted_steps_before=before,
        cache_refilled_after_s=round(refill_s, 1),
        **counts,
    )


# -- ClickHouse refusing inserts --------------------------------------------------------------


@contextmanager
def refusing_writes(folder: Path) -> Iterator[None]:
    """``folder`` refuses new entries, as on a disk gone read-only: immutable for root, whom
    permissions do not stop, and without write permission for anyone else."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        return
    mode = folder.stat().st_mode
    folder.chmod(mode & ~0o222)
    try:
        yield
    finally:
        folder.chmod(mode)


async def _ends(kafka: KafkaConfig, topic: str) -> dict[int, int]:
    consumer = kafka.consumer(enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await topic_partitions(kafka, topic)
        consumer.assign(partitions)
        return {tp.partition: end for tp, end in (await consumer.end_offsets(partitions)).items()}
    finally:
        await consumer.stop()


async def test_clickhouse_refusing_inserts_the_sink_backs_off_commits_nothing_and_catches_up(
    pipeline: Pipeline,
) -> None:
    kafka = pipeline.settings.kafka()
    async with Feed(pipeline) as feed:
        await feed.steps(40, pace_s=0.05)
        await feed.stored()
        ((paths,),) = pipeline.sql(
            "SELECT data_paths FROM system.tables "
            "WHERE database = currentDatabase() AND name = 'metric_samples'"
        )
        table = Path(paths[0])
        with refusing_writes(table):
            stopped = time.monotonic()
            during = asyncio.create_task(feed.steps(70, pace_s=OUTAGE_S / 30))
            said = await until("the sink says ClickHouse refuses", lambda: "clickhouse" in
                        pipeline.down("sink"), 30)  # fmt: skip
            held = await committed_offsets(kafka, DEFAULT_GROUP, topics.METRICS.name)
            await during
            assert await committed_offsets(kafka, DEFAULT_GROUP, topics.METRICS.name) == held, (
                "the sink committed offsets past an insert that failed"
            )
            before = (await asyncio.to_thread(feed.counts))["samples"]
            assert before < feed.sent * len(feed.entities) * 2
            problem = pipeline.down("sink")["clickhouse"]
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        back = time.monotonic()
        assert problem["down_for_s"] > 0 and problem["error"], problem
        await feed.steps(STEPS, pace_s=0.05)
        counts = await feed.all_stored()
        caught_up = time.monotonic() - back
        assert "clickhouse" not in pipeline.down("sink")

    # Caught up: the sink's commits reach the end of every partition (one the feed's entities
    # do not hash to has nothing to commit past what it held).
    async def committed_to_the_end() -> bool:
        done = await committed_offsets(kafka, DEFAULT_GROUP, topics.METRICS.name)
        ends = await _ends(kafka, topics.METRICS.name)
        return all(done.get(p, 0) == end for p, end in ends.items() if end)

    await until("the sink committed to the end of every partition", committed_to_the_end, 60)
    pipeline.all_alive()
    report(
        "clickhouse refusing inserts",
        outage_s=round(back - stopped, 1),
        health_degraded_after_s=round(said, 1),
        samples_stored_before=before,
        caught_up_after_s=round(caught_up, 1),
        **counts,
    )


# -- Kafka ------------------------------------------------------------------------------------


async def test_kafka_broker_stopped_every_process_recovers_without_a_restart(
    pipeline: Pipeline,
) -> None:
    agent = f"agent-{uuid.uuid4().hex[:6]}"
    accepted: list[str] = []

    def post(n: int) -> tuple[int, Any]:
        task_id = f"{agent}-{n}"
        event = {"agent": agent, "task_id": task_id, "task_type": "faults",
                 "phase": "STARTED", "event_time": int(time.time() * 1000)}  # fmt: skip
        code, body = _post_events(pipeline.ports["ingest"], [event])
        if code == 202:
            accepted.append(task_id)
        return code, body

    async with Feed(pipeline) as feed, AlertWatcher(pipeline, feed) as watcher:
        await feed.steps(50, pace_s=0.05)
        assert post(0)[0] == 202
        stopped = await pipeline.stop("kafka")
        during = asyncio.create_task(feed.steps(70, pace_s=0.1))
        said = await until("every process says Kafka is down",
                    lambda: all("kafka" in pipeline.down(s) for s in SERVICES), 30)  # fmt: skip
        refused = post(1)
        assert refused[0] == 503 and "Kafka" in refused[1]["error"]["message"], refused
        assert not during.done(), "the feed's producer waits for the broker"
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        back = await pipeline.up()
        healthy = await until("no process says Kafka is down",
                              lambda: all(map(pipeline.healthy, SERVICES)), 60)  # fmt: skip
        await during
        delivered = time.monotonic() - back
        await until("ingest takes events again", lambda: post(2)[0] == 202, 30)
        await feed.steps(STEPS, pace_s=0.05)
        counts = await feed.all_stored()
        stored_after = time.monotonic() - back
        await until("both episodes reached the live client", lambda: len(watcher.alerts) >= 4, 30)
        watcher.check(feed)
    events = pipeline.sql(
        f"SELECT task_id, count() FROM agent_events WHERE agent = '{agent}' GROUP BY task_id"
    )
    assert sorted(events) == sorted((t, 1) for t in accepted), events
    pipeline.all_alive()
    report(
        "kafka stopped",
        outage_s=round(back - stopped, 1),
        health_degraded_after_s=round(said, 1),
        health_ok_after_s=round(healthy, 1),
        feed_delivered_after_s=round(delivered, 1),
        all_stored_after_s=round(stored_after, 1),
        ingest_events_accepted=len(accepted),
        **counts,
    )


# -- Kafka Connect ----------------------------------------------------------------------------


async def test_a_connect_worker_restart_while_alerts_flow_delivers_each_alert_once(
    pipeline: Pipeline,
) -> None:
    with serving(Receiver()) as receiver:
        applied = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "streams.cli", "connect", "apply", "--webhook-url",
             f"{receiver.url}/hook", "--json"],
            env={**os.environ, **pipeline.env},
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        assert applied.returncode == 0, applied.stdout + applied.stderr
        (connector,) = json.loads(applied.stdout)
        topic = connector["topic"]

        async def read_to_end(topic: str) -> bool:
            kafka = pipeline.settings.kafka()
            done = await committed_offsets(kafka, f"connect-{connector['connector']}", topic)
            return done == await _ends(kafka, topic)

        async with Feed(pipeline) as feed:

            def delivered(status: str) -> list[str]:
                bodies = [r.body for r in receiver.at("/hook")]
                return [b["entity"] for b in bodies
                        if b["entity"] in feed.leaking and b["status"] == status]  # fmt: skip

            await feed.steps(60, pace_s=0.05)
            await until("both FIRING delivered", lambda: len(delivered("FIRING")) >= 2, 90)
            stopped = await pipeline.stop("connect")
            await feed.steps(STEPS, pace_s=0.05)
            back = await pipeline.up()
            resolved = await until(
                "both RESOLVED delivered", lambda: len(delivered("RESOLVED")) >= 2, 120
            )
            await feed.all_stored()
            # Once the connector has committed the end of its topic, nothing more can come.
            await until("the connector committed all it read", lambda: read_to_end(topic), 60)
            assert sorted(delivered("FIRING")) == sorted(feed.leaking)
            assert sorted(delivered("RESOLVED")) == sorted(feed.leaking)
            # So is every alert of the earlier faults, which the new connector read too.
            changes = [(r.body["alert_id"], r.body["status"]) for r in receiver.at("/hook")]
            assert len(changes) == len(set(changes)), changes
    pipeline.all_alive()
    report(
        "connect restarted",
        down_s=round(back - stopped, 1),
        resolved_delivered_after_restart_s=round(resolved, 1),
        requests=len(receiver.at("/hook")),
    )
