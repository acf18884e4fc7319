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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from connectors.audit import AuditTrail
from connectors.user_sql import SqlError
from models.promotion import PromotionTest
from models.registry import ModelRegistry, ModelVersion, RegistryError
from models.training import FAILURE_RISK, TrainingConfig
from schemas.codec import DeadLetter, Message
from streams import topics
from streams.codecs import codec_for
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

    def _versions(self) -> tuple[ModelVersion | None, ModelVersion | None, list[ModelVersion]]:
        """Production, the candidate under evaluation (newest candidate newer than
        production) and every version; all None/empty when the model is not registered."""
        if self.model not in self.registry.models():
            return None, None, []
        versions = self.registry.versions(self.model)
        production = next((v for v in versions if v.stage == "production"), None)
        served = int(production.version) if production else 0
        newer = [v for v in versions if v.stage == "candidate" and int(v.version) > served]
        return production, (newer[-1] if newer else None), versions

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
        try:
            trained = train_candidate(
                settings, since_ms, now_ms, settings.failure_horizon_s, config
            )
        except (SqlError, ValueError, RegistryError) as error:
            return Step("retrain_failed", {**cause, "error": str(error)})
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
            return Step("compare_failed", {"candidate": candidate.version, "error": str(error)})
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


async def run(
    controller: RetrainController, report: Callable[[Step], None], stop: asyncio.Event
) -> None:
    """Follow ``alerts`` until ``stop`` is set: each alert to :meth:`on_alert`, and every
    ``FORESIGHT_RETRAIN_CHECK_S`` :meth:`~RetrainController.check_candidate`. Training and
    testing run in a thread; alerts wait in Kafka meanwhile."""
    settings = controller.settings
    codec = codec_for(settings)
    consumer = settings.kafka().consumer(group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        count = topics.ALERTS.partition_count(settings)
        partitions = [TopicPartition(topics.ALERTS.name, p) for p in range(count)]
        consumer.assign(partitions)
        since_ms = int((controller.clock() - settings.retrain_cooldown_s) * 1000)
        found = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            at = found.get(tp)
            consumer.seek(tp, at.offset if at is not None else ends[tp])
        report(Step("following", {"topic": topics.ALERTS.name, "model": controller.model}))
        next_check = 0.0
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                for m in messages:
                    alert = codec.decode_message(
                        Message(m.topic, m.partition, m.offset, m.key, m.value), "alert"
                    )
                    if isinstance(alert, DeadLetter):
                        continue  # not an alert this build reads: the worker dead-letters those
                    for step in await asyncio.to_thread(controller.on_alert, alert):
                        report(step)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + settings.retrain_check_s
                for step in await asyncio.to_thread(controller.tick):
                    report(step)
    finally:
        await consumer.stop()
