"""The intelligence API in process, with no service running: predictions from a window of
samples (the worker's own, compared record by record), what every route refuses and how,
keys and roles, batches, GraphQL's bounds and the OpenAPI document.

Requests go through the typed client (:mod:`streams.api.client`) over Starlette's test
transport (no socket). The routes that need Redis, ClickHouse or Kafka are in
``tests/integration/test_api.py``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from connectors.audit import AuditTrail
from connectors.clickhouse import ChdbStore, sql_string
from connectors.http.auth import Gatekeeper, RateLimits
from connectors.http.errors import ApiError
from connectors.http.keys import OPERATE, READ, WRITE, KeysFile
from connectors.redis_store import latest_of_everything
from schemas.predictions import prediction_rows
from streams import topics
from streams.api import graphql, schema
from streams.api.client import ApiClient, prediction_request
from streams.api.history import glob_regex
from streams.api.server import ApiConfig, ApiServer
from streams.engine import ONLINE_FAILURE_MODEL
from streams.settings import Settings
from tests.streams.test_engine import Changelog, Feed, _decoded, _engine

STEP_MS = 10_000


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    """A key per role set, by name."""
    file = KeysFile(tmp_path / "keys.json")
    return {
        name: file.create(name, roles)[1]
        for name, roles in (("reader", [READ]), ("writer", [WRITE]), ("operator", [READ, OPERATE]))
    }


@pytest.fixture
def server(tmp_path: Path, keys: dict[str, str]) -> ApiServer:
    settings = Settings(
        step_s=10.0,
        model_registry_url=str(tmp_path / "models"),
        feature_store_url="redis://127.0.0.1:9/0",  # nothing answers: these tests never ask
        kafka_bootstrap_servers="127.0.0.1:9",
    )
    limits = RateLimits(per_key=0, per_address=0, auth_failures=0)
    gatekeeper = Gatekeeper(KeysFile(tmp_path / "keys.json"), limits)
    audit = AuditTrail(settings.kafka(), settings.audit_topic, "api")
    return ApiServer(settings, ApiConfig(gatekeeper), audit)


@pytest.fixture
def http(server: ApiServer) -> Iterator[TestClient]:
    with TestClient(server.app(), raise_server_exceptions=False) as client:
        yield client


def client_with(http: TestClient, key: str | None) -> ApiClient:
    http.headers.clear()
    if key:
        http.headers["Authorization"] = f"Bearer {key}"
    return ApiClient(http=http)


def window(start_ms: int, steps: int) -> list[schema.SeriesWindow]:
    """A host's memory leaking and its CPU wobbling, one sample per step."""
    times = [start_ms + k * STEP_MS for k in range(steps)]
    return [
        schema.SeriesWindow(
            metric="memory_percent", times=times, values=[40 + k * 0.05 for k in range(steps)]
        ),
        schema.SeriesWindow(
            metric="cpu_percent", times=times, values=[20.0 + k % 7 for k in range(steps)]
        ),
    ]


def _key(p: dict[str, Any]) -> tuple[Any, ...]:
    return (p["kind"], p["metric"], p["model"], p["model_version"], p["horizon_s"])


def test_a_window_gets_the_predictions_the_worker_makes(
    http: TestClient, keys: dict[str, str]
) -> None:
    start = (int(time.time()) - 3600) * 1000
    steps = 200  # past the anomaly detector's warm-up (120 steps), with forecasts every 5 min
    samples = window(start, steps)
    engine, feed = _engine(Changelog()), Feed()
    records = [
        feed.record("web-1", t, {s.metric: s.values[k] for s in samples})
        for k, t in enumerate(samples[0].times)
    ]
    batches = _decoded(engine.metrics(records, time.time()), topics.PREDICTIONS.name)
    with_forecasts = [b for b in batches if "FORECAST" in b["kinds"]]
    worker = latest_of_everything(batches[-1], with_forecasts[-1])
    assert worker is not None

    answer = client_with(http, keys["reader"]).predict("web-1", window=samples, top=3)

    expected = {_key(p): p for p in prediction_rows(worker) if p["model"] != ONLINE_FAILURE_MODEL}
    got = {
        (p.kind.value, p.metric, p.model.name, p.model.version, p.horizon_s): p
        for p in answer.predictions
    }
    assert answer.source == "window" and answer.event_time == batches[-1]["event_time"]
    assert set(got) == set(expected)
    assert {k[0] for k in got} >= {"ANOMALY", "FORECAST", "FAILURE_RISK"}
    for key, p in expected.items():
        mine = got[key]
        assert (mine.value, mine.score, mine.lower, mine.upper) == pytest.approx(
            (p["value"], p["score"], p["lower"], p["upper"]), nan_ok=True
        ), key
    key = ("FAILURE_RISK", "memory_percent", "local_trend", "1", 1800)
    risk, carried = got[key], expected[key]["drivers"]
    assert [(d.feature, d.contribution) for d in risk.drivers] == [
        (c["feature"], c["contribution"]) for c in carried
    ]
    assert {d.feature for d in risk.drivers} == {
        "memory_percent:1m:last",
        "memory_percent:5m:slope",
        "memory_percent:15m:slope",
    }
    level = next(d for d in risk.drivers if d.feature == "memory_percent:1m:last")
    assert level.value == pytest.approx(40 + (steps - 1) * 0.05)


def test_windows_replayed_at_once_each_get_their_own_answer(server: ApiServer) -> None:
    """Batches with windows replay in threads, side by side, over one set of model rows:
    each answer must be the one its window gets alone."""
    predictor = server.service.predictor
    start = (int(time.time()) - 3600) * 1000
    requests = [
        prediction_request(f"web-{k}", window(start + k * 1_000, 60 + 20 * k)) for k in range(8)
    ]

    def answers(results: list[Any]) -> list[Any]:
        return [[(p["kind"], p["metric"], p["value"]) for p in r["predictions"]] for r in results]

    alone = [answers(asyncio.run(predictor.predict([r]))) for r in requests]

    async def at_once() -> list[list[Any]]:
        return await asyncio.gather(*(predictor.predict([r]) for r in requests))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns as often as they can
    try:
        for _ in range(3):
            assert [answers(r) for r in asyncio.run(at_once())] == alone
    finally:
        sys.setswitchinterval(interval)


def test_filters_cut_the_answer_down(http: TestClient, keys: dict[str, str]) -> None:
    start = (int(time.time()) - 3600) * 1000
    client = client_with(http, keys["reader"])
    answer = client.predict(
        "web-1",
        window=window(start, 80),
        kinds=["FORECAST"],
        metrics=["memory_percent"],
        horizons_s=[3600],
        top=0,
    )
    assert [(p.kind, p.metric, p.horizon_s) for p in answer.predictions] == [
        ("FORECAST", "memory_percent", 3600)
    ]
    assert answer.predictions[0].drivers == []


BAD_INPUT = [
    ("POST", "/v1/predict/performance", {}, "body.entity"),
    ("POST", "/v1/predict/performance", {"entity": ""}, "body.entity"),
    ("POST", "/v1/predict/performance", {"entity": "x", "top": 99}, "body.top"),
    ("POST", "/v1/predict/performance", {"entity": "x", "kinds": ["GUESS"]}, "body.kinds.0"),
    ("POST", "/v1/predict/performance", {"entity": "x", "horizons_s": [60]}, "body.horizons_s.0"),
    ("POST", "/v1/predict/performance", {"entity": "x", "entitty": "y"}, "body.entitty"),
    (
        "POST",
        "/v1/predict/performance",
        {"entity": "x", "window": [{"metric": "m", "times": [1, 2], "values": [1.0]}]},
        "body.window.0",
    ),
    (
        "POST",
        "/v1/predict/performance",
        {"entity": "x", "window": [{"metric": "m", "times": [-1], "values": [1.0]}]},
        "body.window.0.times.0",
    ),
    (
        "POST",
        "/v1/predict/performance",
        {"entity": "x", "window": [{"metric": "m", "times": [1], "values": ["NaN"]}]},
        "body.window.0.values.0",
    ),
    ("POST", "/v1/predict/batch", {"items": []}, "body.items"),
    ("POST", "/v1/predict/batch", {"items": [{"entity": "x"}] * 1001}, "body.items"),
    ("GET", "/v1/history/predictions?limit=0", None, "query.limit"),
    ("GET", "/v1/history/predictions?kind=GUESS", None, "query.kind.0"),
    ("GET", "/v1/history/predictions?since=20&until=10", None, "query.since"),
    ("GET", "/v1/history/alerts?severity=LOUD", None, "query.severity.0"),
    ("GET", "/v1/history/samples?offset=-1", None, "query.offset"),
    ("GET", "/v1/features", None, "query.entity"),
    ("GET", "/v1/features?entity=x&as_of=soon", None, "query.as_of"),
    ("POST", "/v1/features/as-of", {"rows": [{"entity": "x"}]}, "body.rows.0.as_of"),
    ("GET", "/v1/models/bad%20name", None, "path.name"),
    ("GET", "/v1/models/m/versions/0", None, "path.version"),
    ("GET", "/v1/routing/decisions?latest=maybe", None, "query.latest"),
    ("GET", "/v1/agents/stats?limit=5000", None, "query.limit"),
    ("GET", "/v1/entities?limit=0", None, "query.limit"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), BAD_INPUT)
def test_bad_input_is_a_422_naming_the_field(
    http: TestClient,
    keys: dict[str, str],
    method: str,
    path: str,
    body: Any,
    field: str,
) -> None:
    http.headers["Authorization"] = f"Bearer {keys['reader']}"
    response = http.request(method, path, json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "unprocessable_entity"
    assert any(d["field"] == field for d in error["details"]), error["details"]
    assert all(d["reason"] for d in error["details"])


def test_a_window_from_the_future_is_refused_naming_its_times(
    http: TestClient, keys: dict[str, str]
) -> None:
    far = (int(time.time()) + 7200) * 1000
    with pytest.raises(ApiError) as refused:
        client_with(http, keys["reader"]).predict("x", window=window(far, 3))
    assert refused.value.status == 422
    assert "window.0.times" in refused.value.message and "FORESIGHT_MAX_FUTURE_S" in str(
        refused.value
    )


def test_a_batch_answers_each_item_on_its_own(http: TestClient, keys: dict[str, str]) -> None:
    now_s = int(time.time())
    client = client_with(http, keys["reader"])
    items = [
        prediction_request("a", window(now_s * 1000 - 600_000, 30), kinds=["ANOMALY"]),
        prediction_request("b", window((now_s + 7200) * 1000, 3)),
        prediction_request("c", window(now_s * 1000 - 600_000, 30), metrics=["cpu_percent"]),
    ]
    answer = client.predict_batch(items)
    assert [(i.index, i.status) for i in answer.items] == [(0, 200), (1, 422), (2, 200)]
    assert (answer.succeeded, answer.failed) == (2, 1)
    first, failed, third = answer.items
    assert first.result is not None and {p.kind for p in first.result.predictions} == {"ANOMALY"}
    assert failed.error is not None and failed.error.code == "unprocessable_entity"
    assert third.result is not None
    assert {p.metric for p in third.result.predictions} == {"cpu_percent"}


def test_every_route_needs_a_key_with_its_role(http: TestClient, keys: dict[str, str]) -> None:
    cases: list[tuple[str | None, Callable[[ApiClient], object], int]] = [
        (None, lambda c: c.models(), 401),
        ("wrong-key", lambda c: c.predict("x"), 401),
        (keys["writer"], lambda c: c.models(), 403),
        (keys["reader"], lambda c: c.promote("failure_risk", "1"), 403),
        (keys["reader"], lambda c: c.rollback("failure_risk"), 403),
        (keys["writer"], lambda c: c.graphql("{ models { name } }"), 403),
    ]
    for key, call, status in cases:
        with pytest.raises(ApiError) as refused:
            call(client_with(http, key))
        assert refused.value.status == status
    assert client_with(http, keys["reader"]).models().models == []
    with pytest.raises(ApiError) as unknown:
        client_with(http, keys["operator"]).promote("failure_risk", "1")
    assert unknown.value.status == 404 and "no model 'failure_risk'" in unknown.value.message
    open_paths = [http.get(path).status_code for path in ("/health", "/metrics", "/openapi.json")]
    assert open_paths[1:] == [200, 200]  # /health is 503 here: no feed runs


def test_graphql_bounds_the_depth_cost_and_aliases_of_a_query(
    http: TestClient, keys: dict[str, str]
) -> None:
    client = client_with(http, keys["reader"])
    deep = "{ entities { latest { predictions { model { name } drivers { feature } } } } }"
    assert "errors" not in client.graphql("{ models { name } }")
    nested = '{ a: entity(name: "x") { history { rows { model { name } } } } }'
    too_deep = (
        '{ entity(name: "x") { ' + "history { rows { model { " * 3 + "name" + " } } }" * 3 + " } }"
    )
    costly = (
        "{ entities(limit: 1000) { name history(limit: 1000) { rows { entity metric value } } } }"
    )
    aliased = "{ " + " ".join(f"m{i}: models {{ name }}" for i in range(30)) + " }"
    for query, complaint in (
        (too_deep, "exceeds maximum operation depth"),
        (costly, "over the limit of 20,000"),
        (aliased, "aliases"),
        ("{ entities { nope } }", "Cannot query field 'nope'"),
        ("{ entities(limit: 0) { name } }", "rows per page: an integer from 1 to 1,000"),
    ):
        errors = client.graphql(query).get("errors") or []
        assert any(complaint in e["message"] for e in errors), (query, errors)
    assert client.graphql(deep)  # valid; what it answers needs Redis (the integration test)
    assert client.graphql(nested)


def test_graphql_types_every_epoch_millisecond_as_long() -> None:
    """Times are milliseconds since 1970, past GraphQL's 32-bit ``Int``: a field the REST
    schema types ``Long`` is ``Long`` in GraphQL too, or selecting it fails on real data."""
    types = {t.name: t for t in graphql.SCHEMA._schema.type_map.values() if hasattr(t, "fields")}
    checked = 0
    for made in vars(graphql).values():
        model = getattr(made, "_pydantic_type", None)
        if model is None:
            continue
        fields = types[made.__strawberry_definition__.name].fields
        for name, info in model.model_fields.items():
            camel = re.sub(r"_(\w)", lambda m: m.group(1).upper(), name)
            if "Long" in repr(info.annotation) and camel in fields:
                assert str(fields[camel].type).rstrip("!") == "Long", (made, camel)
                checked += 1
    assert checked >= 6  # predictions, their rows and alerts carry times


def test_the_openapi_document_describes_every_route_and_the_error_body(
    http: TestClient,
) -> None:
    document = http.get("/openapi.json").json()
    paths = document["paths"]
    assert {
        "/v1/predict/performance",
        "/v1/predict/batch",
        "/v1/entities",
        "/v1/history/predictions",
        "/v1/history/alerts",
        "/v1/history/samples",
        "/v1/alerts/firing",
        "/v1/features",
        "/v1/features/as-of",
        "/v1/models",
        "/v1/models/{name}",
        "/v1/models/{name}/versions/{version}",
        "/v1/models/{name}/promote",
        "/v1/models/{name}/rollback",
        "/v1/route",
        "/v1/routing/decisions",
        "/v1/agents/stats",
        "/health",
        "/metrics",
    } == set(paths)
    predict = paths["/v1/predict/performance"]["post"]["responses"]
    assert predict["4XX"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "422" not in predict  # FastAPI's own validation body is not what this server sends
    horizons = document["components"]["schemas"]["Horizon"]["enum"]
    assert horizons == [300, 3600, 86400]


def test_entity_globs_match_in_clickhouse_as_fnmatch_does(tmp_path: Path) -> None:
    """The history's entity globs run as RE2 regular expressions; punctuation and letters
    beyond ASCII must compile there and match what fnmatch matches."""
    globs = ["web-*", "db-?.eu", "[!a-c]x", "[oops", "é¥-*", "a+b(c)|d", "ü?\\*"]
    names = ["web-1", "db-1.eu", "dx", "ax", "[oops", "é¥-1", "e¥-1", "a+b(c)|d", "üx\\y"]
    store = ChdbStore(str(tmp_path / "chdb"))
    try:
        for glob in globs:
            regex = sql_string(glob_regex(glob))
            got = store.query(
                "SELECT " + ", ".join(f"match({sql_string(n)}, {regex})" for n in names)
            ).rows[0]
            assert [bool(m) for m in got] == [fnmatch.fnmatchcase(n, glob) for n in names], glob
    finally:
        store.close()


def test_the_cli_says_why_an_online_answer_has_no_predictions() -> None:
    from streams.commands.predict import describe

    answer = {"entity": "web-1", "source": "online", "event_time": 0, "features_event_time": 0}
    stale = schema.PredictResponse.model_validate({**answer, "predictions": []})
    assert "no predictions: the stream's latest predictions" in describe(stale)
    forecast = {
        "kind": "FORECAST", "metric": "cpu", "horizon_s": 86_400, "value": 40.0, "score": None,
        "lower": None, "upper": None, "shadow": False, "drivers": [],
        "model": {"name": "seasonal_forecaster", "version": "1.0"},
    }  # fmt: skip
    shown = describe(schema.PredictResponse.model_validate({**answer, "predictions": [forecast]}))
    assert "no predictions" not in shown and "1d" in shown and " - " in shown
