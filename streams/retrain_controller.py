"""The retrain controller: drift alerts in; a candidate trained, shadowed, tested, and promoted
or refused.

``foresight retrain`` runs one :class:`RetrainController` (one per deployment: two would
train twice). It follows ``alerts`` and acts on a firing ``model_drift`` alert of the
failure-risk model that recommends retraining:

1. **Cooldown**: nothing when a version of the model was registered less than
   ``FORESIGHT_RETRAIN_COOLDOWN_S`` ago, or a candidate newer than production is still being
   evaluated; a drift still firing when they end is acted on then. The alert must name the
   production version's content hash: the drift of a version no longer serving, or of
   another registry's, is not ours to act on.
2. **Train** a candidate on the last ``FORESIGHT_RETRAIN_HISTORY_S`` of ClickHouse history
   (temporal cross-validation with a gap of one horizon, ``FORESIGHT_RETRAIN_SEARCH_TRIALS``
   Optuna trials), register it and announce it on ``models.updates``: every worker then
   scores it in shadow beside production (their hot reload).
3. Every ``FORESIGHT_RETRAIN_CHECK_S``, count the steps both versions scored whose labels are
   in; from ``FORESIGHT_PROMOTION_MIN_OUTCOMES`` on, run the paired promotion test
   (:mod:`models.promotion`) and promote the candidate when it is better at
   ``FORESIGHT_PROMOTION_ALPHA``, else archive it as refused. The test is kept in the
   registry, rides on the ModelUpdate records and is in the audit event.

Its state is the registry's (which candidate is under test, when the last version came) and
the drifts firing; a restarted controller reads back the alerts of the last cooldown period,
so a drift that fired while it was down is still seen.

``/health`` (:meth:`RetrainRunner.health`) says ``starting`` until it follows ``alerts`` and
``crashed`` once its loop failed (503 for both; a restart cures them), else ``ok`` or
``degraded`` (Kafka or ClickHouse does not answer; 200), with the model it watches, the drifts
firing, the candidate under test, the training under way, its last step and the offsets it
read. A record of ``alerts`` that is not an alert is counted, logged and skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from connectors import prometheus as metrics
from connectors.audit import AuditTrail
from connectors.dependencies import (
    Check,
    ClickHouseProbe,
    Dependency,
    KafkaProbe,
    health_report,
    watching,
)
from connectors.user_sql import SqlError
from models.promotion import PromotionTest
from models.registry import ModelRegistry, ModelVersion, RegistryError
from models.training import FAILURE_RISK, TrainingConfig
from schemas.codec import DeadLetter, Message
from streams import topics
from streams.codecs import codec_for
from streams.commands.sink import store_where
from streams.operations import decide_candidate, publish_updates
from streams.retraining import compare_versions, created_ms, train_candidate
from streams.settings import Settings

log = logging.getLogger(__name__)
Record = dict[str, Any]


@dataclass(frozen=True)
class Step:
    """What the controller did, for its log and its ``--json`` lines."""

    event: str
    detail: Record

    def line(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.detail.items() if k != "test")
        return f"retrain: {self.event}: {shown}"


class RetrainController:
    """The loop's decisions, on the registry and ClickHouse; Kafka stays in :func:`run`.

    ``clock`` gives wall seconds (a test may hold it).
    """

    def __init__(
        self,
        settings: Settings,
        audit: AuditTrail,
        clock: Callable[[], float] = time.time,
        model: str = FAILURE_RISK,
    ) -> None:
        self.settings = settings
        self.audit = audit
        self.clock = clock
        self.model = model
        self.registry = ModelRegistry(settings.model_registry_url)
        self.drifting: dict[str, Record] = {}  # content hash -> its firing drift
        self._waited: tuple[str, int] | None = None  # the last wait reported
        self.clickhouse = Dependency("clickhouse", store_where(settings))
        self.seen: tuple[str | None, str | None] = (None, None)
        """The production and candidate versions the registry last had."""
        self.training: Record | None = None
        """The retraining under way: its cause and since when."""

    def _versions(self) -> tuple[ModelVersion | None, ModelVersion | None, list[ModelVersion]]:
        """Production, the candidate under evaluation (newest candidate newer than
        production) and every version; all None/empty when the model is not registered."""
        if self.model not in self.registry.models():
            self.seen = (None, None)
            return None, None, []
        versions = self.registry.versions(self.model)
        production = next((v for v in versions if v.stage == "production"), None)
        served = int(production.version) if production else 0
        newer = [v for v in versions if v.stage == "candidate" and int(v.version) > served]
        candidate = newer[-1] if newer else None
        self.seen = (
            production.version if production else None,
            candidate.version if candidate else None,
        )
        return production, candidate, versions

    def on_alert(self, alert: Mapping[str, Any]) -> list[Step]:
        """A record from ``alerts``: a firing or resolved retraining drift of this model is
        noted (by the drifted version's content hash), then :meth:`maybe_retrain`. Other
        alerts change nothing."""
        labels = alert.get("labels") or {}
        if (
            alert.get("rule") != "model_drift"
            or labels.get("model") != self.model
            or labels.get("retrain") != "true"
        ):
            return []
        content_hash = labels.get("content_hash", "")
        seen = {
            "version": labels.get("version", ""),
            "drifted": labels.get("metric", ""),
            "score": round(float(alert.get("value", 0.0)), 3),
        }
        if alert.get("status") == "FIRING":
            self.drifting[content_hash] = seen
            return [Step("drift", seen), *self.maybe_retrain(quiet=False)]
        self.drifting.pop(content_hash, None)
        return [Step("drift_resolved", seen)]

    def maybe_retrain(self, quiet: bool = True) -> list[Step]:
        """Retrain when the production version is drifting, no candidate is under
        evaluation and the cooldown has passed. ``quiet``: say nothing when it waits."""
        production, candidate, versions = self._versions()
        cause = None if production is None else self.drifting.get(production.content_hash)
        if production is None or cause is None:
            return []
        if candidate is not None:
            why = f"candidate {candidate.version} is under evaluation"
            return [] if quiet else [Step("waiting", {**cause, "why": why})]
        now_ms = int(self.clock() * 1000)
        newest_ms = max(created_ms(v) for v in versions)
        wait_s = self.settings.retrain_cooldown_s - (now_ms - newest_ms) / 1000
        if wait_s > 0:
            why = f"version {versions[-1].version} is recent; next retrain in {wait_s:.0f} s"
            return [] if quiet else [Step("cooldown", {**cause, "why": why})]
        return [self.retrain(now_ms, cause)]

    def retrain(self, now_ms: int, cause: Mapping[str, Any]) -> Step:
        """Train a candidate on the recent history, register and announce it."""
        settings = self.settings
        config = TrainingConfig(
            folds=settings.retrain_folds, search_trials=settings.retrain_search_trials
        )
        since_ms = now_ms - int(settings.retrain_history_s * 1000)
        started = time.monotonic()
        self.training = {**cause, "since": _at(self.clock())}
        metrics.RETRAINS.labels("started").inc()
        try:
            trained = train_candidate(
                settings, since_ms, now_ms, settings.failure_horizon_s, config
            )
        except (SqlError, ValueError, RegistryError) as error:
            if isinstance(error, SqlError):
                self.clickhouse.failed(error)
            return Step("retrain_failed", {**cause, "error": str(error)})
        finally:
            self.training = None
        self.clickhouse.answered()
        problem = publish_updates(settings, [trained.update])
        mean = trained.report["cv"]["mean"]["model"]
        return Step(
            "registered",
            {
                **cause,
                "version": trained.update["version"],
                "rows": trained.report["rows"],
                "positives": trained.report["positives"],
                "cv_auc_pr": mean["auc_pr"],
                "cv_brier": mean["brier"],
                "seconds": round(time.monotonic() - started, 1),
                "published": problem or "yes",
            },
        )

    def tick(self) -> list[Step]:
        """The periodic work: test the candidate under evaluation, or retrain a production
        version still drifting once its cooldown has passed."""
        checked = self.check_candidate()
        return [checked] if checked is not None else self.maybe_retrain()

    def check_candidate(self) -> Step | None:
        """Test the candidate under evaluation once enough of its outcomes are labelled, and
        promote or refuse it; None when there is no candidate, or when it still waits with
        as many outcomes as last said."""
        production, candidate, _ = self._versions()
        if production is None or candidate is None:
            return None
        try:
            result = compare_versions(self.settings, self.model, production, candidate)
        except SqlError as error:
            self.clickhouse.failed(error)
            return Step("compare_failed", {"candidate": candidate.version, "error": str(error)})
        self.clickhouse.answered()
        needed = max(1, self.settings.promotion_min_outcomes)
        if result["steps"] < needed:
            waited, self._waited = self._waited, (candidate.version, result["steps"])
            if waited == self._waited:
                return None
            return Step(
                "waiting",
                {"candidate": candidate.version, "outcomes": result["steps"], "needed": needed},
            )
        test = PromotionTest(**result["test"])
        try:
            change = decide_candidate(
                self.settings, self.audit, self.model, candidate.version, test
            )
        except (RegistryError, PermissionError) as error:
            return Step("decision_failed", {"candidate": candidate.version, "error": str(error)})
        return Step(
            "promoted" if test.promote else "refused",
            {
                "candidate": candidate.version,
                "production": production.version,
                "test": test.as_dict(),
                "p_value": round(test.p_value, 5),
                "effect": round(test.effect, 5),
                "steps": test.steps,
                "positives": test.positives,
                "entities": test.entities,
                "updates": [f"{u['action']} {u['version']}" for u in change.updates],
                "published": change.problem or "yes",
            },
        )


_RETRAIN_OUTCOMES = {"registered": "registered", "retrain_failed": "failed"}


def _at(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclass
class Progress:
    """Where the controller's loop is, for ``/health`` and ``/metrics``."""

    following: bool = False
    """True once it reads ``alerts`` from where it starts."""
    consumed: dict[TopicPartition, int] = field(default_factory=dict)
    """Per partition of ``alerts``, the last offset read (-1: none yet)."""
    last: Record | None = None
    """Its last step: event and time."""
    crashed: str = ""
    """Why its loop failed; empty while it has not."""

    def status(self) -> str | None:
        """``starting`` or ``crashed`` (it cannot serve), else None."""
        if self.crashed:
            return "crashed"
        return None if self.following else "starting"

    def stepped(self, step: Step, at_s: float) -> None:
        """Count ``step`` on /metrics and keep it as the last."""
        self.last = {"event": step.event, "at": _at(at_s)}
        metrics.RETRAIN_LAST_STEP.set(at_s)
        if step.event in _RETRAIN_OUTCOMES:
            metrics.RETRAINS.labels(_RETRAIN_OUTCOMES[step.event]).inc()
        elif step.event in ("promoted", "refused"):
            metrics.RETRAIN_DECISIONS.labels(step.event).inc()


class RetrainRunner:
    """The controller's process: follows ``topic`` (``alerts``, or a topic laid out like it)
    into a :class:`RetrainController`, and says how it goes on ``/health`` and ``/metrics``."""

    def __init__(
        self,
        controller: RetrainController,
        report: Callable[[Step], None],
        topic: str = topics.ALERTS.name,
    ) -> None:
        self.controller = controller
        self.topic = topic
        self.report = report
        self.progress = Progress()
        self.kafka = Dependency("kafka", controller.settings.kafka().bootstrap_servers)
        self.started_s = time.time()

    def health(self) -> dict[str, Any]:
        """The ``/health`` report: ``status`` (see the module), the services down, the loop's
        failure, the model watched, its production and candidate versions as last seen, the
        drifts firing (by the content hash of the version drifting), the retraining under way,
        the last step, and per partition of ``alerts`` the last offset read."""
        controller = self.controller
        services = health_report(self.kafka, controller.clickhouse)
        production, candidate = controller.seen
        return {
            "status": self.progress.status() or services["status"],
            "down": services["down"],
            "crashed": self.progress.crashed or None,
            "topic": self.topic,
            "model": controller.model,
            "production": production,
            "candidate": candidate,
            "drifting": dict(controller.drifting),
            "training": controller.training,
            "last_step": self.progress.last,
            "consumed": {
                f"{tp.topic}:{tp.partition}": offset
                for tp, offset in sorted(self.progress.consumed.items())
            },
            "uptime_s": round(time.time() - self.started_s, 1),
        }

    def _step(self, step: Step) -> None:
        self.progress.stepped(step, time.time())
        self.report(step)

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the alerts until ``stop`` is set: each alert to
        :meth:`~RetrainController.on_alert`, and every ``FORESIGHT_RETRAIN_CHECK_S``
        :meth:`~RetrainController.tick`. Training and testing run in a thread; alerts wait in
        Kafka meanwhile. Raises KafkaError when Kafka is unavailable at the start; when the
        loop fails later, ``health()`` says ``crashed``, then it raises."""
        controller = self.controller
        settings = controller.settings
        kafka = settings.kafka()
        consumer = kafka.consumer(group_id=None, enable_auto_commit=False)
        probe = KafkaProbe(kafka)
        checks: dict[Dependency, Check] = {self.kafka: probe}
        clickhouse = ClickHouseProbe(settings.clickhouse_url) if settings.clickhouse_url else None
        if clickhouse is not None:  # chdb: its own queries tell (a probe would hold the folder)
            checks[controller.clickhouse] = clickhouse
        try:
            await consumer.start()
            count = topics.ALERTS.partition_count(settings)
            partitions = [TopicPartition(self.topic, p) for p in range(count)]
            consumer.assign(partitions)
            since_ms = int((controller.clock() - settings.retrain_cooldown_s) * 1000)
            found = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
            ends = await consumer.end_offsets(partitions)
            for tp in partitions:
                at = found.get(tp)
                offset = at.offset if at is not None else ends[tp]
                consumer.seek(tp, offset)
                self.progress.consumed[tp] = offset - 1
            async with watching(checks):
                await self._follow(stop, consumer)
        finally:
            await consumer.stop()
            await probe.close()
            if clickhouse is not None:
                clickhouse.close()

    async def _follow(self, stop: asyncio.Event, consumer: AIOKafkaConsumer) -> None:
        controller = self.controller
        settings = controller.settings
        codec = codec_for(settings)
        self.progress.following = True
        self._step(Step("following", {"topic": self.topic, "model": controller.model}))
        next_check = 0.0
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500)
                for tp, messages in batches.items():
                    for m in messages:
                        message = Message(m.topic, m.partition, m.offset, m.key, m.value)
                        await self._read(codec.decode_message(message, "alert"))
                        self.progress.consumed[tp] = m.offset
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + settings.retrain_check_s
                    for step in await asyncio.to_thread(controller.tick):
                        self._step(step)
        except Exception as error:
            self.progress.crashed = f"{type(error).__name__}: {error}"
            log.exception("retrain: the loop failed")
            raise

    async def _read(self, alert: Record | DeadLetter) -> None:
        if isinstance(alert, DeadLetter):  # its readers skip it alike (the gateway counts it)
            metrics.RETRAIN_ALERTS.labels("undecodable").inc()
            log.warning(
                "retrain: skipped %s:%d@%d, not an alert: %s",
                alert.topic, alert.partition, alert.offset, alert.reason,
            )  # fmt: skip
            return
        steps = await asyncio.to_thread(self.controller.on_alert, alert)
        metrics.RETRAIN_ALERTS.labels("drift" if steps else "other").inc()
        for step in steps:
            self._step(step)
