"""HTTP ingestion: Prometheus remote_write, JSON agent events and code-quality snapshots,
produced to Kafka.

Endpoints (on the shared HTTP stack, :mod:`connectors.http`, at the ``FORESIGHT_BIND_HOST``:
``FORESIGHT_INGEST_PORT`` address); both writes need a key with the ``write`` role
(``Authorization: Bearer KEY``, ``Authorization: Basic`` with the key as password, or
``X-API-Key: KEY``):

* ``POST /api/v1/write``: Prometheus remote_write 1.0 (snappy + protobuf). Decoded into
  per-entity MetricBatch records (:mod:`connectors.remote_write`), produced keyed by entity,
  and answered ``204`` only once the broker acknowledged every record, so a ``204`` means
  durable. A malformed body gets ``400`` with the reason and produces nothing; a broker
  failure gets ``503``, which Prometheus retries (delivery is at-least-once).
* ``POST /api/v1/agent-events``: one AgentEvent JSON object or a list. Every event is checked
  against the AgentEvent schema and the rules below before anything is produced: one bad
  event refuses the request with ``400``, every problem found listed in the error's
  ``details`` as ``{"index", "field", "reason"}``; otherwise the events are produced keyed by
  agent and the answer is ``202`` with ``{"accepted": n}``.
* ``POST /api/v1/quality``: one CodeQualitySnapshot JSON object or a list, checked by the
  rules of :mod:`schemas.quality` (the quality processor checks records from Kafka with the
  same); one bad snapshot refuses the request with ``400`` and every problem in ``details``;
  otherwise they are produced keyed by repository, in the order sent, and the answer is
  ``202`` with ``{"accepted": n}``.
* ``GET /health`` and ``GET /metrics`` (Prometheus text format), without a key.

Every refusal is the one error body of :mod:`connectors.http.errors`.

PII rules (:mod:`connectors.pii`) scrub what every write carries before it is produced: the
labels of every remote_write series, before its entity and name are taken from them, the
text fields and labels of every agent event, and the repository and source of every
code-quality snapshot, after they are validated.

Agent event rules: the fields are the schema's, no others; strings are valid Unicode,
non-empty and at most 256 characters (label keys and values too, at most 64 labels);
``phase`` is one of the schema's enum symbols; ``event_time`` is integer epoch milliseconds,
not negative, and not more than an hour ahead of the receiver's clock; the optional doubles
(``duration_ms``, ``cost``) are finite, not negative, and fit a double.

With a certificate in ``tls`` it serves https only. Topic names and the Kafka configuration are
parameters: connectors do not import ``streams``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from connectors.dependencies import Dependency, KafkaProbe, health_report, watch
from connectors.http.app import HttpServer, create_app, require
from connectors.http.auth import Gatekeeper
from connectors.http.errors import ApiError
from connectors.http.keys import WRITE
from connectors.http.tls import TlsConfig
from connectors.kafka_clients import KafkaConfig
from connectors.pii import Scrubber
from connectors.prometheus import EVENTS_OUT, INGEST_REQUESTS, INGEST_SAMPLES_DROPPED
from connectors.remote_write import RemoteWriteDecoder
from schemas.codec import Codec, Record, current_schema
from schemas.field_rules import control_problem, epoch_ms_problem, measure_problem, text_problem
from schemas.quality import SCHEMA as QUALITY_SCHEMA
from schemas.quality import snapshot_problems, snapshot_record

log = logging.getLogger(__name__)

WRITE_PATH = "/api/v1/write"
AGENT_EVENTS_PATH = "/api/v1/agent-events"
QUALITY_PATH = "/api/v1/quality"
MAX_TEXT = 256
MAX_LABELS = 64
MAX_FUTURE_MS = 3_600_000  # FORESIGHT_MAX_FUTURE_S's default; the server passes the setting
_MAX_INT = 2**31 - 1  # Avro's int

# -- agent event validation (pure) ---------------------------------------------------------


@dataclass(frozen=True)
class FieldError:
    """One reason an event was refused: which event (``index``), which field, and why."""

    index: int | None
    field: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "reason": self.reason}


@dataclass(frozen=True)
class _Received:
    """When a body arrived, and how far from then its event times may be: the limits the
    worker holds records to, so the door does not accept what the worker dead-letters."""

    now_ms: int
    max_future_ms: int
    max_age_ms: int | None


Check = Callable[[Any, _Received], str | None]  # the reason a value is refused, or None


def _text_problem(value: Any) -> str | None:
    return text_problem(value, MAX_TEXT)


def _check_text(value: Any, received: _Received) -> str | None:
    return _text_problem(value)


def _check_name(value: Any, received: _Received) -> str | None:
    return _text_problem(value) or control_problem(value)


def _check_epoch_ms(value: Any, received: _Received) -> str | None:
    return epoch_ms_problem(value, received.now_ms, received.max_future_ms, received.max_age_ms)


def _check_measure(value: Any, received: _Received) -> str | None:
    return measure_problem(value)


def _check_step(value: Any, received: _Received) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer, got {value!r:.60}"
    if not 0 <= value <= _MAX_INT:
        return f"must be between 0 and {_MAX_INT}, got {str(value)[:24]}"
    return None


def _check_labels(value: Any, received: _Received) -> str | None:
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
    def check(value: Any, received: _Received) -> str | None:
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
    if avro_type == "int":
        return _check_step
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


# The fields that name something: the worker refuses a control character in them too.
_NAMES = ("agent", "task_id", "task_type", "workflow_id", "parent_task_id")


def _agent_event_rules() -> dict[str, _FieldRule]:
    """One rule per AgentEvent schema field: the schema decides names, types and defaults."""
    rules: dict[str, _FieldRule] = {}
    for avro_field in current_schema("agent_event").raw["fields"]:
        name = avro_field["name"]
        rules[name] = _FieldRule(
            check=_check_name if name in _NAMES else _check_for(avro_field["type"]),
            required="default" not in avro_field,
            default=avro_field.get("default"),
        )
    return rules


_RULES = _agent_event_rules()


def validate_agent_events(
    payload: Any, now_ms: int, max_future_ms: int = MAX_FUTURE_MS, max_age_ms: int | None = None
) -> tuple[list[Record], list[FieldError]]:
    """Check a decoded JSON body (one event or a list) against the AgentEvent rules, event
    times at most ``max_future_ms`` ahead of ``now_ms`` and, with ``max_age_ms``, at most
    that far behind.

    Returns the records, with absent optional fields set to their schema defaults, and every
    problem found; the caller produces the records only when there is no problem.
    """
    received = _Received(now_ms, max_future_ms, max_age_ms)
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
            problem = rule.check(value, received)
            if problem:
                errors.append(FieldError(index, name, problem))
            record[name] = value
        records.append(record)
    return records, errors


def validate_snapshots(
    payload: Any, now_ms: int, max_future_ms: int = MAX_FUTURE_MS
) -> tuple[list[Record], list[FieldError]]:
    """Check a decoded JSON body (one CodeQualitySnapshot or a list) against the rules of
    :mod:`schemas.quality` (a commit of any age: histories are backfilled); the records with
    their defaults, and every problem found."""
    snapshots = payload if isinstance(payload, list) else [payload]
    if not snapshots:
        return [], [FieldError(None, None, "the list is empty: send at least one snapshot")]
    records: list[Record] = []
    errors: list[FieldError] = []
    for index, snapshot in enumerate(snapshots):
        problems = snapshot_problems(snapshot, now_ms, max_future_ms)
        errors += [FieldError(index, p.field, p.reason) for p in problems]
        if not problems:
            records.append(snapshot_record(snapshot))
    return records, errors


# -- the server ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestConfig:
    """Where the ingestion server listens, where it produces, whom it lets in, and what it
    scrubs.

    ``entity_labels`` is the parsed ``FORESIGHT_ENTITY_LABELS``; ``gatekeeper`` checks keys
    and rate limits (:func:`streams.access.gatekeeper` builds it from the settings);
    ``scrubber`` applies the PII rules (``FORESIGHT_PII_RULES``); ``port`` 0 picks a free
    port (see :attr:`IngestServer.port`); ``tls`` with a certificate: https.
    ``max_future_ms`` and ``max_age_ms`` bound event times as the worker does
    (``FORESIGHT_MAX_FUTURE_S``; ``FORESIGHT_TOPIC_RETENTION_HOURS`` for agent events, whose
    worker dead-letters older ones; samples that old reach it and are dead-lettered there).
    """

    kafka: KafkaConfig
    metrics_topic: str
    agent_events_topic: str
    gatekeeper: Gatekeeper
    entity_labels: tuple[str, ...]
    scrubber: Scrubber
    host: str = "127.0.0.1"
    port: int = 9201
    max_body_bytes: int = 16 << 20
    tls: TlsConfig = field(default_factory=TlsConfig)
    quality_topic: str = "telemetry.code-quality"
    max_future_ms: int = MAX_FUTURE_MS
    max_age_ms: int | None = None


def _media_type(header: str) -> tuple[str, dict[str, str]]:
    """``"application/x-protobuf; proto=x"`` as ``("application/x-protobuf", {"proto": "x"})``."""
    kind, *parameters = (part.strip() for part in header.split(";"))
    pairs = (p.partition("=") for p in parameters if "=" in p)
    return kind.lower(), {k.strip().lower(): v.strip().strip('"') for k, _, v in pairs}


def _parse_json(body: bytes) -> Any:
    """The decoded body; any way it fails is the sender's, and answered 400."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ApiError(400, "body is not JSON Foresight takes: nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, too many int digits
        raise ApiError(400, f"body is not JSON: {error}") from None


def _refused(errors: Sequence[FieldError], what: str) -> ApiError:
    """The 400 of a JSON body with problems: every one in the details."""
    plural = "s" if len(errors) > 1 else ""
    return ApiError(
        400,
        f"{len(errors)} problem{plural} in the {what}; nothing was produced",
        [e.as_dict() for e in errors],
    )


class IngestServer:
    """The ingestion HTTP server and its Kafka producer; ``async with`` starts and stops both."""

    def __init__(self, config: IngestConfig, codec: Codec | None = None) -> None:
        self.config = config
        self.codec = codec or Codec()
        self.decoder = RemoteWriteDecoder(
            config.entity_labels, scrub=config.scrubber.labels, max_future_ms=config.max_future_ms
        )
        self._producer: AIOKafkaProducer | None = None
        self._http: HttpServer | None = None
        self.kafka = Dependency("kafka", config.kafka.bootstrap_servers)
        self._probe = KafkaProbe(config.kafka)
        self._watch: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful when the configured port is 0)."""
        if self._http is None:
            raise RuntimeError("the ingest server is not started")
        return self._http.port

    def app(self) -> FastAPI:
        """The ASGI application with every route."""
        app = create_app(
            "Foresight ingest",
            self.config.gatekeeper,
            max_body_bytes=self.config.max_body_bytes,
            requests=INGEST_REQUESTS,
            health=lambda: health_report(self.kafka),
        )
        writers = [require(WRITE)]
        app.add_api_route(
            WRITE_PATH, self.remote_write, methods=["POST"], dependencies=writers, status_code=204
        )
        app.add_api_route(
            AGENT_EVENTS_PATH,
            self.agent_events,
            methods=["POST"],
            dependencies=writers,
            status_code=202,
        )
        app.add_api_route(
            QUALITY_PATH, self.quality, methods=["POST"], dependencies=writers, status_code=202
        )
        return app

    async def start(self) -> None:
        """Connect the producer, then listen; raises if Kafka or the address is unavailable."""
        producer = self.config.kafka.producer(acks="all", linger_ms=5)
        await producer.start()
        self._producer = producer
        self._watch = asyncio.create_task(watch({self.kafka: self._probe}), name="ingest-kafka")
        try:
            self._http = HttpServer(self.app(), self.config.host, self.config.port, self.config.tls)
            await self._http.start()
        except BaseException:
            await self.stop()
            raise
        log.info("ingesting on %s", self.config.tls.url(self.config.host, self.port))

    async def stop(self) -> None:
        """Stop listening, then flush and close the producer."""
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self._probe.close()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> IngestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _produce(self, topic: str, keyed: Sequence[tuple[str, bytes]], what: str) -> None:
        """Produce every ``(key, value)`` and wait until the broker acknowledged them all;
        503 when it does not, and at once, producing nothing, while Kafka does not answer
        (the sender retries)."""
        if self._producer is None:
            raise RuntimeError("the ingest server is not started")
        down = self.kafka.problem()
        if down is not None:
            raise ApiError(
                503,
                f"Kafka at {self.kafka.where} has not answered for {down['down_for_s']} s "
                f"({down['error']}); nothing was produced: retry",
            )
        try:
            pending = [
                await self._producer.send(topic, value, key=key.encode()) for key, value in keyed
            ]
            await asyncio.gather(*pending)
        except KafkaError as error:
            log.warning("producing %s to %s failed: %r", what, topic, error)
            self.kafka.failed(error)
            raise ApiError(503, f"Kafka did not accept the {what}: {error!r}; retry") from error
        EVENTS_OUT.labels(topic).inc(len(keyed))

    async def remote_write(self, request: Request) -> Response:
        """``POST /api/v1/write``: Prometheus remote_write 1.0."""
        encoding = request.headers.get("Content-Encoding", "")
        if encoding.lower() != "snappy":
            raise ApiError(
                415,
                f"Content-Encoding is {encoding or 'missing'!r}; remote_write 1.0 bodies "
                "must be sent with Content-Encoding: snappy",
            )
        kind, parameters = _media_type(request.headers.get("Content-Type", ""))
        proto = parameters.get("proto", "prometheus.WriteRequest")
        if kind != "application/x-protobuf" or proto != "prometheus.WriteRequest":
            raise ApiError(
                415,
                f"Content-Type is {request.headers.get('Content-Type', 'missing')!r}; "
                "this receiver speaks remote_write 1.0: application/x-protobuf "
                "(prometheus.WriteRequest)",
            )
        body = await request.body()
        try:
            decoded = self.decoder.decode(body, now_ms=int(time.time() * 1000))
            values = [(b["entity"], self.codec.encode("metric_batch", b)) for b in decoded.batches]
        except ValueError as error:  # RemoteWriteError, or a record the schema refuses
            log.info("refused a remote_write body of %d bytes: %s", len(body), error)
            raise ApiError(400, str(error)) from None
        for reason, count in decoded.summary.dropped().items():
            if count:
                INGEST_SAMPLES_DROPPED.labels(reason).inc(count)
        await self._produce(self.config.metrics_topic, values, "samples")
        return Response(status_code=204)

    async def agent_events(self, request: Request) -> JSONResponse:
        """``POST /api/v1/agent-events``: JSON AgentEvents."""
        payload = _parse_json(await request.body())
        records, errors = validate_agent_events(
            payload, int(time.time() * 1000), self.config.max_future_ms, self.config.max_age_ms
        )
        if errors:
            raise _refused(errors, "events")
        records = self.config.scrubber.agent_events(records)
        try:
            values = [(r["agent"], self.codec.encode("agent_event", r)) for r in records]
        except ValueError as error:  # what the rules missed and the schema refuses
            raise ApiError(400, f"an event does not fit the AgentEvent schema: {error}") from None
        await self._produce(self.config.agent_events_topic, values, "events")
        return JSONResponse({"accepted": len(values)}, status_code=202)

    async def quality(self, request: Request) -> JSONResponse:
        """``POST /api/v1/quality``: JSON CodeQualitySnapshots."""
        payload = _parse_json(await request.body())
        records, errors = validate_snapshots(
            payload, int(time.time() * 1000), self.config.max_future_ms
        )
        if errors:
            raise _refused(errors, "snapshots")
        records = self.config.scrubber.quality_snapshots(records)
        values = [(r["repository"], self.codec.encode(QUALITY_SCHEMA, r)) for r in records]
        await self._produce(self.config.quality_topic, values, "snapshots")
        return JSONResponse({"accepted": len(values)}, status_code=202)
