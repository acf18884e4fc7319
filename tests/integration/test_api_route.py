"""``POST /v1/route`` on the real stack: a real worker answers a routed request with one of
its candidates, and refuses a task type it knows no agent for (422 with its reason, at once);
two workers in one group answer every task type, each deciding the types it holds at once and
passing the others to their holder through the internal topic; without a worker the caller
gets 504 in the error body; a read-only key is refused."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.kafka_admin import TopicRequest, ensure_topics
from streams.settings import Settings
from streams.worker_process import WorkerProcess, group_ready
from tests.integration.test_api import running_api

pytestmark = pytest.mark.integration


async def test_a_routed_task_gets_the_workers_decision_naming_a_candidate(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    worker = WorkerProcess(stack_settings, f"test-route-{unique}", tmp_path / "w.log").start()
    candidates = [f"agent-{unique}-{i}" for i in range(3)]
    try:
        await group_ready([worker], timeout_s=120)
        async with running_api(stack_settings, tmp_path, unique) as (server, keys):
            url = f"http://127.0.0.1:{server.port}/v1/route"
            async with httpx.AsyncClient(timeout=30) as client:
                refused = await client.post(
                    url,
                    json={"task_id": f"t-{unique}", "task_type": "deploy"},
                    headers={"X-API-Key": keys["reader"]},
                )
                assert refused.status_code == 403
                # The worker reads routing.requests from its end: a request sent before its
                # partitions are assigned goes unanswered (504), so ask again until answered.
                deadline = time.monotonic() + 120
                for attempt in range(1000):
                    body = {
                        "task_id": f"task-{unique}-{attempt}",
                        "task_type": f"review-{unique}",
                        "candidates": candidates,
                        "priority": 2,
                        "deadline": int(time.time() * 1000) + 600_000,
                    }
                    reply = await client.post(url, json=body, headers={"X-API-Key": keys["writer"]})
                    if reply.status_code == 200 or time.monotonic() > deadline:
                        break
                    assert reply.status_code == 504, reply.text
                unknown = {"task_id": f"lost-{unique}", "task_type": f"never-{unique}"}
                refused = await client.post(
                    url, json=unknown, headers={"X-API-Key": keys["writer"]}
                )
    finally:
        worker.stop()
    assert reply.status_code == 200, reply.text
    # Refused by the worker, not timed out: the timeout's answer would be 504.
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert f"lost-{unique}" in error["message"] and "no candidates" in error["message"]
    assert error["details"] == [{"field": "body", "reason": error["details"][0]["reason"]}]
    assert f"never-{unique}" in error["details"][0]["reason"]
    decision = reply.json()
    assert decision["task_id"] == body["task_id"]
    assert decision["task_type"] == body["task_type"]
    assert decision["agent"] in candidates
    assert decision["runner_up"] in candidates
    assert decision["priority"] == 2 and decision["deadline"] == body["deadline"]
    assert decision["reason"]


async def _route(
    client: httpx.AsyncClient, url: str, key: str, body: dict[str, Any], timeout_s: float
) -> httpx.Response:
    """POST ``body`` until it is answered or ``timeout_s`` passes: a worker reads
    routing.requests from its end, so a request sent before its partitions are assigned goes
    unanswered (504)."""
    deadline = time.monotonic() + timeout_s
    for attempt in range(1000):
        reply = await client.post(
            url,
            json={**body, "task_id": f"{body['task_id']}-{attempt}"},
            headers={"X-API-Key": key},
        )
        if reply.status_code != 504 or time.monotonic() > deadline:
            return reply
    return reply


async def test_two_workers_answer_every_task_type_whichever_holds_it(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    group = f"test-route2-{unique}"
    workers = [WorkerProcess(stack_settings, group, tmp_path / f"w{i}" / "w.log").start()
               for i in range(2)]  # fmt: skip
    candidates = [f"agent-{unique}-{i}" for i in range(3)]
    types = [f"type-{unique}-{i}" for i in range(12)]  # over the internal topic's partitions
    try:
        await group_ready(workers, timeout_s=120)
        async with running_api(stack_settings, tmp_path, unique) as (server, keys):
            url = f"http://127.0.0.1:{server.port}/v1/route"
            async with httpx.AsyncClient(timeout=30) as client:
                replies = await asyncio.gather(
                    *(
                        _route(client, url, keys["writer"], body, 120)
                        for body in (
                            {
                                "task_id": f"task-{unique}-{t}",
                                "task_type": t,
                                "candidates": candidates,
                            }
                            for t in types
                        )
                    )
                )
    finally:
        for worker in workers:
            worker.stop()
    assert [r.status_code for r in replies] == [200] * len(types), [r.text for r in replies]
    decided = {r.json()["task_type"]: r.json()["agent"] for r in replies}
    assert set(decided) == set(types) and set(decided.values()) <= set(candidates)


async def test_no_decision_in_time_is_a_504_in_the_error_body(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    own = {"routing_requests_topic": f"test.route.requests.{unique}",
           "routing_decisions_topic": f"test.route.decisions.{unique}"}  # fmt: skip
    await ensure_topics(stack_settings.kafka(), [TopicRequest(t, 1, {}) for t in own.values()])
    settings = stack_settings.replace(api_route_timeout_s=0.5)
    async with (
        running_api(settings, tmp_path, unique, **own) as (server, keys),
        httpx.AsyncClient(timeout=30) as client,
    ):
        reply = await client.post(
            f"http://127.0.0.1:{server.port}/v1/route",
            json={"task_id": f"t-{unique}", "task_type": "deploy", "candidates": ["a"]},
            headers={"X-API-Key": keys["writer"]},
        )
    assert reply.status_code == 504
    error = reply.json()["error"]
    assert f"t-{unique}" in error["message"] and "FORESIGHT_API_ROUTE_TIMEOUT_S" in error["message"]
