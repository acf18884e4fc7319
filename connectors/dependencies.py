"""Whether the services a process relies on answer: Kafka, Redis, the ClickHouse store.

No Foresight process stops when one of them goes away: each keeps running and picks up by
itself when the service is back. Meanwhile its ``/health`` says what is wrong
(:func:`health_report`): ``"status": "degraded"`` and, per service down, since when and the
last error. A degraded process answers ``/health`` with 200, not 503: restarting it would
not bring the service back (a process that cannot reach Kafka cannot even start), so a
liveness probe must not restart it; 503 stays for what a restart can cure.

A :class:`Dependency` learns from the process's own calls (:meth:`Dependency.failed`,
:meth:`Dependency.answered`) and from :func:`watch`, which asks the service every few seconds
(:class:`KafkaProbe` for the brokers, a Redis ``PING``, :class:`ClickHouseProbe` for a
ClickHouse server), so an idle process knows too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from connectors.clickhouse import ServerStore
from connectors.kafka_clients import KafkaConfig

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 2.0
"""How often :func:`watch` asks each service: /health is at most this late."""

DEGRADED = "degraded"
_NEVER_MS = 365 * 24 * 3600 * 1000


class Dependency:
    """One service a process relies on, as the process last found it.

    Parameters
    ----------
    name
        What /health calls it (``kafka``, ``redis``, ``clickhouse``).
    where
        Its address as the settings name it, for messages.
    """

    def __init__(self, name: str, where: str) -> None:
        self.name = name
        self.where = where
        self.down_since: float | None = None
        self.error = ""

    def failed(self, error: BaseException | str) -> None:
        """A call to the service failed; the first failure of an outage is logged."""
        self.error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        if self.down_since is None:
            self.down_since = time.time()
            log.warning("%s at %s does not answer: %s", self.name, self.where, self.error)

    def answered(self) -> None:
        """A call to the service succeeded; the end of an outage is logged."""
        if self.down_since is not None:
            log.warning(
                "%s at %s answers again, after %.1f s",
                self.name,
                self.where,
                time.time() - self.down_since,
            )
        self.down_since = None
        self.error = ""

    def problem(self) -> dict[str, Any] | None:
        """What /health says of the service while it is down (None while it answers)."""
        if self.down_since is None:
            return None
        return {
            "where": self.where,
            "down_for_s": round(time.time() - self.down_since, 1),
            "error": self.error,
        }


def health_report(*dependencies: Dependency) -> dict[str, Any]:
    """``{"status": "ok"}``, or ``"degraded"`` with a ``down`` entry per service down."""
    down = {d.name: p for d in dependencies if (p := d.problem()) is not None}
    return {"status": DEGRADED, "down": down} if down else {"status": "ok", "down": {}}


class KafkaProbe:
    """Asks the brokers for the cluster's brokers (a metadata request naming no topic), the
    cheapest request every broker answers.

    One client, kept between calls; a call raises what the client raised when no broker of
    ``kafka`` answered. The request names no topic on purpose: asked for every topic, a
    broker of a cluster with thousands of them describes them all, and aiokafka decodes the
    answer in the event loop (the local stack's 3,400 topics: 70-170 ms every probe, every
    2 s, in which the process answered nothing).
    """

    def __init__(self, kafka: KafkaConfig, timeout_s: float = 5.0) -> None:
        self.kafka = kafka
        self._timeout_ms = int(timeout_s * 1000)
        self._client: AIOKafkaClient | None = None

    async def __call__(self) -> None:
        if self._client is None:
            # The probe keeps the broker list current itself; aiokafka's own refresh of a
            # client without topics would ask for every topic.
            client = self.kafka.client(
                request_timeout_ms=self._timeout_ms, metadata_max_age_ms=_NEVER_MS
            )
            try:
                await client.bootstrap()
            except BaseException:
                await client.close()
                raise
            self._client = client
            return
        error: Exception = KafkaConnectionError(
            f"Kafka at {self.kafka.bootstrap_servers} named no broker in its metadata"
        )
        for broker in self._client.cluster.brokers():  # the first that answers will do
            try:
                answer = await self._client.send(broker.nodeId, MetadataRequest([]))
            except (TimeoutError, KafkaError) as failed:
                error = failed
                continue
            self._client.cluster.update_metadata(answer)
            return
        raise error

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class ClickHouseProbe:
    """Asks the ClickHouse server at ``url`` (``CLICKHOUSE_URL``) for ``SELECT 1``, in a
    thread (the client blocks). One client without a server session, kept between calls."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._store: ServerStore | None = None

    def _ask(self) -> None:
        if self._store is None:
            self._store = ServerStore(self.url, {})
        self._store.query("SELECT 1")

    async def __call__(self) -> None:
        await asyncio.to_thread(self._ask)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


Check = Callable[[], Awaitable[Any]]


async def watch(checks: Mapping[Dependency, Check], interval_s: float = WATCH_INTERVAL_S) -> None:
    """Ask every service its check every ``interval_s`` until cancelled, and record the
    answers (a check that raises, or takes longer than the interval, failed)."""

    async def ask(dependency: Dependency, check: Check) -> None:
        try:
            await asyncio.wait_for(check(), timeout=max(interval_s, 5.0))
        except Exception as error:  # each client raises its own kinds
            dependency.failed(error)
        else:
            dependency.answered()

    while True:
        await asyncio.gather(*(ask(d, c) for d, c in checks.items()))
        await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def watching(checks: Mapping[Dependency, Check]) -> Any:
    """Run :func:`watch` in the background for the duration of the block."""
    task = asyncio.create_task(watch(checks), name="foresight-dependency-watch")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
