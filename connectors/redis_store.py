"""The Redis online store: latest features per entity and a prediction cache with a TTL.

Key names (documented in the README, stable for other readers):

* ``foresight:features:<entity>``: the newest FeatureVector of the entity, no expiry
  (overwritten every window step).
* ``foresight:predictions:<entity>``: the newest PredictionBatch of the entity, expiring after
  ``PREDICTION_CACHE_TTL`` seconds, so a silent entity drops out.
* ``foresight:forecasts:<entity>``: the newest PredictionBatch that carried forecasts (they
  are refreshed every few minutes, not every step), expiring after twice that TTL.

:meth:`FeatureStore.predictions` answers the latest of everything: the newest batch's
predictions, and the forecasts of the newest batch that had them.

Values are the records' Avro bytes exactly as they travel on Kafka (framed with their schema
name and version, see :mod:`schemas.codec`): the worker stores the bytes it already encoded
for Kafka, so the cache costs no second encoding on the hot path.

Writes are pipelined per batch of entities. The client retries a failed call three times
within a second, so a blip costs a reconnect; past that the call raises, and the caller
decides (the worker keeps each entity's newest entries for its next flush, the gateway
answers without the cache): a Redis outage never stops predictions, and never holds a
reader for long.

A client holds at most ``max_connections`` connections; a call that finds them all busy
waits up to ``pool_wait_s`` for one, then raises :class:`PoolExhaustedError`, which says so
(redis-py's own error, "Too many connections", reads as if Redis were down).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlparse

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas.codec import Codec, DecodeError
from schemas.predictions import as_rows, prediction_columns, prediction_rows

log = logging.getLogger(__name__)

FEATURES_PREFIX = "foresight:features:"
PREDICTIONS_PREFIX = "foresight:predictions:"
FORECASTS_PREFIX = "foresight:forecasts:"


class PoolExhaustedError(RedisError):
    """Every connection of a client's pool stayed busy for as long as a call may wait for
    one: the process asks more of Redis at once than its pool holds (Redis itself answers)."""

    def __init__(self, max_connections: int, wait_s: float) -> None:
        super().__init__(
            f"all {max_connections} connections of the pool to Redis stayed busy for {wait_s:g} s"
        )
        self.max_connections = max_connections
        self.wait_s = wait_s


class _WaitingPool(BlockingConnectionPool):
    """redis-py's pool that waits for a free connection, raising :class:`PoolExhaustedError`
    when the wait runs out (its own error, a ConnectionError, is also what a refused
    connection raises)."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except RedisConnectionError as error:
            # Only the wait for a free connection raises from a bare asyncio timeout; a
            # connect that times out raises redis' TimeoutError.
            if isinstance(error.__cause__, asyncio.TimeoutError):
                raise PoolExhaustedError(self.max_connections, self.timeout or 0.0) from error
            raise


class FeatureStore:
    """Latest features and cached predictions in Redis.

    Parameters
    ----------
    url
        A ``redis://`` URL (``FEATURE_STORE_URL``, default ``redis://127.0.0.1:6379/0``).
    prediction_ttl_s
        Seconds a cached prediction lives (``PREDICTION_CACHE_TTL``, default 300).
    max_connections
        Connections the client holds at most (the API's ``FORESIGHT_API_REDIS_CONNECTIONS``).
    pool_wait_s
        Seconds a call waits for a free connection when all are busy before it raises
        :class:`PoolExhaustedError` (the API's ``FORESIGHT_API_REDIS_WAIT_S``).
    decoded_forecasts
        Entities whose forecasts are kept decoded (the API's ``FORESIGHT_API_FORECAST_CACHE``;
        0: none). An entity's forecasts change every few minutes, its other entries every
        step: a forecast read again with the same bytes is decoded once. The records read
        are shared between readers then, and no reader may change them.
    """

    def __init__(
        self,
        url: str,
        prediction_ttl_s: int = 300,
        codec: Codec | None = None,
        max_connections: int = 100,
        pool_wait_s: float = 2.0,
        decoded_forecasts: int = 0,
    ) -> None:
        self.prediction_ttl_s = prediction_ttl_s
        self._codec = codec or Codec()
        self._forecasts = DecodedCache(decoded_forecasts)
        parsed = urlparse(url)
        self.where = f"{parsed.hostname}:{parsed.port or 6379}{parsed.path}"
        """The server and database, without credentials, for messages."""
        pool = _WaitingPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_wait_s,
            socket_timeout=5.0,
            socket_connect_timeout=2.0,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=0.4, base=0.05), retries=3),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        self._redis = aioredis.Redis.from_pool(pool)

    async def put_encoded(
        self,
        features: Iterable[tuple[str, bytes]] = (),
        predictions: Iterable[tuple[str, bytes]] = (),
        forecasts: Iterable[tuple[str, bytes]] = (),
    ) -> None:
        """Store already encoded FeatureVector and PredictionBatch records, by entity
        (``forecasts``: the batches that carry forecasts)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for entity, value in features:
                pipe.set(FEATURES_PREFIX + entity, value)
            for entity, value in predictions:
                pipe.set(PREDICTIONS_PREFIX + entity, value, ex=self.prediction_ttl_s)
            for entity, value in forecasts:
                pipe.set(FORECASTS_PREFIX + entity, value, ex=2 * self.prediction_ttl_s)
            await pipe.execute()

    async def put_features(self, vectors: Iterable[dict[str, Any]]) -> None:
        """Store FeatureVector records as each entity's latest features."""
        await self.put_encoded(
            features=[(v["entity"], self._codec.encode("feature_vector", v)) for v in vectors]
        )

    async def put_predictions(self, batches: Iterable[dict[str, Any]]) -> None:
        """Cache PredictionBatch records per entity, with the TTL."""
        encoded = [(b, self._codec.encode("prediction_batch", b)) for b in batches]
        await self.put_encoded(
            predictions=[(b["entity"], value) for b, value in encoded],
            forecasts=[(b["entity"], value) for b, value in encoded if _has_forecasts(b)],
        )

    async def features(self, entities: Sequence[str]) -> list[dict[str, Any] | None]:
        """Latest FeatureVector record of each entity (``None`` where unknown)."""
        (vectors,) = await self._get_many((FEATURES_PREFIX,), entities)
        return vectors

    async def predictions(self, entities: Sequence[str]) -> list[dict[str, Any] | None]:
        """The latest of everything predicted about each entity, as one PredictionBatch with
        a record per prediction (``None`` where nothing is cached): the newest batch, with
        the forecasts of the newest batch that had them when it has none of its own."""
        latest, forecasts = await self._get_many((PREDICTIONS_PREFIX, FORECASTS_PREFIX), entities)
        return [latest_of_everything(new, old) for new, old in zip(latest, forecasts, strict=True)]

    async def online(
        self, entities: Sequence[str]
    ) -> tuple[
        list[dict[str, Any] | None], list[dict[str, Any] | None], list[dict[str, Any] | None]
    ]:
        """Each entity's newest PredictionBatch, the newest that had forecasts and its
        FeatureVector (``None`` where missing), as decoded, in one round trip: what
        :meth:`predictions` (see :func:`latest_parts`) and :meth:`features` answer."""
        latest, forecasts, vectors = await self._get_many(
            (PREDICTIONS_PREFIX, FORECASTS_PREFIX, FEATURES_PREFIX), entities
        )
        return latest, forecasts, vectors

    async def entities_with_predictions(self, limit: int = 10_000) -> list[str]:
        """Entities that have a cached prediction now."""
        keys: list[str] = []
        async for key in self._redis.scan_iter(match=PREDICTIONS_PREFIX + "*", count=1000):
            keys.append(key.decode()[len(PREDICTIONS_PREFIX) :])
            if len(keys) >= limit:
                break
        return sorted(keys)

    async def _get_many(
        self, prefixes: Sequence[str], entities: Sequence[str]
    ) -> list[list[dict[str, Any] | None]]:
        """Each prefix's record of each entity, all read with one ``MGET``."""
        if not entities:
            return [[] for _ in prefixes]
        raw = await self._redis.mget([p + e for p in prefixes for e in entities])
        n = len(entities)
        return [
            [self._read(p, e, r) for e, r in zip(entities, raw[k * n : (k + 1) * n], strict=True)]
            for k, p in enumerate(prefixes)
        ]

    def _read(self, prefix: str, entity: str, value: bytes | str | None) -> dict[str, Any] | None:
        if prefix != FORECASTS_PREFIX or not isinstance(value, bytes):
            return self._decode(prefix, entity, value)
        kept = self._forecasts.get(entity, value)
        if kept is None:
            kept = self._decode(prefix, entity, value)
            if kept is not None:
                self._forecasts.put(entity, value, kept)
        return kept

    def _decode(self, prefix: str, entity: str, value: bytes | str | None) -> dict[str, Any] | None:
        """A cached record, or None for a missing or unreadable one (a cache is not the
        truth: an entry written by another version is skipped, and overwritten soon)."""
        if not isinstance(value, bytes):  # the client returns bytes (no decode_responses)
            return None
        try:
            return self._codec.decode(value)[1]
        except DecodeError as error:
            log.warning("skipping unreadable cache entry %s%s: %s", prefix, entity, error)
            return None

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()


class DecodedCache:
    """The newest decoded record of up to ``size`` keys, each kept with the bytes it was
    decoded from and handed out only for the same bytes; the least recently stored goes
    first when it is full.

    >>> cache = DecodedCache(1)
    >>> cache.put("host-1", b"v1", {"value": 1})
    >>> cache.get("host-1", b"v1"), cache.get("host-1", b"v2")
    ({'value': 1}, None)
    >>> cache.put("host-2", b"v1", {"value": 2})
    >>> cache.get("host-1", b"v1") is None, len(cache)
    (True, 1)
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._kept: dict[str, tuple[bytes, dict[str, Any]]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, key: str, value: bytes) -> dict[str, Any] | None:
        """The record decoded from ``value`` for ``key``, if kept."""
        kept = self._kept.get(key)
        return kept[1] if kept is not None and kept[0] == value else None

    def put(self, key: str, value: bytes, record: dict[str, Any]) -> None:
        if self.size < 1:
            return
        self._kept.pop(key, None)  # to the end: dicts keep their insertion order
        if len(self._kept) >= self.size:
            del self._kept[next(iter(self._kept))]
        self._kept[key] = (value, record)


def _has_forecasts(batch: dict[str, Any]) -> bool:
    return any(p["kind"] == "FORECAST" for p in prediction_rows(batch))


def latest_parts(
    latest: dict[str, Any] | None, forecast: dict[str, Any] | None
) -> list[tuple[dict[str, Any], str | None]]:
    """The batches the latest of everything is read from, each with the one kind read from
    it (``None``: every kind): ``latest`` (a PredictionBatch), and the forecasts of
    ``forecast``, the newest batch that had any, when ``latest`` has none of its own."""
    if latest is None:
        return []
    if forecast is not None and "FORECAST" not in prediction_columns(latest)["kinds"]:
        return [(latest, None), (forecast, "FORECAST")]
    return [(latest, None)]


def latest_of_everything(
    latest: dict[str, Any] | None, forecast: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The latest of everything (:func:`latest_parts`) as one batch of rows."""
    parts = latest_parts(latest, forecast)
    if not parts:
        return None
    merged = as_rows(parts[0][0])
    for batch, only in parts[1:]:
        merged["predictions"] += prediction_rows(batch, only)
    return merged
