"""The audit trail: who did what, when, from where, and how it went, on the ``audit`` topic.

Each Foresight process that acts for someone (a server at its doors, a command that changes
models or connectors) records :func:`audit_event` records through one :class:`AuditTrail`,
keyed by the API key's id. Recording never blocks nor fails the caller: :meth:`AuditTrail.record`
puts the event in a bounded buffer, and a thread of the trail's own produces the buffer to
Kafka. When Kafka is slower than the events, or down, the buffer fills and further events are
dropped and counted (``foresight_audit_dropped_total{reason}``), never waited for.

Refused authentications come in floods, and an audit that records each one could itself be
flooded: :class:`RefusalThrottle` lets a few through one by one (per address, and in all),
and counts the rest, which the trail records as one summary event per address and interval
(``count`` says how many refusals it stands for).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from connectors.http.auth import Refusal
from connectors.http.keys import ApiKey
from connectors.http.limits import TokenBuckets
from connectors.kafka_clients import KafkaConfig
from connectors.prometheus import AUDIT_DROPPED, AUDIT_EVENTS, AUDIT_SUMMARISED
from schemas.codec import Codec, Record

log = logging.getLogger(__name__)

SUCCEEDED, FAILED, REFUSED = "SUCCEEDED", "FAILED", "REFUSED"
AUTH_REFUSED = "auth.refused"
MAX_TEXT = 4096  # longest target or detail value kept (a SQL statement can be 1 MiB)
OTHER_ADDRESSES = "other addresses"


def command_origin() -> str:
    """Where a command runs, as its audit events say: ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def audit_event(
    action: str,
    target: str,
    outcome: str,
    *,
    service: str,
    origin: str,
    key: ApiKey | None = None,
    details: Mapping[str, str] | None = None,
    count: int = 1,
    now_ms: int | None = None,
) -> Record:
    """One AuditEvent record (schema ``audit_event``); long texts are cut at 4,096 characters.

    >>> event = audit_event("model.promote", "failure_risk 3", "SUCCEEDED", service="cli",
    ...                     origin="ada@host", now_ms=0)
    >>> event["key_id"], event["action"], event["count"], len(event["event_id"])
    ('', 'model.promote', 1, 32)
    """
    return {
        "event_id": uuid.uuid4().hex,
        "event_time": int(time.time() * 1000) if now_ms is None else now_ms,
        "key_id": key.id if key else "",
        "key_name": key.name if key else "",
        "action": action,
        "target": _clip(target),
        "outcome": outcome,
        "service": service,
        "origin": origin,
        "details": {k: _clip(str(v)) for k, v in (details or {}).items()},
        "count": count,
    }


@dataclass
class _Suppressed:
    """Refusals from one address not recorded one by one, since the last summary."""

    count: int = 0
    first_ms: int = 0
    last_ms: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


class RefusalThrottle:
    """Which refused authentications are recorded one by one, and the summary of the rest.

    Each address may have ``per_address`` refusals a minute recorded one by one (in a burst of
    that many), and all addresses together ``total`` a minute; the others are counted per
    address, for at most ``max_addresses`` addresses (beyond, under :data:`OTHER_ADDRESSES`),
    until :meth:`summaries` takes the counts.

    Examples
    --------
    >>> throttle = RefusalThrottle(per_address=2, total=100, clock=lambda: 0.0)
    >>> [throttle.admit("10.0.0.9", 401, now_ms=5) for _ in range(4)]
    [True, True, False, False]
    >>> [(s[0], s[1].count) for s in throttle.summaries()]
    [('10.0.0.9', 2)]
    """

    def __init__(
        self,
        per_address: int = 10,
        total: int = 100,
        max_addresses: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_address = TokenBuckets(per_address / 60, per_address, clock=clock)
        self._total = TokenBuckets(total / 60, total, clock=clock)
        self._max_addresses = max_addresses
        self._suppressed: dict[str, _Suppressed] = {}

    def admit(self, address: str, status: int, now_ms: int) -> bool:
        """Whether this refusal is recorded one by one; if not, it is counted."""
        if not self._per_address.take(address) and not self._total.take(""):
            return True
        if address not in self._suppressed and len(self._suppressed) >= self._max_addresses:
            address = OTHER_ADDRESSES
        counted = self._suppressed.setdefault(address, _Suppressed(first_ms=now_ms))
        counted.count += 1
        counted.last_ms = now_ms
        counted.statuses[status] = counted.statuses.get(status, 0) + 1
        return False

    def summaries(self) -> list[tuple[str, _Suppressed]]:
        """The counts since the last call, per address; they start again from zero."""
        taken, self._suppressed = self._suppressed, {}
        return list(taken.items())


@dataclass
class TrailStats:
    """What a trail did: events recorded (acknowledged), dropped, and refusals summarised."""

    recorded: int = 0
    dropped: int = 0
    summarised: int = 0


class AuditTrail:
    """Records audit events to ``topic`` from a thread of its own; ``with`` starts and stops it.

    Parameters
    ----------
    kafka
        The brokers and how to reach them (``KAFKA_BOOTSTRAP_SERVERS`` and the security
        settings).
    topic
        The audit topic (``FORESIGHT_AUDIT_TOPIC``, default ``audit``).
    service
        The process recording: ``cli``, ``ingest``, ``gateway``, ``sink``.
    origin
        Where the events come from when an event does not say (a command: ``user@host``).
    max_pending
        Events held while Kafka catches up (default 10,000); beyond, events are dropped.
    summary_interval_s
        How often refusals not recorded one by one are summarised (default 60 s).
    throttle
        Which refusals are recorded one by one (default :class:`RefusalThrottle`'s).
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        topic: str,
        service: str,
        *,
        origin: str = "",
        codec: Codec | None = None,
        max_pending: int = 10_000,
        summary_interval_s: float = 60.0,
        throttle: RefusalThrottle | None = None,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.service = service
        self.origin = origin
        self.max_pending = max_pending
        self.summary_interval_s = summary_interval_s
        self.stats = TrailStats()
        self._codec = codec or Codec()
        self._throttle = throttle or RefusalThrottle()
        self._lock = threading.Lock()
        self._pending: list[Record] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the caller's side: never waits ----------------------------------------------------

    def record(
        self,
        action: str,
        target: str,
        outcome: str,
        *,
        key: ApiKey | None = None,
        origin: str | None = None,
        details: Mapping[str, str] | None = None,
        count: int = 1,
    ) -> None:
        """Record an event (see :func:`audit_event`); returns at once, whatever Kafka does."""
        self._enqueue(
            audit_event(
                action,
                target,
                outcome,
                service=self.service,
                origin=self.origin if origin is None else origin,
                key=key,
                details=details,
                count=count,
            )
        )

    def refused(self, refusal: Refusal) -> None:
        """Record a refused authentication, unless a flood is being summarised
        (the :class:`~connectors.http.auth.Gatekeeper` calls this at every door)."""
        now_ms = int(time.time() * 1000)
        with self._lock:
            admitted = self._throttle.admit(refusal.address, refusal.status, now_ms)
        if not admitted:
            AUDIT_SUMMARISED.inc()
            self.stats.summarised += 1
            return
        self.record(
            AUTH_REFUSED,
            refusal.target,
            REFUSED,
            key=refusal.key,
            origin=refusal.address,
            details={"status": str(refusal.status), "role": refusal.role, "reason": refusal.reason},
        )

    def pending(self) -> list[Record]:
        """The events waiting to be produced (a copy)."""
        with self._lock:
            return list(self._pending)

    def _enqueue(self, event: Record) -> None:
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self._drop(1, "buffer_full")
                return
            self._pending.append(event)
            wake = len(self._pending) == 1
            loop = self._loop
        if wake and loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._wake.set)

    def _drop(self, count: int, reason: str) -> None:
        AUDIT_DROPPED.labels(reason).inc(count)
        self.stats.dropped += count

    # -- the trail's thread ----------------------------------------------------------------

    def start(self) -> None:
        """Start the thread that produces events (it connects to Kafka, and keeps trying)."""
        if self._thread is not None:
            raise RuntimeError("this audit trail is already started")
        self._thread = threading.Thread(target=self._run, name="audit-trail", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Produce what is pending (waiting at most ``timeout_s``), then stop; what could not
        be produced by then is counted as dropped (``unsent_at_stop``) and logged."""
        if self._thread is None:
            return
        self._stopping.set()
        loop = self._loop
        if loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)
        self._thread.join(timeout_s)
        with self._lock:
            unsent, self._pending = len(self._pending), []
        if unsent:
            self._drop(unsent, "unsent_at_stop")
        if self.stats.dropped:
            log.warning(
                "%d audit events could not be recorded in %s at %s (see "
                "foresight_audit_dropped_total)",
                self.stats.dropped,
                self.topic,
                self.kafka.bootstrap_servers,
            )

    def __enter__(self) -> AuditTrail:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        producer: AIOKafkaProducer | None = None
        next_summary = time.monotonic() + self.summary_interval_s
        try:
            while True:
                stopping = self._stopping.is_set()
                if stopping or time.monotonic() >= next_summary:
                    self._summarise()
                    next_summary = time.monotonic() + self.summary_interval_s
                with self._lock:
                    idle = not self._pending
                if producer is None and not (stopping and idle):  # nothing left to send
                    producer = await self._connect()
                if producer is not None:
                    await self._produce(producer)
                with self._lock:
                    idle = not self._pending
                if stopping and (idle or producer is None):
                    return
                self._wake.clear()
                if idle or producer is None:
                    wait = max(0.0, min(next_summary - time.monotonic(), 2.0))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
        finally:
            self._loop = None
            if producer is not None:
                with contextlib.suppress(KafkaError, OSError):
                    await producer.stop()

    async def _connect(self) -> AIOKafkaProducer | None:
        producer = self.kafka.producer(acks="all", linger_ms=10, request_timeout_ms=10_000)
        try:
            await producer.start()
        except (KafkaError, OSError) as error:
            log.warning("audit trail: %s", self.kafka.failure(error))
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
            return None
        return producer

    async def _produce(self, producer: AIOKafkaProducer) -> None:
        with self._lock:
            events, self._pending = self._pending, []
        if not events:
            return
        sends: list[Any] = []
        try:
            for event in events:
                value = self._codec.encode("audit_event", event)
                sends.append(await producer.send(self.topic, value, key=event["key_id"].encode()))
            await asyncio.gather(*sends)
        except KafkaError as error:
            log.warning(
                "audit trail: %d events not recorded in %s: %r", len(events), self.topic, error
            )
            self._drop(len(events), "kafka_error")
            return
        for event in events:
            AUDIT_EVENTS.labels(event["action"], event["outcome"]).inc()
        self.stats.recorded += len(events)

    def _summarise(self) -> None:
        with self._lock:
            summaries = self._throttle.summaries()
        for address, counted in summaries:
            statuses = ", ".join(f"{n} x {s}" for s, n in sorted(counted.statuses.items()))
            self.record(
                AUTH_REFUSED,
                "*",
                REFUSED,
                origin=address,
                count=counted.count,
                details={
                    "summary": f"{counted.count} refused authentications from {address} not "
                    "recorded one by one",
                    "statuses": statuses,
                    "first_ms": str(counted.first_ms),
                    "last_ms": str(counted.last_ms),
                },
            )
