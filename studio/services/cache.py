"""Best-effort caching in front of the store: a cache that is down is skipped, never an error."""

from __future__ import annotations

import logging
from typing import TypeVar

from pydantic import BaseModel

from studio.errors import Unavailable
from studio.ports import Cache

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)


class ReadThroughCache:
    """Wraps an optional `Cache` so that callers read, fill and invalidate without handling outages."""

    def __init__(self, cache: Cache | None, *, ttl_s: int, prefix: str = "studio:") -> None:
        self._cache = cache
        self._ttl_s = ttl_s
        self._prefix = prefix

    async def get(self, key: str, model: type[ModelT]) -> ModelT | None:
        """Return the cached value, or None on a miss, an undecodable entry or a cache outage."""
        if self._cache is None:
            return None
        try:
            raw = await self._cache.get(self._prefix + key)
        except Unavailable as exc:
            log.warning("cache read skipped: %s", exc.message)
            return None
        if raw is None:
            return None
        try:
            return model.model_validate_json(raw)
        except ValueError:
            return None

    async def put(self, key: str, value: BaseModel) -> None:
        """Store `value` for the configured TTL; a cache outage is logged and ignored."""
        if self._cache is None:
            return
        try:
            await self._cache.set(self._prefix + key, value.model_dump_json().encode(), ttl_s=self._ttl_s)
        except Unavailable as exc:
            log.warning("cache write skipped: %s", exc.message)

    async def invalidate(self, *keys: str) -> None:
        """Drop entries after a change. A cache outage here is logged: the TTL bounds staleness."""
        if self._cache is None or not keys:
            return
        try:
            await self._cache.delete(*(self._prefix + key for key in keys))
        except Unavailable as exc:
            log.error("cache invalidation failed, entries expire within the TTL: %s", exc.message)
