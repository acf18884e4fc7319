"""Workflow patterns through a real worker on the real stack: a loop and a rare path come out
as alerts on ``alerts``, each with its evidence, and resolve with the workflow's outcome."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streams import topics
from streams.settings import Settings
from streams.worker_process import WorkerProcess
from tests.integration.kafka_io import TopicReader, produce

pytestmark = pytest.mark.integration

Record = dict[str, Any]
USUAL = ("plan", "build", "test", "deploy")


def _workflow(
    agent: str, workflow: str, kind: str, path: tuple[str, ...], t_ms: int, end: bool = True
) -> list[Record]:
    """A workflow's AgentEvents 100 ms apart, all from one agent: one partition keeps them
    in order, so the worker sees each workflow as it happened."""
    base: Record = {"agent": agent, "workflow_id": workflow, "parent_task_id": f"{workflow}-r"}
    root = base | {"task_id": f"{workflow}-r", "task_type": kind, "parent_task_id": None}
    events = [root | {"phase": "STARTED"}]
    for step, task_type in enumerate(path, start=1):
        task = base | {"task_id": f"{workflow}-{step}", "task_type": task_type, "step": step}
        events += [task | {"phase": "STARTED"}, task | {"phase": "SUCCEEDED", "duration_ms": 90.0}]
    if end:
        events.append(root | {"phase": "SUCCEEDED", "duration_ms": 1000.0})
    return [e | {"event_time": t_ms + 100 * i} for i, e in enumerate(events)]


Seen = list[tuple[str, bytes | None, Any]]


def _alerts(seen: Seen, rule: str, entity: str) -> list[Record]:
    return [r for topic, _, r in seen if topic == topics.ALERTS.name
            and r["rule"] == rule and r["entity"] == entity]  # fmt: skip


def _health(worker: WorkerProcess) -> Record:
    health = worker.health()
    assert health is not None, "the worker does not answer /health"
    return health


def _resolved(rule: str, entity: str) -> Callable[[Seen], bool]:
    """Whether ``rule``'s alert on ``entity`` has resolved."""
    return lambda seen: any(a["status"] == "RESOLVED" for a in _alerts(seen, rule, entity))


async def test_a_loop_and_a_rare_path_come_out_with_their_evidence(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    agent, kind = f"agent-{unique}", f"release-{unique}"
    kafka = stack_settings.kafka()
    worker = WorkerProcess(
        stack_settings, f"test-workflows-{unique}", tmp_path / "worker.log",
        FORESIGHT_IDLE_TIMEOUT_S="1",
    ).start()  # fmt: skip
    try:
        await worker.ready()
        async with TopicReader(kafka, topics.ALERTS.name) as reader:
            # The worker reads agent events from their end: a workflow sent before its
            # partitions are assigned goes unseen, so send a new one until one is followed.
            deadline = time.monotonic() + 120
            for attempt in range(100):
                looping = f"loop-{unique}-{attempt}"
                path = ("plan", "test", "test", "test", "deploy")
                events = _workflow(agent, looping, kind, path, int(time.time() * 1000))
                await produce(kafka, topics.AGENT_EVENTS, "agent", events)
                done = _resolved("workflow_loop", looping)
                if await reader.wait(done, timeout_s=10) or time.monotonic() > deadline:
                    break
            loop = _alerts(reader.records, "workflow_loop", looping)
            assert [a["status"] for a in loop] == ["FIRING", "RESOLVED"]
            labels = loop[0]["labels"]
            assert (labels["workflow_kind"], labels["cycle"]) == (kind, "test")
            assert (labels["repeats"], labels["path"]) == (
                "3",
                "plan → test → test → test → deploy",
            )
            assert loop[1]["labels"]["outcome"] == "SUCCEEDED"

            # 50 usual workflows teach the kind its path; once the worker has ended them all,
            # a workflow that takes a step none of them took is a rare path.
            before = _health(worker)["workflows_learned"]
            t0 = int(time.time() * 1000)
            usual = [
                event
                for n in range(50)
                for event in _workflow(agent, f"usual-{unique}-{n}", kind, USUAL, t0 + 10 * n)
            ]
            usual.sort(key=lambda e: e["event_time"])
            await produce(kafka, topics.AGENT_EVENTS, "agent", usual)
            learned = time.monotonic() + 60
            while _health(worker)["workflows_learned"] < before + 50:
                assert time.monotonic() < learned, f"not learned yet: {_health(worker)}"
                await reader.wait(lambda seen: False, timeout_s=0.5)
            rare = f"rare-{unique}"
            odd = ("plan", "build", "summarise", "deploy")
            await produce(kafka, topics.AGENT_EVENTS, "agent",
                          _workflow(agent, rare, kind, odd, int(time.time() * 1000)))  # fmt: skip
            await reader.until(_resolved("workflow_rare_path", rare), timeout_s=60)
    finally:
        worker.stop()
    fired, ended = _alerts(reader.records, "workflow_rare_path", rare)
    assert (fired["status"], fired["severity"], ended["status"]) == ("FIRING", "INFO", "RESOLVED")
    evidence = fired["labels"]
    assert evidence["workflow_kind"] == kind
    assert evidence["path"] == "plan → build → summarise → deploy"
    assert (evidence["rare_step"], evidence["rare_position"]) == ("summarise", "3")
    assert (evidence["took"], evidence["reached"]) == ("0", "50")
    assert evidence["path_frequency"] == "0.0000"
    assert evidence["usual_next"] == "test"
    assert "`summarise` after plan → build in 0 of 50" in fired["summary"]
    assert "(0.0%); usual next: `test` (100%)" in fired["summary"]
    assert ended["labels"]["outcome"] == "SUCCEEDED"
