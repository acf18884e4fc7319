"""Agent event validation and the HTTP door of the ingestion, without any service."""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.audit import AuditTrail
from connectors.http.auth import Gatekeeper
from connectors.http.keys import READ, WRITE, KeysFile
from connectors.ingest_http import (
    AGENT_EVENTS_PATH,
    MAX_FUTURE_MS,
    QUALITY_PATH,
    WRITE_PATH,
    IngestConfig,
    IngestServer,
    validate_agent_events,
    validate_snapshots,
)
from connectors.kafka_clients import KafkaConfig
from connectors.pii import Scrubber, shipped_rules
from streams.commands.ingest import ingest_config
from streams.settings import Settings

NOW = 1_767_225_600_000
HOUR = 3_600_000
EVENT: dict[str, Any] = {
    "agent": "agent-01",
    "task_id": "t-1",
    "task_type": "triage",
    "phase": "SUCCEEDED",
    "event_time": NOW,
    "duration_ms": 1200,
}


def _problems(payload: Any) -> list[tuple[int | None, str | None]]:
    return [(e.index, e.field) for e in validate_agent_events(payload, NOW)[1]]


def test_a_valid_event_gets_the_schema_defaults() -> None:
    records, errors = validate_agent_events(EVENT, NOW)
    assert errors == []
    assert records == [{**EVENT, "cost": None, "error_class": None, "labels": {},
                        "workflow_id": None, "parent_task_id": None, "step": None}]  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("phase", "DONE"),
        ("phase", None),
        ("agent", ""),
        ("agent", "a" * 257),
        ("task_id", 7),
        ("event_time", NOW + MAX_FUTURE_MS + 1),
        ("event_time", 1.7e12),
        ("event_time", "2026-01-01"),
        ("event_time", -1),
        ("duration_ms", -1.0),
        ("duration_ms", math.nan),
        ("duration_ms", 10**400),
        ("agent", "web\ud800"),
        ("agent", "web-1\nFIRING"),
        ("task_type", "deploy\x1b[31m"),
        ("workflow_id", "wf\t1"),
        ("labels", {"\udfff": "v"}),
        ("cost", math.inf),
        ("cost", True),
        ("error_class", ""),
        ("labels", {"region": ""}),
        ("labels", ["eu"]),
        ("labels", {f"k{i}": "v" for i in range(65)}),
        ("retries", 3),
        ("workflow_id", ""),
        ("parent_task_id", 7),
        ("step", -1),
        ("step", 2**31),
        ("step", 1.5),
        ("step", True),
    ],
)
def test_each_rule_names_its_field(field: str, value: Any) -> None:
    assert _problems([EVENT, {**EVENT, field: value}]) == [(1, field)]


def test_workflow_fields_are_kept() -> None:
    workflow = {"workflow_id": "wf-1", "parent_task_id": "t-0", "step": 3}
    records, errors = validate_agent_events({**EVENT, **workflow}, NOW)
    assert errors == []
    assert [(r["workflow_id"], r["parent_task_id"], r["step"]) for r in records] == [
        ("wf-1", "t-0", 3)
    ]


def test_every_problem_of_every_event_is_reported() -> None:
    missing = {k: v for k, v in EVENT.items() if k != "task_type"}
    assert _problems([missing, "not an object", {**EVENT, "phase": "x", "cost": -1}]) == [
        (0, "task_type"),
        (1, None),
        (2, "phase"),
        (2, "cost"),
    ]


def test_an_empty_list_is_refused() -> None:
    assert _problems([]) == [(None, None)]


def test_reasons_say_what_to_send() -> None:
    (error,) = validate_agent_events({**EVENT, "phase": "DONE"}, NOW)[1]
    assert error.reason == "must be one of STARTED, SUCCEEDED, FAILED; got 'DONE'"


# -- the HTTP door, in process (no request here reaches Kafka) ----------------------------------


@pytest.fixture
def ingest_keys(tmp_path: Path) -> tuple[KeysFile, str, str]:
    """A keys file with a writer's key and a reader's key."""
    keys = KeysFile(tmp_path / "keys.json")
    return keys, keys.create("agents", [WRITE])[1], keys.create("dashboards", [READ])[1]


@asynccontextmanager
async def ingest_client(
    keys: KeysFile, max_future_ms: int = MAX_FUTURE_MS, max_age_ms: int | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    scrubber = Scrubber(shipped_rules(), secret=b"0" * 32)
    config = IngestConfig(
        KafkaConfig("unused:9092"),
        "m",
        "e",
        Gatekeeper(keys),
        ("instance",),
        scrubber,
        port=0,
        max_future_ms=max_future_ms,
        max_age_ms=max_age_ms,
    )
    app = IngestServer(config).app()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
        yield http


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"agent": "\\ud800"}', "lone surrogate"),
        (json.dumps([{**EVENT, "duration_ms": 10**400}]).encode(), "fit a double"),
        (b'{"agent": ' + b"9" * 5000 + b"}", "not JSON"),
        (b"\xff\xfe not utf-8", "not JSON"),
        (b"{not json", "not JSON"),
    ],
)
async def test_every_bad_agent_events_body_gets_400(
    ingest_keys: tuple[KeysFile, str, str], body: bytes, reason: str
) -> None:
    keys, writer, _ = ingest_keys
    async with ingest_client(keys) as http:
        response = await http.post(
            AGENT_EVENTS_PATH, content=body, headers={"Authorization": f"Bearer {writer}"}
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert reason in error["message"] + json.dumps(error["details"])


async def test_agent_event_problems_are_the_error_details(
    ingest_keys: tuple[KeysFile, str, str],
) -> None:
    keys, writer, _ = ingest_keys
    async with ingest_client(keys) as http:
        response = await http.post(
            AGENT_EVENTS_PATH,
            json=[EVENT, {**EVENT, "phase": "DONE", "cost": -1}],
            headers={"X-API-Key": writer},
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert [(d["index"], d["field"]) for d in error["details"]] == [(1, "phase"), (1, "cost")]
    assert error["details"][0]["reason"] == "must be one of STARTED, SUCCEEDED, FAILED; got 'DONE'"


async def test_remote_write_needs_a_writer_key_as_bearer_or_basic_auth(
    ingest_keys: tuple[KeysFile, str, str],
) -> None:
    keys, writer, reader = ingest_keys
    basic = base64.b64encode(f"prometheus:{writer}".encode()).decode()
    wrong_type = {"Content-Encoding": "snappy", "Content-Type": "text/plain"}
    async with ingest_client(keys) as http:
        for headers, status in [
            ({}, 401),
            ({"Authorization": "Bearer nope"}, 401),
            ({"Authorization": f"Bearer {reader}"}, 403),
            ({"Authorization": f"Bearer {writer}"}, 415),  # in: then the body is checked
            ({"Authorization": f"Basic {basic}"}, 415),
        ]:
            response = await http.post(WRITE_PATH, content=b"x", headers={**headers, **wrong_type})
            assert (response.status_code, set(response.json())) == (status, {"error"})
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200


SNAPSHOT: dict[str, Any] = {
    "repository": "shop",
    "commit": "ab12cd",
    "event_time": NOW,
    "files": 12,
    "lines": 1400,
    "functions": 90,
    "mean_complexity": 3.1,
    "max_complexity": 14,
}


def test_quality_snapshots_get_their_defaults_or_every_problem() -> None:
    records, errors = validate_snapshots([SNAPSHOT, SNAPSHOT], NOW)
    assert errors == [] and len(records) == 2
    assert records[0]["max_complexity"] == 14.0 and records[0]["lint_warnings"] is None
    bad = [SNAPSHOT, {**SNAPSHOT, "lines": -5, "coverage": 2}, "x"]
    assert [(e.index, e.field) for e in validate_snapshots(bad, NOW)[1]] == [
        (1, "lines"), (1, "coverage"), (2, None)
    ]  # fmt: skip
    assert validate_snapshots([], NOW)[1][0].reason.startswith("the list is empty")


async def test_quality_needs_a_writer_and_names_the_bad_field(
    ingest_keys: tuple[KeysFile, str, str],
) -> None:
    keys, writer, reader = ingest_keys
    async with ingest_client(keys) as http:
        refused = await http.post(QUALITY_PATH, json=SNAPSHOT, headers={"X-API-Key": reader})
        assert refused.status_code == 403
        response = await http.post(
            QUALITY_PATH,
            json={**SNAPSHOT, "mean_complexity": "high"},
            headers={"Authorization": f"Bearer {writer}"},
        )
    assert response.status_code == 400
    (detail,) = response.json()["error"]["details"]
    assert (detail["index"], detail["field"]) == (0, "mean_complexity")
    assert detail["reason"] == "must be a number, got 'high'"


async def test_event_times_are_held_to_the_worker_s_limits(
    ingest_keys: tuple[KeysFile, str, str],
) -> None:
    """A 202 is not given for an event the worker would dead-letter as too far ahead or too
    old: the door takes FORESIGHT_MAX_FUTURE_S and the topics' retention from the settings."""
    keys, writer, _ = ingest_keys
    now = int(time.time() * 1000)
    ahead, old = {**EVENT, "event_time": now + 1_800_000}, {**EVENT, "event_time": now - 30 * HOUR}
    async with ingest_client(keys, max_future_ms=600_000, max_age_ms=24 * HOUR) as http:
        response = await http.post(
            AGENT_EVENTS_PATH, json=[ahead, old], headers={"X-API-Key": writer}
        )
    assert response.status_code == 400, response.text
    first, second = response.json()["error"]["details"]
    assert (first["index"], first["field"]) == (0, "event_time")
    assert "at most 0.166667 h is allowed" in first["reason"]
    assert (second["index"], second["field"]) == (1, "event_time")
    assert "30 h old, beyond retention (24 h" in second["reason"]


def test_the_server_takes_its_time_limits_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        max_future_s=7200.0,
        topic_retention_hours=48,
        keys_file=str(tmp_path / "keys.json"),
        credentials_file=str(tmp_path / "credentials"),
    )
    config = ingest_config(settings, AuditTrail(KafkaConfig("unused:9092"), "audit", "ingest"))
    assert (config.max_future_ms, config.max_age_ms) == (7_200_000, 48 * HOUR)
