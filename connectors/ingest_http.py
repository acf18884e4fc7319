"""HTTP ingestion: Prometheus remote_write and JSON agent events, produced to Kafka.

Endpoints (aiohttp, on the ``FORESIGHT_BIND_HOST``:``FORESIGHT_INGEST_PORT`` address):

* ``POST /api/v1/write``: Prometheus remote_write 1.0 (snappy + protobuf). Decoded into
  per-entity MetricBatch records (:mod:`connectors.remote_write`), produced keyed by entity,
  and answered ``204`` only once the broker acknowledged every record, so a ``204`` means
  durable. A malformed body gets ``400`` with the reason as text and produces nothing; a
  broker failure gets ``503``, which Prometheus retries (delivery is at-least-once).
* ``POST /api/v1/agent-events``: one AgentEvent JSON object or a list, authenticated by an
  API key (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``). Every event is checked
  against the AgentEvent schema and the rules below before anything is produced: one bad
  event rejects the request with ``400`` and ``{"errors": [{"index", "field", "reason"}]}``
  for every problem found; otherwise the events are produced keyed by agent and the answer
  is ``202`` with ``{"accepted": n}``.
* ``GET /health`` and ``GET /metrics`` (Prometheus text format).

Agent event rules: the fields are the schema's, no others; strings are non-empty and at most
256 characters (label keys and values too, at most 64 labels); ``phase`` is one of the
schema's enum symbols; ``event_time`` is integer epoch milliseconds, not negative, and not
more than an hour ahead of the receiver's clock; the optional doubles (``duration_ms``,
``cost``) are finite and not negative.

Topic names and the Kafka bootstrap are parameters: connectors do not import ``streams``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.helpers import parse_mimetype
from aiohttp.typedefs import Handler
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors.prometheus import EVENTS_OUT, INGEST_REQUESTS, INGEST_SAMPLES_DROPPED
from connectors.remote_write import RemoteWriteDecoder
from schemas.codec import Codec, Record, current_schema

log = logging.getLogger(__name__)

WRITE_PATH = "/api/v1/write"
AGENT_EVENTS_PATH = "/api/v1/agent-events"
MAX_TEXT = 256
MAX_LABELS = 64
MAX_FUTURE_MS = 3_600_000

# -- agent event validation (pure) ---------------------------------------------------------


@dataclass(frozen=True)
class FieldError:
    """One reason an event was refused: which event (``index``), which field, and why."""

    index: int | None
    field: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "reason": self.reason}


Check = Callable[[Any, int], str | None]  # (value, now_ms) -> reason, or None when valid


def _text_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__} {value!r:.60}"
    if not value:
        return "must not be empty"
    if len(value) > MAX_TEXT:
        return f"is {len(value)} characters long; at most {MAX_TEXT} are allowed"
    return None


def _check_text(value: Any, now_ms: int) -> str | None:
    return _text_problem(value)


def _check_epoch_ms(value: Any, now_ms: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer of epoch milliseconds, got {value!r:.60}"
    if value < 0:
        return f"must not be negative, got {value}"
    if value > now_ms + MAX_FUTURE_MS:
        return (
            f"{value} is {(value - now_ms) / 3_600_000:.1f} h ahead of the receiver's clock "
            f"({now_ms}); at most 1 h is allowed: send epoch milliseconds (not microseconds) "
            "and check the sender's clock"
        )
    return None


def _check_measure(value: Any, now_ms: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, got {value!r:.60}"
    if not math.isfinite(value):
        return f"must be finite, got {value}"
    if value < 0:
        return f"must not be negative, got {value}"
    return None


def _check_labels(value: Any, now_ms: int) -> str | None:
    if not isinstance(value, dict):
        return f"must be an object of string labels, got {type(value).__name__}"
    if len(value) > MAX_LABELS:
        return f"has {len(value)} labels; at most {MAX_LABELS} are allowed"
    for key, label in value.items():
        problem = _text_problem(key)
        if problem:
            return f"label key {key!r:.60} {problem}"
        problem = _text_problem(label)
        if problem:
            return f"label {key!r} {problem}"
    return None


def _enum_check(symbols: Sequence[str]) -> Check:
    def check(value: Any, now_ms: int) -> str | None:
        if value in symbols:
            return None
        return f"must be one of {', '.join(symbols)}; got {value!r:.60}"

    return check


def _check_for(avro_type: Any) -> Check:
    """The validation rule for an Avro field type (a nullable union checks its branch)."""
    if isinstance(avro_type, list) and len(avro_type) == 2 and avro_type[0] == "null":
        return _check_for(avro_type[1])
    if avro_type == "string":
        return _check_text
    if avro_type == "double":
        return _check_measure
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "enum":
            return _enum_check(tuple(avro_type["symbols"]))
        if avro_type.get("logicalType") == "timestamp-millis":
            return _check_epoch_ms
        if avro_type.get("type") == "map" and avro_type.get("values") == "string":
            return _check_labels
    raise TypeError(
        f"AgentEvent field type {avro_type!r} has no HTTP validation rule: add one to "
        "connectors.ingest_http._check_for"
    )


@dataclass(frozen=True)
class _FieldRule:
    check: Check
    required: bool
    default: Any = None


def _agent_event_rules() -> dict[str, _FieldRule]:
    """One rule per AgentEvent schema field: the schema decides names, types and defaults."""
    rules: dict[str, _FieldRule] = {}
    for avro_field in current_schema("agent_event").raw["fields"]:
        rules[avro_field["name"]] = _FieldRule(
            check=_check_for(avro_field["type"]),
            required="default" not in avro_field,
            default=avro_field.get("default"),
        )
    return rules


_RULES = _agent_event_rules()


def validate_agent_events(payload: Any, now_ms: int) -> tuple[list[Record], list[FieldError]]:
    """Check a decoded JSON body (one event or a list) against the AgentEvent rules.

    Returns the records, with absent optional fields set to their schema defaults, and every
    problem found; the caller produces the records only when there is no problem.
    """
    events = payload if isinstance(payload, list) else [payload]
    if not events:
        return [], [FieldError(None, None, "the list is empty: send at least one event")]
    records: list[Record] = []
    errors: list[FieldError] = []
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            errors.append(
                FieldError(index, None, f"must be a JSON object, got {type(event).__name__}")
            )
            continue
        for name in sorted(set(event) - set(_RULES)):
            errors.append(
                FieldError(index, name, f"unknown field; AgentEvent fields are {sorted(_RULES)}")
            )
        record: Record = {}
        for name, rule in _RULES.items():
            value = event.get(name)
            if value is None:
                if rule.required:
                    errors.append(FieldError(index, name, "is required"))
                record[name] = rule.default.copy() if isinstance(rule.default, dict) else None
                continue
            problem = rule.check(value, now_ms)
            if problem:
                errors.append(FieldError(index, name, problem))
            record[name] = value
        records.append(record)
    return records, errors


# -- the server ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestConfig:
    """Where the ingestion server listens, where it produces, and whom it lets in.

    ``entity_labels`` and ``api_keys`` are the parsed ``FORESIGHT_ENTITY_LABELS`` and
    ``FORESIGHT_API_KEYS`` settings; ``port`` 0 picks a free port (see
    :attr:`IngestServer.port`).
    """

    bootstrap_servers: str
    metrics_topic: str
    agent_events_topic: str
    api_keys: frozenset[str]
    entity_labels: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 9201
    max_body_bytes: int = 16 << 20


def _api_key(request: web.Request) -> str | None:
    authorization = request.headers.get("Authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("X-API-Key")


def _errors_response(status: int, errors: Sequence[FieldError]) -> web.Response:
    return web.json_response({"errors": [e.as_dict() for e in errors]}, status=status)


@web.middleware
async def _count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    endpoint = resource.canonical if resource is not None else "unmatched"
    try:
        response = await handler(request)
    except web.HTTPException as error:
        INGEST_REQUESTS.labels(endpoint, str(error.status)).inc()
        raise
    INGEST_REQUESTS.labels(endpoint, str(response.status)).inc()
    return response


class IngestServer:
    """The ingestion HTTP server and its Kafka producer; ``async with`` starts and stops both.

    Examples
    --------
    >>> config = IngestConfig("127.0.0.1:9092", "telemetry.metrics", "telemetry.agent-events",
    ...                       frozenset({"dev-key"}), ("instance", "job"), port=0)
    >>> IngestServer(config).config.port
    0
    """

    def __init__(self, config: IngestConfig, codec: Codec | None = None) -> None:
        self.config = config
        self.codec = codec or Codec()
        self.decoder = RemoteWriteDecoder(config.entity_labels)
        self._producer: AIOKafkaProducer | None = None
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful when the configured port is 0)."""
        if self._runner is None:
            raise RuntimeError("the ingest server is not started")
        port: int = self._runner.addresses[0][1]
        return port

    def application(self) -> web.Application:
        """The aiohttp application with every route."""
        app = web.Application(
            client_max_size=self.config.max_body_bytes, middlewares=[_count_requests]
        )
        app.router.add_post(WRITE_PATH, self.remote_write)
        app.router.add_post(AGENT_EVENTS_PATH, self.agent_events)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def start(self) -> None:
        """Connect the producer, then listen; raises if Kafka or the address is unavailable."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.config.bootstrap_servers, acks="all", linger_ms=5
        )
        await producer.start()
        self._producer = producer
        try:
            runner = web.AppRunner(self.application(), access_log=None)
            await runner.setup()
            self._runner = runner
            await web.TCPSite(runner, self.config.host, self.config.port).start()
        except BaseException:
            await self.stop()
            raise
        log.info("ingesting on http://%s:%d", self.config.host, self.port)

    async def stop(self) -> None:
        """Stop listening, then flush and close the producer."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> IngestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _produce(self, topic: str, keyed: Sequence[tuple[str, bytes]]) -> None:
        """Produce every ``(key, value)`` and wait until the broker acknowledged them all."""
        if self._producer is None:
            raise RuntimeError("the ingest server is not started")
        pending = [
            await self._producer.send(topic, value, key=key.encode()) for key, value in keyed
        ]
        await asyncio.gather(*pending)
        EVENTS_OUT.labels(topic).inc(len(keyed))

    async def remote_write(self, request: web.Request) -> web.Response:
        """``POST /api/v1/write``: Prometheus remote_write 1.0."""
        encoding = request.headers.get("Content-Encoding", "")
        if encoding.lower() != "snappy":
            return web.Response(
                status=415,
                text=f"Content-Encoding is {encoding or 'missing'!r}; remote_write 1.0 bodies "
                "must be sent with Content-Encoding: snappy",
            )
        mime = parse_mimetype(request.headers.get("Content-Type", ""))
        proto = mime.parameters.get("proto", "prometheus.WriteRequest")
        if (mime.type, mime.subtype) != ("application", "x-protobuf") or (
            proto != "prometheus.WriteRequest"
        ):
            return web.Response(
                status=415,
                text=f"Content-Type is {request.headers.get('Content-Type', 'missing')!r}; "
                "this receiver speaks remote_write 1.0: application/x-protobuf "
                "(prometheus.WriteRequest)",
            )
        body = await request.read()
        try:
            decoded = self.decoder.decode(body, now_ms=int(time.time() * 1000))
            values = [(b["entity"], self.codec.encode("metric_batch", b)) for b in decoded.batches]
        except ValueError as error:  # RemoteWriteError, or a record the schema refuses
            log.info("refused a remote_write body of %d bytes: %s", len(body), error)
            return web.Response(status=400, text=str(error))
        for reason, count in decoded.summary.dropped().items():
            if count:
                INGEST_SAMPLES_DROPPED.labels(reason).inc(count)
        try:
            await self._produce(self.config.metrics_topic, values)
        except KafkaError as error:
            log.warning(
                "remote_write: producing to %s failed: %r", self.config.metrics_topic, error
            )
            return web.Response(status=503, text=f"Kafka did not accept the samples: {error!r}")
        return web.Response(status=204)

    async def agent_events(self, request: web.Request) -> web.Response:
        """``POST /api/v1/agent-events``: JSON AgentEvents, behind an API key."""
        key = _api_key(request)
        given = (key or "").encode()
        if not given or not any(
            hmac.compare_digest(given, k.encode()) for k in self.config.api_keys
        ):
            response = _errors_response(
                401,
                [
                    FieldError(
                        None,
                        None,
                        "missing or unknown API key: send Authorization: Bearer KEY or "
                        "X-API-Key: KEY with a key from FORESIGHT_API_KEYS",
                    )
                ],
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        try:
            payload = json.loads(await request.read())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return _errors_response(400, [FieldError(None, None, f"body is not JSON: {error}")])
        records, errors = validate_agent_events(payload, now_ms=int(time.time() * 1000))
        if errors:
            return _errors_response(400, errors)
        values = [(r["agent"], self.codec.encode("agent_event", r)) for r in records]
        try:
            await self._produce(self.config.agent_events_topic, values)
        except KafkaError as error:
            log.warning(
                "agent events: producing to %s failed: %r", self.config.agent_events_topic, error
            )
            return _errors_response(
                503, [FieldError(None, None, f"Kafka did not accept the events: {error!r}")]
            )
        return web.json_response({"accepted": len(values)}, status=202)

    async def health(self, request: web.Request) -> web.Response:
        """``GET /health``: 200 while the server and its producer run."""
        return web.json_response({"status": "ok"})

    async def metrics(self, request: web.Request) -> web.Response:
        """``GET /metrics``: every Foresight metric of this process."""
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
