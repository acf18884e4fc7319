"""``POST /v1/route``: a routing decision on demand, through the worker's own policy.

The API does not decide: it produces the caller's RoutingRequest to ``routing.requests``
(keyed by task id) and waits, at most ``FORESIGHT_API_ROUTE_TIMEOUT_S``, for the worker's
RoutingDecision under that task id on ``routing.decisions``. One consumer per API process
reads the decisions from their end (no consumer group: every API process sees every decision)
and hands each to the request waiting for its task id; decisions nobody waits for (standing
advice, other processes' tasks) are passed over. The same consumer reads the dead-letter
topic: a request the worker refuses (a task type no agent has reported, without candidates)
is answered 422 with the worker's reason at once, not 504 when the wait runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from connectors.http.errors import ApiError
from connectors.kafka_clients import KafkaConfig
from schemas.codec import Codec, DecodeError
from streams.api.schema import RouteRequest
from streams.engine.engine import routed_request

log = logging.getLogger(__name__)


class RouteDesk:
    """Sends RoutingRequests and hands back their decisions (see the module docstring);
    :meth:`start` and :meth:`stop` around its life."""

    def __init__(
        self,
        kafka: KafkaConfig,
        codec: Codec,
        requests_topic: str,
        decisions_topic: str,
        timeout_s: float,
        deadletter_topic: str,
    ) -> None:
        self.kafka = kafka
        self.codec = codec
        self.requests_topic = requests_topic
        self.decisions_topic = decisions_topic
        self.deadletter_topic = deadletter_topic
        self.timeout_s = timeout_s
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read decisions and dead letters from their end, then open the producer; raises
        when Kafka does not answer or either topic has no partition assigned within 30 s."""
        topics = {self.decisions_topic, self.deadletter_topic}
        consumer = self.kafka.consumer(
            *topics, group_id=None, enable_auto_commit=False, auto_offset_reset="latest"
        )
        await consumer.start()
        self._consumer = consumer
        deadline = time.monotonic() + 30
        # Without a group, aiokafka assigns the partitions on its next metadata refresh.
        while {tp.topic for tp in consumer.assignment()} != topics:
            if time.monotonic() > deadline:
                missing = topics - {tp.topic for tp in consumer.assignment()}
                raise RuntimeError(f"no partition of {sorted(missing)} assigned in 30 s")
            await asyncio.sleep(0.01)
        for tp in consumer.assignment():  # resolve the seek to the end before taking requests
            await consumer.position(tp)
        self._task = asyncio.create_task(self._consume(consumer), name="route-decisions")
        self._producer = self.kafka.producer(acks=1, linger_ms=0)
        await self._producer.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for client in (self._producer, self._consumer):
            if client is not None:
                await client.stop()
        self._task, self._producer, self._consumer = None, None, None

    async def route(self, request: RouteRequest) -> dict[str, Any]:
        """The worker's RoutingDecision for ``request``. Raises :class:`ApiError`: 409 while
        the same task id waits already, 422 when the worker refuses it, 503 when Kafka
        refuses it, 504 when no decision comes in time."""
        if self._producer is None:
            raise RuntimeError("the route desk is not started")
        if request.task_id in self._waiting:
            raise ApiError(
                409,
                f"task {request.task_id!r} is waiting for its decision already; "
                "give each task its own task_id",
                [{"field": "body.task_id", "reason": "a request for it is under way"}],
            )
        record = {**request.model_dump(), "event_time": int(time.time() * 1000)}
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request.task_id] = answer
        try:
            try:
                await self._producer.send_and_wait(
                    self.requests_topic,
                    self.codec.encode("routing_request", record),
                    key=request.task_id.encode(),
                )
            except Exception as error:  # aiokafka's errors share no base worth naming
                raise ApiError(
                    503, f"Kafka did not take the request for {self.requests_topic}: {error}"
                ) from error
            try:
                return await asyncio.wait_for(answer, self.timeout_s)
            except TimeoutError:
                raise ApiError(
                    504,
                    f"no decision for task {request.task_id!r} on {self.decisions_topic} "
                    f"within FORESIGHT_API_ROUTE_TIMEOUT_S ({self.timeout_s:g} s): is a worker "
                    "running (foresight worker)? Its dead-letter topic says why it refused "
                    "a request",
                ) from None
        finally:
            del self._waiting[request.task_id]

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            for tp, messages in batches.items():
                if tp.topic == self.deadletter_topic:
                    for message in messages:
                        self._refused(message.value)
                    continue
                for message in messages:
                    task_id = (message.key or b"").decode(errors="replace")
                    waiting = self._waiting.get(task_id)
                    if waiting is None or waiting.done():
                        continue
                    try:
                        decision = self.codec.decode(message.value)[1]
                    except DecodeError as error:
                        log.warning("skipping unreadable decision for %r: %s", task_id, error)
                        continue
                    if decision.get("task_id") == task_id:  # not a task type's standing advice
                        waiting.set_result(decision)

    def _refused(self, value: bytes) -> None:
        """A dead letter: when it holds a request waiting here, that request's 422."""
        if not self._waiting:
            return
        try:
            name, letter = self.codec.decode(value)
        except DecodeError as error:
            log.warning("skipping unreadable dead letter: %s", error)
            return
        request = routed_request(letter["value"], self.codec) if name == "dead_letter" else None
        task_id = request["task_id"] if request else None
        waiting = self._waiting.get(task_id) if isinstance(task_id, str) else None
        if waiting is None or waiting.done():
            return
        reason = letter["reason"]
        waiting.set_exception(
            ApiError(
                422,
                f"the worker refused task {task_id!r}: {reason}",
                [{"field": "body", "reason": reason}],
            )
        )
