"""`stack up` is idempotent and `stack down` stops exactly what it started.

Runs a second, throw-away stack on other ports in a temporary folder, so the session's stack
used by the other integration tests is untouched.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from deploy.local.processes import free_port
from deploy.local.stack import CONTROLLER_PORT_OFFSET, StackError
from streams import topics
from streams.commands.stack import local_stack
from streams.settings import load_settings
from streams.worker_process import WorkerProcess
from tests.integration.kafka_io import TopicReader, produce, until

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_up_twice_then_down_leaves_nothing_running(tmp_path: Path) -> None:
    settings = load_settings(environ={}).replace(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port(beside=CONTROLLER_PORT_OFFSET)}",
        kafka_connect_url=f"http://127.0.0.1:{free_port()}",
        feature_store_url=f"redis://127.0.0.1:{free_port()}/0",
        schema_registry_port=free_port(),
        stack_dir=str(tmp_path / "stack"),
        chdb_path=str(tmp_path / "stack" / "chdb"),
    )
    stack = local_stack(settings, quiet=True)
    try:
        first = stack.up(timeout=180)
        assert all(s.healthy for s in first), first
        pids = dict(stack.managed_pids())
        assert set(pids) == {"kafka", "connect", "schema-registry", "redis"}

        again = stack.up(timeout=60)
        assert all(s.healthy for s in again)
        assert dict(stack.managed_pids()) == pids, "a second `up` must not start anything new"
    finally:  # whatever failed, this test leaves no process behind
        stopped = stack.down(wipe=True)
    assert sorted(stopped) == ["connect", "kafka", "redis", "schema-registry"]
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    assert not any(s.healthy for s in stack.status() if s.name != "clickhouse")
    assert not (tmp_path / "stack" / "kafka").exists()
    assert not (tmp_path / "stack" / "schema-registry").exists()


def test_a_kafka_that_cannot_start_fails_up_at_once_with_its_log(tmp_path: Path) -> None:
    """Its controller port taken, the broker exits at start: ``up`` says so with the end of
    Kafka's log as soon as the process is gone, not after waiting out its timeout."""
    port = free_port(beside=CONTROLLER_PORT_OFFSET)
    settings = load_settings(environ={}).replace(
        kafka_bootstrap_servers=f"127.0.0.1:{port}",
        stack_dir=str(tmp_path / "stack"),
        chdb_path=str(tmp_path / "stack" / "chdb"),
    )
    stack = local_stack(settings, quiet=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + CONTROLLER_PORT_OFFSET))
        taken.listen()
        started = time.monotonic()
        try:
            with pytest.raises(StackError, match="Kafka exited before it answered") as error:
                stack.up(timeout=600, services=("kafka",))
        finally:
            stack.down(wipe=True)
    assert time.monotonic() - started < 300, "up waited for the timeout, not for the exit"
    assert "Address already in use" in str(error.value), str(error.value)


async def test_a_first_worker_on_a_stack_just_started_predicts_and_routes(tmp_path: Path) -> None:
    """A new user's first run: ``foresight stack up`` (the broker has just started, its
    metadata lagging behind new topics), then ``foresight worker`` at once, without
    ``foresight topics create``, on the default settings but for ports and folders: the
    worker makes the topics, its metric batches become predictions, a routing request gets
    its decision (the routing step holds the internal topic), and its log has no crash and
    no topic left out of its assignment."""
    settings = load_settings(environ={}).replace(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port(beside=CONTROLLER_PORT_OFFSET)}",
        feature_store_url=f"redis://127.0.0.1:{free_port()}/0",
        stack_dir=str(tmp_path / "stack"),
        chdb_path=str(tmp_path / "stack" / "chdb"),
    )
    stack = local_stack(settings, quiet=True)
    env = {"KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "FEATURE_STORE_URL": settings.feature_store_url,
           "FORESIGHT_STACK_DIR": settings.stack_dir,
           "FORESIGHT_WORKER_OFFSET_RESET": settings.worker_offset_reset}  # fmt: skip
    worker = WorkerProcess(settings, settings.worker_id, tmp_path / "worker.log", **env)
    t0 = int(time.time() * 1000) - 600_000
    batches = [
        {"entity": "web-1", "event_time": t0 + k * 1000, "labels": {}, "names": ["cpu", "mem"],
         "values": [10.0 + k % 3, 40.0], "source": "test"}
        for k in range(45)
    ]  # fmt: skip
    request = {"task_id": "first-task", "task_type": "review", "candidates": ["a1", "a2"],
               "event_time": int(time.time() * 1000)}  # fmt: skip

    def answered(records: list[tuple[str, bytes | None, Any]]) -> bool:
        steps = [r for t, _, r in records if t == topics.PREDICTIONS.name]
        decided = [r for t, _, r in records if t == topics.ROUTING.name]
        return len(steps) >= 3 and any(r.get("task_id") == "first-task" for r in decided)

    try:
        await asyncio.to_thread(stack.up, 180, ("kafka", "redis"))
        worker.start()
        await until("the worker's topics", lambda: worker.health() is not None, 120)
        async with TopicReader(settings.kafka(), topics.PREDICTIONS.name,
                               topics.ROUTING.name) as reader:  # fmt: skip
            await produce(settings.kafka(), topics.METRICS, "entity", batches)
            await produce(settings.kafka(), topics.ROUTING_REQUESTS, "task_id", [request])
            done = await reader.wait(answered, 180)
        alive = worker.alive()
    finally:
        worker.stop()
        log = worker.log.read_text(errors="replace") if worker.log.exists() else ""
        await asyncio.to_thread(stack.down, True)
    assert done, f"no 3 steps' predictions and decision in 180 s; the worker's log:\n{log[-4000:]}"
    assert alive, f"the worker exited; its log:\n{log[-4000:]}"
    for sign in ("Traceback", "Ignoring missing topic", "crashed"):
        assert sign not in log, f"{sign!r} in the worker's log:\n{log[-4000:]}"
