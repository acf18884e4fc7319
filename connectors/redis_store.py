"""The Redis online store: latest features per entity and a prediction cache with a TTL.

Key names (documented in the README, stable for other readers):

* ``foresight:features:<entity>``: JSON ``{"event_time": ms, "names": [...], "values": [...]}``,
  the newest feature vector of the entity, no expiry (overwritten every window step).
* ``foresight:predictions:<entity>``: JSON of the newest PredictionBatch of the entity,
  expiring after ``PREDICTION_CACHE_TTL`` seconds, so a silent entity drops out.

Writes are pipelined per batch of entities. The client retries with backoff on connection
errors, so a Redis restart costs reconnects, not crashes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

FEATURES_PREFIX = "foresight:features:"
PREDICTIONS_PREFIX = "foresight:predictions:"


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"cannot store {type(value).__name__} in Redis JSON")


class FeatureStore:
    """Latest features and cached predictions in Redis.

    Parameters
    ----------
    url
        A ``redis://`` URL (``FEATURE_STORE_URL``, default ``redis://127.0.0.1:6379/0``).
    prediction_ttl_s
        Seconds a cached prediction lives (``PREDICTION_CACHE_TTL``, default 300).
    """

    def __init__(self, url: str, prediction_ttl_s: int = 300) -> None:
        self.prediction_ttl_s = prediction_ttl_s
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=5.0,
            socket_connect_timeout=2.0,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=8),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )

    async def put_features(self, vectors: Iterable[dict[str, Any]]) -> None:
        """Store FeatureVector records as each entity's latest features."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for vector in vectors:
                value = {k: vector[k] for k in ("event_time", "names", "values")}
                pipe.set(FEATURES_PREFIX + vector["entity"], json.dumps(value))
            await pipe.execute()

    async def put_predictions(self, batches: Iterable[dict[str, Any]]) -> None:
        """Cache PredictionBatch records per entity, with the TTL."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for batch in batches:
                pipe.set(
                    PREDICTIONS_PREFIX + batch["entity"],
                    json.dumps(batch, default=_json_default),
                    ex=self.prediction_ttl_s,
                )
            await pipe.execute()

    async def features(self, entities: Sequence[str]) -> list[dict[str, Any] | None]:
        """Latest features of each entity (``None`` where unknown)."""
        return await self._get_many(FEATURES_PREFIX, entities)

    async def predictions(self, entities: Sequence[str]) -> list[dict[str, Any] | None]:
        """Cached predictions of each entity (``None`` where absent or expired)."""
        return await self._get_many(PREDICTIONS_PREFIX, entities)

    async def entities_with_predictions(self, limit: int = 10_000) -> list[str]:
        """Entities that have a cached prediction now."""
        keys: list[str] = []
        async for key in self._redis.scan_iter(match=PREDICTIONS_PREFIX + "*", count=1000):
            keys.append(key.decode()[len(PREDICTIONS_PREFIX) :])
            if len(keys) >= limit:
                break
        return sorted(keys)

    async def _get_many(self, prefix: str, entities: Sequence[str]) -> list[dict[str, Any] | None]:
        if not entities:
            return []
        raw = await self._redis.mget([prefix + e for e in entities])
        return [json.loads(r) if r is not None else None for r in raw]

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()
