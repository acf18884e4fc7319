"""The intelligence API on the real stack: predictions from the worker's online state in
Redis with the serving XGBoost model's SHAP values, history and point-in-time features from
ClickHouse through a real sink, model changes with the operate role and their audit events,
GraphQL queries and subscriptions on the live feed, and ``foresight predict``."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from connectors.audit import AuditTrail
from connectors.http.auth import Gatekeeper, RateLimits
from connectors.http.errors import ApiError
from connectors.http.keys import OPERATE, READ, WRITE, KeysFile
from connectors.kafka_admin import TopicRequest, ensure_topics
from connectors.redis_store import FeatureStore, latest_of_everything
from models.entity import EntityPipeline, ModelSet, step_many
from models.explain import features_read
from models.features import vector_names
from models.registry import ModelRegistry
from models.training import FAILURE_RISK, TrainingConfig, TrainingSet, train_failure_risk
from schemas.codec import Codec
from schemas.predictions import PredictionColumns, prediction_rows
from streams.api import schema
from streams.api.client import ApiClient, prediction_request
from streams.api.server import ApiConfig, ApiServer
from streams.cli import main
from streams.engine import ONLINE_FAILURE_MODEL, pipeline_config
from streams.settings import Settings
from tests.connectors.test_clickhouse_sink import SinkProcess, _produce, _recent
from tests.integration.test_audit import _read_all

pytestmark = pytest.mark.integration

FEATURES = ["memory_percent:15m:slope", "memory_percent:5m:mean", "memory_percent:1m:last"]
STEP_MS = 10_000
GRAPHQL_WS = Subprotocol("graphql-transport-ws")


@asynccontextmanager
async def running_api(
    settings: Settings, folder: Path, unique: str, **topics_of_its_own: str
) -> AsyncIterator[tuple[ApiServer, dict[str, str]]]:
    """The API on a free port, its feed on topics of its own, keys of its own (``reader``,
    ``operator``, ``writer``); ``topics_of_its_own``: more :class:`ApiConfig` topics."""
    topics = {
        "prediction_batch": f"test.api.predictions.{unique}",
        "alert": f"test.api.alerts.{unique}",
    }
    await ensure_topics(settings.kafka(), [TopicRequest(t, 1, {}) for t in topics.values()])
    file = KeysFile(folder / "keys.json")
    keys = {
        name: file.create(f"{name}-{unique}", roles)[1]
        for name, roles in (("reader", [READ]), ("operator", [READ, OPERATE]), ("writer", [WRITE]))
    }
    with AuditTrail(settings.kafka(), settings.audit_topic, "api") as audit:
        limits = RateLimits(per_key=0, per_address=0, auth_failures=0)
        config = ApiConfig(
            Gatekeeper(file, limits, audit=audit.refused),
            port=0,
            predictions_topic=topics["prediction_batch"],
            alerts_topic=topics["alert"],
            **topics_of_its_own,
        )
        async with ApiServer(settings, config, audit) as server:
            yield server, keys


async def _batch_and_alone(
    settings: Settings, folder: Path, unique: str, items: list[dict[str, Any]], query: str = ""
) -> tuple[httpx.Response, list[httpx.Response], httpx.Response | None]:
    """``items`` as one ``/v1/predict/batch`` request and each alone on
    ``/v1/predict/performance``, with a reader's key; and the GraphQL ``query``, if any, about
    the first item's entity."""
    async with running_api(settings, folder, unique) as (server, keys):
        headers = {"Authorization": f"Bearer {keys['reader']}"}
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            batch = await http.post(f"{base}/v1/predict/batch", json={"items": items})
            alone = [await http.post(f"{base}/v1/predict/performance", json=i) for i in items]
            variables = {"e": items[0]["entity"]}
            graphql = (
                await http.post(f"{base}/graphql", json={"query": query, "variables": variables})
                if query
                else None
            )
    return batch, alone, graphql


def client(server: ApiServer, key: str) -> ApiClient:
    return ApiClient(f"http://127.0.0.1:{server.port}", key)


def _leaking_host(entity: str, start_ms: int, steps: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The worker's latest PredictionBatch and FeatureVector for a host leaking memory."""
    pipeline = EntityPipeline(entity, ModelSet(pipeline_config(Settings(step_s=10.0))))
    out: tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]] | None = None
    for k in range(steps):
        t = start_ms + k * STEP_MS
        pipeline.add(t, ["memory_percent"], np.array([50 + k * 0.1]), np.array([100.0]))
        out = step_many([pipeline], [t])[0]
    assert out is not None
    features, predictions, _ = out
    return predictions, features


async def _online(
    settings: Settings, steps: dict[str, int]
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Hosts leaking memory for their number of steps, their latest PredictionBatch and
    FeatureVector stored in Redis as the worker stores them."""
    start = int(time.time() * 1000) - 3_600_000
    states = {host: _leaking_host(host, start, n) for host, n in steps.items()}
    store = FeatureStore(settings.feature_store_url)
    try:
        await store.put_predictions([predictions for predictions, _ in states.values()])
        await store.put_features([features for _, features in states.values()])
    finally:
        await store.close()
    return states


def _trained(registry: ModelRegistry, promote: bool = True) -> None:
    """A failure-risk model over three features, in production unless ``promote`` is off."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(800, 3)) * [0.05, 10, 10] + [0.0, 60, 60]
    y = ((x[:, 0] > 0.03) & (x[:, 2] > 62)).astype(np.int8)
    data = TrainingSet(x, y, np.arange(800) * STEP_MS, ["h"] * 800, FEATURES, 1800.0)
    model, reference, report = train_failure_risk(data, TrainingConfig(folds=2, rounds=20))
    update = registry.register_model(model, reference, report, since_ms=0, until_ms=8_000_000)
    if promote:
        registry.promote(FAILURE_RISK, update["version"])


async def test_an_entity_gets_its_online_state_and_the_serving_model_explained(
    stack_settings: Settings,
    unique: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entity = f"api-host-{unique}"
    ((predictions, features),) = (await _online(stack_settings, {entity: 150})).values()
    registry = ModelRegistry(str(tmp_path / "models"))
    _trained(registry)
    loaded = registry.load_production(FAILURE_RISK)
    assert loaded is not None
    settings = stack_settings.replace(model_registry_url=registry.url)
    async with running_api(settings, tmp_path, unique) as (server, keys):
        reader = client(server, keys["reader"])
        answer = await asyncio.to_thread(reader.predict, entity, top=3)
        with pytest.raises(ApiError) as missing:
            await asyncio.to_thread(reader.predict, f"nobody-{unique}")
        batch = await asyncio.to_thread(
            reader.predict_batch,
            [
                prediction_request(entity, kinds=["FAILURE_RISK"]),
                prediction_request(f"nobody-{unique}"),
            ],
        )
        monkeypatch.setenv("FORESIGHT_API_KEY", keys["reader"])
        url = f"http://127.0.0.1:{server.port}"
        code = await asyncio.to_thread(main, ["predict", entity, "--json", "--url", url])
        printed = capsys.readouterr().out
        table_code = await asyncio.to_thread(main, ["predict", entity, "--url", url, "--top", "1"])
        table = capsys.readouterr().out

    assert answer.source == "online" and answer.event_time == predictions["event_time"]
    stream = {(p["kind"], p["metric"], p["horizon_s"]) for p in prediction_rows(predictions)}
    got = {
        (p.kind.value, p.metric, p.horizon_s) for p in answer.predictions if p.metric != "entity"
    }
    assert got == stream
    (xgb,) = [p for p in answer.predictions if p.model.name == FAILURE_RISK]
    assert xgb.model.version == "1" and not xgb.shadow and xgb.value is not None
    assert xgb.value == pytest.approx(float(loaded.score([features])[0]), rel=1e-5)
    assert len(xgb.drivers) == 3 and {d.feature for d in xgb.drivers} == set(FEATURES)
    logit = math.log(xgb.value / (1 - xgb.value))
    matrix = loaded.model.matrix([features])
    bias = loaded.model.contributions(matrix)[0, -1]
    assert sum(d.contribution or 0 for d in xgb.drivers) + bias == pytest.approx(logit, abs=1e-4)
    risk = [p for p in answer.predictions if p.model.name == "local_trend"]
    assert risk and risk[0].drivers[0].feature == "memory_percent:1m:last"
    assert missing.value.status == 404 and "window" in missing.value.message
    assert [i.status for i in batch.items] == [200, 404]
    assert batch.items[0].result is not None
    assert {p.kind for p in batch.items[0].result.predictions} == {"FAILURE_RISK"}
    assert code == 0 and json.loads(printed)["entity"] == entity
    assert table_code == 0 and "memory_percent:1m:last" in table and f"{FAILURE_RISK} 1" in table


async def test_each_item_of_a_batch_is_what_the_item_alone_gets(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    hosts = [f"api-host-{unique}-{k}" for k in range(2)]
    await _online(stack_settings, {hosts[0]: 140, hosts[1]: 150})
    registry = ModelRegistry(str(tmp_path / "models"))
    _trained(registry)
    recent = (int(time.time()) - 2100) * 1000  # 200 steps: forecasts, anomaly scores, risk
    items: list[dict[str, Any]] = [
        {"entity": hosts[0]},
        {"entity": f"nobody-{unique}"},
        {"entity": hosts[1], "kinds": ["FORECAST", "FAILURE_RISK"], "horizons_s": [300]},
        {"entity": hosts[0], "top": 0},
        {"entity": hosts[1], "metrics": ["memory_percent"], "top": 1},
        {"entity": "w", "window": [_series(recent, 200)]},
        {"entity": "w", "window": [_series(int(time.time() + 7200) * 1000, 3)]},
    ]
    settings = stack_settings.replace(model_registry_url=registry.url)
    query = (
        "query($e: Name!) { entity(name: $e) { latest { eventTime featuresEventTime "
        "predictions { kind metric horizonS value model { name version } drivers "
        "{ feature value contribution } } } } }"
    )
    batch, alone, graphql = await _batch_and_alone(settings, tmp_path, unique, items, query)
    assert graphql is not None

    assert batch.status_code == 200
    answered = batch.json()
    assert [i["status"] for i in answered["items"]] == [200, 404, 200, 200, 200, 200, 422]
    assert (answered["succeeded"], answered["failed"]) == (5, 2)
    for item, single in zip(answered["items"], alone, strict=True):
        assert item["status"] == single.status_code
        if single.status_code == 200:
            assert item["result"] == single.json() and item["error"] is None
            # Sent as records: byte for byte what the pydantic model would write.
            model = schema.PredictResponse.model_validate_json(single.content)
            assert model.model_dump_json().encode() == single.content
        else:
            error = single.json()["error"]
            assert item["result"] is None and item["error"]["code"] == error["code"]
            assert _clock(item["error"]["message"]) == _clock(error["message"])
    first = answered["items"][0]["result"]["predictions"]
    assert any(p["model"]["name"] == FAILURE_RISK and p["drivers"] for p in first)
    assert all(not p["drivers"] for p in answered["items"][3]["result"]["predictions"])
    replayed = {p["kind"] for p in answered["items"][5]["result"]["predictions"]}
    assert {"ANOMALY", "FORECAST"} <= replayed
    latest = graphql.json()["data"]["entity"]["latest"]
    rest = answered["items"][0]["result"]
    assert (latest["eventTime"], latest["featuresEventTime"]) == (
        rest["event_time"],
        rest["features_event_time"],
    )  # milliseconds since 1970: past a 32-bit Int
    assert latest["predictions"] == [
        {
            "kind": p["kind"],
            "metric": p["metric"],
            "horizonS": p["horizon_s"],
            "value": p["value"],
            "model": p["model"],
            "drivers": p["drivers"],
        }
        for p in first
    ]


def _stepped_host(
    entity: str, start_ms: int, steps: int
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A host of two metrics (memory leaking, CPU wobbling) stepped as the worker steps it:
    its latest PredictionBatch, the latest that had forecasts, and its FeatureVector."""
    pipeline = EntityPipeline(entity, ModelSet(pipeline_config(Settings(step_s=10.0))))
    latest = forecast = features = None
    for k in range(steps):
        t = start_ms + k * STEP_MS
        values = np.array([50 + k * 0.1, 30.0 + k % 7])
        pipeline.add(t, ["memory_percent", "cpu_percent"], values, np.array([100.0, 100.0]))
        features, latest, _ = step_many([pipeline], [t])[0]
        if "FORECAST" in latest["kinds"]:
            forecast = latest
    assert latest is not None and forecast is not None and features is not None
    return latest, forecast, features


def _as_answered(row: dict[str, Any], vector: dict[str, Any], top: int) -> dict[str, Any]:
    """A prediction row (:func:`prediction_rows`) as the API answers it, with the drivers
    it carries or else the features its model reads (their values from ``vector``)."""
    values = dict(zip(vector_names(vector), vector["values"], strict=True))
    carried = [(d["feature"], d["contribution"]) for d in row["drivers"]]
    read = [(name, None) for name in features_read(row["kind"], row["metric"])]
    return {
        "kind": row["kind"],
        "metric": row["metric"],
        "horizon_s": row["horizon_s"],
        **{k: _finite(row[k]) for k in ("value", "score", "lower", "upper")},
        "model": {"name": row["model"], "version": row["model_version"]},
        "shadow": row["model"] == ONLINE_FAILURE_MODEL,
        "drivers": [
            {"feature": f, "value": _finite(values.get(f)), "contribution": c}
            for f, c in (carried or read)[:top]
        ],
    }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


async def test_a_batch_of_many_entities_answers_each_as_alone_and_as_the_worker_stored_it(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    start = int(time.time() * 1000) - 3_600_000
    steps = (131, 151, 138, 160, 181, 145, 127, 170)  # forecasts at steps 1, 31, 61...
    hosts = {f"api-many-{unique}-{k}": n for k, n in enumerate(steps)}
    states = {host: _stepped_host(host, start, steps) for host, steps in hosts.items()}
    assert {"FORECAST" in latest["kinds"] for latest, _, _ in states.values()} == {True, False}
    store = FeatureStore(stack_settings.feature_store_url)
    try:  # the forecast batch first, so the latest is the one the predictions key keeps
        await store.put_predictions(
            b for latest, forecast, _ in states.values() for b in (forecast, latest)
        )
        await store.put_features(features for _, _, features in states.values())
    finally:
        await store.close()
    registry = ModelRegistry(str(tmp_path / "models"))
    _trained(registry)
    names = list(hosts)
    items: list[dict[str, Any]] = [{"entity": host} for host in names]
    items += [
        {"entity": names[0], "top": 0},
        {"entity": names[1], "top": 50, "kinds": ["FORECAST", "ANOMALY"]},
        {"entity": names[2], "metrics": ["cpu_percent"], "horizons_s": [3600]},
        {"entity": f"nobody-{unique}"},
    ]
    settings = stack_settings.replace(model_registry_url=registry.url)
    batch, alone, _ = await _batch_and_alone(settings, tmp_path, unique, items)

    assert batch.status_code == 200
    answered = batch.json()["items"]
    assert [i["status"] for i in answered] == [200] * (len(items) - 1) + [404]
    for item, single in zip(answered, alone, strict=True):
        assert item["status"] == single.status_code
        assert item["result"] == (single.json() if single.status_code == 200 else None)
    for host, item in zip(names, answered[: len(names)], strict=True):
        latest, forecast, features = states[host]
        rows = prediction_rows(latest_of_everything(latest, forecast) or {})
        stream = [p for p in item["result"]["predictions"] if p["model"]["name"] != FAILURE_RISK]
        assert stream == [_as_answered(row, features, 5) for row in rows], host
        assert {p["kind"] for p in stream} >= {"ANOMALY", "FORECAST", "FAILURE_RISK"}
        (xgb,) = [p for p in item["result"]["predictions"] if p["model"]["name"] == FAILURE_RISK]
        assert len(xgb["drivers"]) == 3


def _clock(message: str) -> str:
    """A message without the server's clock it names (each request reads its own)."""
    return re.sub(r"clock \(\d+\)", "clock", message)


def _series(start_ms: int, steps: int) -> dict[str, Any]:
    return {
        "metric": "memory_percent",
        "times": [start_ms + k * STEP_MS for k in range(steps)],
        "values": [40 + k * 0.05 for k in range(steps)],
    }


async def test_a_busy_redis_pool_is_named_in_the_503_not_taken_for_a_redis_outage(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    settings = stack_settings.replace(
        model_registry_url=str(tmp_path / "models"), api_redis_connections=1, api_redis_wait_s=0.2
    )
    async with running_api(settings, tmp_path, unique) as (server, keys):
        reader = client(server, keys["reader"])
        holder = server.store._redis.client()  # takes the pool's one connection and keeps it
        await holder.ping()
        with pytest.raises(ApiError) as busy:
            await asyncio.to_thread(reader.predict, f"nobody-{unique}")
        await holder.aclose()
        with pytest.raises(ApiError) as after:
            await asyncio.to_thread(reader.predict, f"nobody-{unique}")

    assert busy.value.status == 503
    assert "all 1 connections of the pool to Redis stayed busy for 0.2 s" in busy.value.message
    assert "FORESIGHT_API_REDIS_CONNECTIONS" in busy.value.message
    assert "did not answer" not in busy.value.message
    assert after.value.status == 404  # the connection back, the API answers again


def _batch(entity: str, t_ms: int, value: float) -> dict[str, Any]:
    columns = PredictionColumns()
    columns.add("ANOMALY", ("streaming_anomaly", "2"), ["cpu_percent"], [0], [value], [0.2])
    columns.add(
        "FORECAST", ("seasonal_forecaster", "1.0"), ["cpu_percent"], [3600], [value + 1],
        [0.0], [value - 1], [math.inf],
    )  # fmt: skip
    return {
        "prediction_id": f"{entity}@{t_ms}",
        "entity": entity,
        "event_time": t_ms,
        "emitted_at": t_ms,
        "latency_ms": 1.0,
        **columns.record(),
    }


async def test_history_and_features_as_of_come_from_clickhouse_through_the_sink(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    a, b, task, agent = (f"{n}-{unique}" for n in ("hist-a", "hist-b", "triage", "agent"))
    before, after = now - 60_000, now - 30_000
    records: list[tuple[str, dict[str, Any]]] = [
        *(
            ("prediction_batch", _batch(e, now - k * 10_000, float(k)))
            for e in (a, b)
            for k in (1, 2, 3)
        ),
        ("alert", _recent("alert", now - 20_000, entity=a, alert_id=f"x/{a}", dedup_key=f"x/{a}")),
        (
            "alert",
            _recent(
                "alert",
                now - 10_000,
                entity=a,
                alert_id=f"x/{a}",
                dedup_key=f"x/{a}",
                status="RESOLVED",
                ends_at=now - 10_000,
            ),
        ),
        ("metric_batch", _recent("metric_batch", now - 5_000, entity=a)),
        ("feature_vector", _recent("feature_vector", before, entity=a, values=[1.0] * 44)),
        ("feature_vector", _recent("feature_vector", after, entity=a, values=[2.0] * 44)),
        ("routing_decision", _recent("routing_decision", now - 20_000, task_type=task)),
        (
            "routing_decision",
            _recent("routing_decision", now - 10_000, task_type=task, agent="agent-03"),
        ),
        *(
            (
                "agent_event",
                _recent(
                    "agent_event",
                    now - k * 1000,
                    agent=agent,
                    phase=phase,
                    duration_ms=float(k * 100),
                ),
            )
            for k, phase in enumerate(("SUCCEEDED", "SUCCEEDED", "FAILED"), start=1)
        ),
    ]
    topic = f"test.api.history.{unique}"
    await _produce(stack_settings.kafka(), topic, 1, records)
    sink = SinkProcess(stack_settings, tmp_path / "chdb", topic, f"test-api-{unique}")
    try:
        await asyncio.to_thread(
            sink.wait_until,
            "every record stored",
            lambda: sink.count("features") == 2 and sink.count("agent_events") == 3
            and sink.count("predictions") == 12 and sink.count("routing_decisions") == 2,
        )  # fmt: skip
        settings = stack_settings.replace(
            sink_sql_port=sink.sql_port, credentials_file=str(sink.credentials)
        )
        async with running_api(settings, tmp_path, unique) as (server, keys):
            api = client(server, keys["reader"])

            def read() -> dict[str, Any]:
                first = api.prediction_history(f"hist-?-{unique}", kinds=["ANOMALY"], limit=4)
                assert first.page.next_offset == 4
                return {
                    "pages": [
                        first,
                        api.prediction_history(f"hist-?-{unique}", kinds=["ANOMALY"], offset=4),
                    ],
                    "forecasts": api.prediction_history(a, kinds=["FORECAST"], limit=1),
                    "resolved": api.alert_history(a, statuses=["RESOLVED"]),
                    "samples": api.sample_history(a, metric="memory_percent"),
                    "as_of": api.features_as_of(
                        [(a, before - 1), (a, before + 1), (a, now), (b, now)],
                        features=["cpu_percent:1m:count"],
                    ),
                    "at": api.features(a, as_of=after),
                    "advice": api.routing_decisions(task, latest=True),
                    "stats": api.agent_stats(agent),
                    "graphql": api.graphql(
                        "query($e: Name!) { entity(name: $e) { history(limit: 2) { rows "
                        "{ kind value eventTime } page { nextOffset } } alerts { rows "
                        "{ status startsAt eventTime } } } }",
                        {"e": a},
                    ),
                }

            got = await asyncio.to_thread(read)
    finally:
        sink.stop()

    first, second = got["pages"]
    rows = [(r.entity, r.event_time) for r in first.rows + second.rows]
    assert len(rows) == 6 and second.page.next_offset is None
    assert [t for _, t in rows] == sorted((t for _, t in rows), reverse=True)
    (forecast,) = got["forecasts"].rows
    assert (forecast.horizon_s, forecast.lower, forecast.upper) == (3600, 0.0, None)  # inf: None
    assert [r.status for r in got["resolved"].rows] == ["RESOLVED"]
    assert [(r.metric, r.value) for r in got["samples"].rows] == [("memory_percent", 40.0)]
    as_of = [None if r.vector is None else r.vector.event_time for r in got["as_of"].rows]
    assert as_of == [None, before, after, None]  # never a vector stamped after the moment
    assert got["as_of"].rows[2].vector.features == {"cpu_percent:1m:count": 2.0}
    assert got["at"].event_time == after and len(got["at"].features) == 44
    assert [(d.task_type, d.agent) for d in got["advice"].rows] == [(task, "agent-03")]
    (stats,) = got["stats"].rows
    assert (stats.succeeded, stats.failed, stats.p50_duration_ms) == (2, 1, 150.0)
    entity = got["graphql"]["data"]["entity"]
    assert [r["kind"] for r in entity["history"]["rows"]] == ["ANOMALY", "FORECAST"]
    assert entity["history"]["page"]["nextOffset"] == 2
    assert [r["status"] for r in entity["alerts"]["rows"]] == ["RESOLVED", "FIRING"]
    assert all(r["eventTime"] > 2**31 for r in entity["history"]["rows"])
    assert all(r["startsAt"] > 2**31 < r["eventTime"] for r in entity["alerts"]["rows"])


async def test_models_change_only_with_the_operate_role_and_leave_an_audit_trail(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    registry = ModelRegistry(str(tmp_path / "models"))
    _trained(registry)
    _trained(registry, promote=False)  # version 2, a candidate
    audit_topic = f"test.api.audit.{unique}"
    await ensure_topics(stack_settings.kafka(), [TopicRequest(audit_topic, 1, {})])
    settings = stack_settings.replace(model_registry_url=registry.url, audit_topic=audit_topic)
    async with running_api(settings, tmp_path, unique) as (server, keys):
        reader, operator = client(server, keys["reader"]), client(server, keys["operator"])

        def change() -> dict[str, Any]:
            with pytest.raises(ApiError) as refused:
                reader.promote(FAILURE_RISK, "2")
            listed = reader.models()
            promoted = operator.promote(FAILURE_RISK, "2")
            with pytest.raises(ApiError) as again:
                operator.promote(FAILURE_RISK, "2")
            with pytest.raises(ApiError) as unknown:
                operator.promote(FAILURE_RISK, "9")
            rolled = operator.rollback(FAILURE_RISK)
            return {
                "refused": refused.value,
                "listed": listed,
                "promoted": promoted,
                "again": again.value,
                "unknown": unknown.value,
                "rolled": rolled,
                "after": reader.model(FAILURE_RISK),
                "version": reader.model_version(FAILURE_RISK, "2"),
            }

        got = await asyncio.to_thread(change)
    events = await _read_all(settings.kafka(), audit_topic)

    assert got["refused"].status == 403 and "operate" in got["refused"].message
    (model,) = got["listed"].models
    assert (model.name, model.production, len(model.versions)) == (FAILURE_RISK, "1", 2)
    assert [u["action"] for u in got["promoted"].updates] == ["ARCHIVED", "PROMOTED"]
    assert got["promoted"].published
    assert got["again"].status == 409 and "already in production" in got["again"].message
    assert got["unknown"].status == 404
    assert [u["action"] for u in got["rolled"].updates] == ["ARCHIVED", "ROLLED_BACK"]
    assert got["after"].production == "1" and got["version"].stage == "archived"
    changes = [(e["action"], e["outcome"], e["key_name"]) for e in events]
    operator_name = f"operator-{unique}"
    assert changes == [
        ("auth.refused", "REFUSED", f"reader-{unique}"),
        ("model.promote", "SUCCEEDED", operator_name),
        ("model.promote", "FAILED", operator_name),
        ("model.promote", "FAILED", operator_name),
        ("model.rollback", "SUCCEEDED", operator_name),
    ]
    assert all(e["origin"] == "127.0.0.1" and e["service"] == "api" for e in events)


async def test_graphql_subscriptions_follow_the_live_feed(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    entity = f"live-{unique}"
    codec = Codec()
    async with running_api(stack_settings, tmp_path, unique) as (server, keys):
        url = f"ws://127.0.0.1:{server.port}/graphql"
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, subprotocols=[GRAPHQL_WS])
        ws = await connect(
            f"{url}?api_key={keys['reader']}",
            subprotocols=[GRAPHQL_WS],
        )
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        for name, query in (
            ("p", f'subscription {{ predictions(entity: "{entity}", kinds: [ANOMALY]) '
                  "{ id droppedBefore entity predictions { kind metric value } } }"),
            ("a", 'subscription { alerts(entity: "live-*", minSeverity: WARNING) '
                  "{ alert { entity status severity } } }"),
            ("bad", 'subscription { alerts(minSeverity: LOUD) { id } }'),
        ):  # fmt: skip
            await ws.send(
                json.dumps({"id": name, "type": "subscribe", "payload": {"query": query}})
            )
        bad = json.loads(await ws.recv())
        assert bad["id"] == "bad" and bad["type"] == "error" and "LOUD" in json.dumps(bad)
        producer = stack_settings.kafka().producer()
        await producer.start()
        try:
            for topic, schema_name, record in (
                (server.config.predictions_topic, "prediction_batch", _batch(entity, 1, 3.0)),
                (server.config.alerts_topic, "alert", _recent("alert", 1, entity=entity)),
                (server.config.alerts_topic, "alert",
                 _recent("alert", 2, entity=entity, severity="INFO", alert_id="quiet")),
            ):  # fmt: skip
                await producer.send_and_wait(topic, codec.encode(schema_name, record))
        finally:
            await producer.stop()
        got: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while len(got) < 2:
            assert time.monotonic() < deadline, got
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["type"] == "next":
                got[message["id"]] = message["payload"]["data"]
        health = server.health()
        await ws.close()

    live = got["p"]["predictions"]
    assert live["entity"] == entity and live["droppedBefore"] == 0 and live["id"] > 0
    assert live["predictions"] == [{"kind": "ANOMALY", "metric": "cpu_percent", "value": 3.0}]
    assert got["a"]["alerts"]["alert"] == {
        "entity": entity,
        "status": "FIRING",
        "severity": "WARNING",
    }
    assert health["subscriptions"] == 2
    assert refused.value.response.status_code == 401
