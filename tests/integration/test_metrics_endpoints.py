"""Every Foresight process (ingest, gateway, worker, ClickHouse sink) serves /metrics, and its
counters move with the traffic.

Both run as ``foresight`` subprocesses, as Prometheus would find them, on free ports given
through the environment (``FORESIGHT_INGEST_PORT``, ``FORESIGHT_GATEWAY_PORT``). The ingest
server produces to the real telemetry topics, so it is only sent requests it refuses (nothing
is produced); the gateway and the sink read their own unique topics; the worker reads the real
metrics topic with its own consumer group.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from connectors.http.keys import ROLES, KeysFile
from connectors.ingest_http import AGENT_EVENTS_PATH
from connectors.kafka_admin import TopicRequest, ensure_topics
from connectors.kafka_clients import KafkaConfig
from deploy.local.processes import free_port
from schemas.codec import Codec
from streams.settings import Settings
from tests.schemas.samples import SAMPLES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KEY = "metrics-test-key"
DEADLINE_S = 60.0


def wait_for(what: str, condition: Callable[[], bool], timeout: float = DEADLINE_S) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` on ``port``: ``{(name, sorted labels): value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def answers(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


@contextmanager
def foresight_process(args: list[str], port: int, env: dict[str, str]) -> Iterator[None]:
    """``foresight ARGS`` in the background until /metrics answers on ``port``; stopped after.

    It accepts ``KEY`` (every role), from a keys file of its own.
    """
    folder = tempfile.TemporaryDirectory()
    KeysFile(f"{folder.name}/keys.json").create("metrics-test", ROLES, key=KEY)
    keys_env = {
        "FORESIGHT_KEYS_FILE": f"{folder.name}/keys.json",
        "FORESIGHT_CREDENTIALS_FILE": f"{folder.name}/credentials",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", *args],
        cwd=ROOT,
        env={**os.environ, **keys_env, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            f"`foresight {' '.join(args)}` to serve /metrics on {port}",
            lambda: process.poll() is not None or answers(port),
        )
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"`foresight {' '.join(args)}` exited {process.returncode}:\n{output}")
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        folder.cleanup()


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code


def test_ingest_counts_requests_by_endpoint_and_code(stack_settings: Settings) -> None:
    port = free_port()
    with foresight_process(["ingest"], port, {"FORESIGHT_INGEST_PORT": str(port)}):
        before = scrape(port)
        url = f"http://127.0.0.1:{port}{AGENT_EVENTS_PATH}"
        json_type = {"Content-Type": "application/json"}
        assert post(url, b"[]", json_type) == 401  # no key
        bad = json.dumps([{"agent": "a", "phase": "DONE"}]).encode()
        assert post(url, bad, {**json_type, "X-API-Key": KEY}) == 400
        after = scrape(port)

    def moved(code: str) -> float:
        series = (
            "foresight_ingest_requests_total",
            (("code", code), ("endpoint", AGENT_EVENTS_PATH)),
        )
        return after.get(series, 0.0) - before.get(series, 0.0)

    assert moved("401") == 1
    assert moved("400") == 1


async def subscribe_and_receive(port: int, entity: str, produce: Callable[[], object]) -> None:
    """Connect a client, subscribe to ``entity``'s predictions, then receive one produced after.

    The entity is unique, so no prediction cached by other runs comes as a snapshot.
    """
    async with connect(f"ws://127.0.0.1:{port}/ws?api_key={KEY}") as ws:
        request = {"type": "subscribe", "topics": ["predictions"], "entity": entity}
        await ws.send(json.dumps(request))
        deadline = time.monotonic() + DEADLINE_S
        seen: list[str] = []
        while "prediction" not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no prediction within {DEADLINE_S:.0f} s; got {seen}"
            message = json.loads(await asyncio.wait_for(ws.recv(), left))
            seen.append(message["type"])
            if message["type"] == "subscribed":
                await asyncio.to_thread(produce)
        connected = await asyncio.to_thread(scrape, port)
        assert connected[("foresight_gateway_clients", ())] == 1


def test_gateway_counts_clients_and_messages(stack_settings: Settings, unique: str) -> None:
    kafka = stack_settings.kafka()
    predictions, alerts = f"test.metrics.predictions.{unique}", f"test.metrics.alerts.{unique}"
    asyncio.run(ensure_topics(kafka, [TopicRequest(t, 1, {}) for t in (predictions, alerts)]))
    batch = dict(SAMPLES["prediction_batch"], entity=f"web-{unique}")

    def produce() -> None:
        async def send() -> None:
            producer = kafka.producer()
            await producer.start()
            try:
                await producer.send_and_wait(
                    predictions, Codec().encode("prediction_batch", batch), key=b"k"
                )
            finally:
                await producer.stop()

        asyncio.run(send())

    port = free_port()
    args = ["gateway", "--predictions-topic", predictions, "--alerts-topic", alerts]
    with foresight_process(args, port, {"FORESIGHT_GATEWAY_PORT": str(port)}):
        before = scrape(port)
        assert before[("foresight_gateway_clients", ())] == 0
        asyncio.run(subscribe_and_receive(port, batch["entity"], produce))
        wait_for(
            "the gateway to count the client gone",
            lambda: scrape(port)[("foresight_gateway_clients", ())] == 0,
        )
        after = scrape(port)
    sent = ("foresight_gateway_messages_total", ())
    assert after[sent] - before[sent] == 1  # the prediction (answers are not relayed messages)


def _counter(port: int, name: str, **labels: str) -> float:
    wanted = tuple(sorted(labels.items()))
    return sum(v for (n, ls), v in scrape(port).items() if n == name and set(wanted) <= set(ls))


async def _produce_batches(kafka: KafkaConfig, topic: str, entity: str, count: int) -> None:
    codec = Codec()
    producer = kafka.producer()
    await producer.start()
    try:
        now = int(time.time() * 1000)
        for i in range(count):
            record = dict(SAMPLES["metric_batch"], entity=entity, event_time=now - count + i)
            await producer.send_and_wait(
                topic, codec.encode("metric_batch", record), key=entity.encode()
            )
    finally:
        await producer.stop()


def test_worker_counts_samples_in_and_records_out(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "FORESIGHT_WORKER_PORT": str(port),
        "FORESIGHT_WORKER_ID": f"metrics-{unique}",
        "FORESIGHT_WORKER_OFFSET_RESET": "latest",
        "FORESIGHT_WORKER_DATA_DIR": str(tmp_path / "worker-data"),
        "FORESIGHT_STEP_S": "0.001",
    }
    with foresight_process(["worker"], port, env):
        wait_for(
            "the worker to own partitions",
            lambda: (
                _counter(port, "foresight_partition_stalled") == 0
                and any(n == "foresight_partition_stalled" for n, _ in scrape(port))
            ),
        )
        before = _counter(port, "foresight_samples_in_total")
        out_before = _counter(port, "foresight_events_out_total", topic="predictions")
        deadline = time.monotonic() + DEADLINE_S
        # A new group reads from the end once it has its offsets: keep sending until counted.
        while _counter(port, "foresight_samples_in_total") <= before:
            assert time.monotonic() < deadline, "the worker never counted a sample"
            asyncio.run(
                _produce_batches(
                    stack_settings.kafka(),
                    "telemetry.metrics",
                    f"metrics-{unique}",
                    3,
                )
            )
            time.sleep(0.5)
        wait_for(
            "predictions to be counted out",
            lambda: _counter(port, "foresight_events_out_total", topic="predictions") > out_before,
        )


def test_sink_counts_rows_inserted(stack_settings: Settings, unique: str, tmp_path: Path) -> None:
    topic = f"test.metrics-sink.{unique}"
    asyncio.run(ensure_topics(stack_settings.kafka(), [TopicRequest(topic, 1, {})]))
    port = free_port()
    env = {
        "FORESIGHT_SINK_METRICS_PORT": str(port),
        "FORESIGHT_SINK_SQL_PORT": str(free_port()),
        "FORESIGHT_CHDB_PATH": str(tmp_path / "chdb"),
        "FORESIGHT_SINK_BATCH_SECONDS": "0.2",
    }
    with foresight_process(["sink", "clickhouse", "--topics", topic, "--group", unique], port, env):
        assert _counter(port, "foresight_sink_rows_total") == 0
        asyncio.run(_produce_batches(stack_settings.kafka(), topic, f"sink-{unique}", 5))
        wait_for(
            "the sink to count the rows it inserted",
            lambda: _counter(port, "foresight_sink_rows_total") >= 10,
        )  # 5 batches x 2
        assert _counter(port, "foresight_sink_batch_rows_count") >= 1
