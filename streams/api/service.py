"""What the intelligence API knows and does, once for REST and GraphQL alike.

:class:`Intelligence` holds the services the routes and the resolvers call: the
:class:`~streams.api.predict.Predictor` (on-demand predictions), the
:class:`~streams.api.history.History` (ClickHouse), the online store (Redis), the model
registry, and the :class:`~connectors.live_feed.LiveFeed` (firing alerts now, and the
subscriptions' fan-out).
"""

from __future__ import annotations

import asyncio
import fnmatch
from typing import Any

from redis.exceptions import RedisError

from connectors.audit import AuditTrail
from connectors.http.errors import ApiError
from connectors.live_feed import LiveFeed
from connectors.redis_store import FeatureStore
from models.features import vector_names
from models.registry import ModelRegistry, ModelVersion, RegistryError, UnknownModelError
from streams.api import schema
from streams.api.history import History
from streams.api.predict import Predictor, store_error
from streams.operations import Caller, ModelChange, promote_model, rollback_model
from streams.settings import Settings


def _finite(value: float) -> float | None:
    return value if value == value and abs(value) != float("inf") else None


def alert_row(alert: dict[str, Any]) -> schema.AlertRow:
    """An Alert record as the API shows it."""
    return schema.AlertRow(
        **{k: alert[k] for k in ("dedup_key", "alert_id", "status", "severity", "rule")},
        entity=alert["entity"],
        summary=alert["summary"],
        value=_finite(alert["value"]),
        labels=dict(alert.get("labels") or {}),
        starts_at=alert["starts_at"],
        ends_at=alert["ends_at"],
        event_time=alert["event_time"],
    )


def version_info(version: ModelVersion) -> schema.ModelVersionInfo:
    return schema.ModelVersionInfo(
        model=version.model,
        version=version.version,
        stage=version.stage,
        kind=version.kind,
        created_at=version.created_at,
        since=version.since,
        until=version.until,
        features=len(version.features),
        feature_hash=version.feature_hash,
        feature_set=version.feature_set,
        metrics=version.metrics,
        parent=version.parent,
        content_hash=version.content_hash,
    )


def _registry_error(error: RegistryError) -> ApiError:
    return ApiError(404 if isinstance(error, UnknownModelError) else 409, str(error))


class Intelligence:
    """The services behind every route and resolver (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: FeatureStore,
        predictor: Predictor,
        history: History,
        feed: LiveFeed,
        audit: AuditTrail,
    ) -> None:
        self.settings = settings
        self.store = store
        self.predictor = predictor
        self.history = history
        self.feed = feed
        self.audit = audit

    # -- the online store ---------------------------------------------------------------

    async def entities(self, glob: str, limit: int) -> schema.EntityList:
        """Entities with cached predictions whose name fits ``glob``, sorted."""
        try:
            known = await self.store.entities_with_predictions(limit=100_000)
        except RedisError as error:
            raise store_error(error) from error
        matching = [e for e in known if fnmatch.fnmatchcase(e, glob)]
        return schema.EntityList(entities=matching[:limit], truncated=len(matching) > limit)

    async def features(self, entity: str, as_of: int | None) -> schema.FeatureVector:
        """The entity's latest features (Redis), or those it had at ``as_of`` (ClickHouse)."""
        if as_of is not None:
            (answer,) = (
                await self.history.features_as_of([schema.AsOfRow(entity=entity, as_of=as_of)])
            ).rows
            if answer.vector is None:
                raise ApiError(
                    404, f"no features of entity {entity!r} stamped at or before {as_of}"
                )
            return answer.vector
        try:
            (vector,) = await self.store.features([entity])
        except RedisError as error:
            raise store_error(error) from error
        if vector is None:
            raise ApiError(
                404,
                f"no features of entity {entity!r} in the online store: the worker has not "
                "stepped it (check the name), or ask for as_of to read ClickHouse",
            )
        return schema.FeatureVector(
            entity=entity,
            event_time=vector["event_time"],
            feature_set=vector.get("feature_set", ""),
            features={
                name: _finite(value)
                for name, value in zip(vector_names(vector), vector["values"], strict=True)
            },
        )

    def firing_alerts(self, glob: str = "*") -> schema.FiringAlerts:
        return schema.FiringAlerts(
            alerts=[
                alert_row(a)
                for a in self.feed.firing_alerts()
                if fnmatch.fnmatchcase(a["entity"], glob)
            ]
        )

    # -- the registry -------------------------------------------------------------------

    def _registry(self) -> ModelRegistry:
        return ModelRegistry(self.settings.model_registry_url)

    def _model_info(self, name: str) -> schema.ModelInfo:
        versions = self._registry().versions(name)
        production = [v.version for v in versions if v.stage == "production"]
        return schema.ModelInfo(
            name=name,
            production=production[0] if production else None,
            versions=[version_info(v) for v in versions],
        )

    async def models(self) -> schema.ModelList:
        def read() -> schema.ModelList:
            return schema.ModelList(models=[self._model_info(n) for n in self._registry().models()])

        try:
            return await asyncio.to_thread(read)
        except RegistryError as error:
            raise _registry_error(error) from error

    async def model(self, name: str) -> schema.ModelInfo:
        try:
            return await asyncio.to_thread(self._model_info, name)
        except RegistryError as error:
            raise _registry_error(error) from error

    async def model_version(self, name: str, version: str) -> schema.ModelVersionInfo:
        try:
            found = await asyncio.to_thread(self._registry().show, name, version)
        except RegistryError as error:
            raise _registry_error(error) from error
        return version_info(found)

    async def promote(self, name: str, version: str, caller: Caller) -> schema.ModelChangeResponse:
        """Put ``version`` of ``name`` in production, as ``foresight models promote`` does
        (audited, announced on ``models.updates``), for a caller with ``operate``."""
        try:
            change = await asyncio.to_thread(
                promote_model, self.settings, self.audit, name, version, caller
            )
        except RegistryError as error:
            raise _registry_error(error) from error
        return _changed(change)

    async def rollback(self, name: str, caller: Caller) -> schema.ModelChangeResponse:
        try:
            change = await asyncio.to_thread(
                rollback_model, self.settings, self.audit, name, caller
            )
        except RegistryError as error:
            raise _registry_error(error) from error
        return _changed(change)


def _changed(change: ModelChange) -> schema.ModelChangeResponse:
    return schema.ModelChangeResponse(
        updates=change.updates, published=change.problem is None, problem=change.problem
    )
