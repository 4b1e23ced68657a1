"""Best-effort caching in front of the store: a cache that is down is skipped, never an error."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import TypeVar

from pydantic import BaseModel

from studio.errors import Unavailable
from studio.ports import Cache

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)


class ReadThroughCache:
    """Wraps an optional `Cache` so that callers read, fill and invalidate without handling outages.

    In front of it, entries are also kept in this process for `local_ttl_s` (bounded to `local_max`
    entries): hot reads (every request's key and client) need no round trip.

    A reader that read the store before a change may fill the cache after the change invalidated
    it; left alone, that old value (a key still enabled) would be served until the TTL. So
    `invalidate` leaves a marker for `invalidation_grace_s` (longer than a store read can take), and
    `put` does not fill the shared cache while a marker is there; a marker that appears between
    that check and the write makes `put` delete what it wrote. The local copies stay bounded by
    `local_ttl_s`, as any local copy is.
    """

    def __init__(
        self,
        cache: Cache | None,
        *,
        ttl_s: int,
        prefix: str = "studio:",
        local_ttl_s: float = 0.0,
        local_max: int = 10_000,
        invalidation_grace_s: int = 30,
    ) -> None:
        self._cache = cache
        self._ttl_s = ttl_s
        self._prefix = prefix
        self._local_ttl_s = local_ttl_s
        self._local_max = local_max
        self._invalidation_grace_s = invalidation_grace_s
        self._local: OrderedDict[str, tuple[float, BaseModel]] = OrderedDict()

    def _marker(self, key: str) -> str:
        return f"{self._prefix}invalidated:{key}"

    def _local_get(self, key: str, model: type[ModelT]) -> ModelT | None:
        entry = self._local.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < time.monotonic() or not isinstance(value, model):
            self._local.pop(key, None)
            return None
        return value

    def _local_put(self, key: str, value: BaseModel) -> None:
        if self._local_ttl_s <= 0:
            return
        self._local[key] = (time.monotonic() + self._local_ttl_s, value)
        self._local.move_to_end(key)
        while len(self._local) > self._local_max:
            self._local.popitem(last=False)

    async def get(self, key: str, model: type[ModelT]) -> ModelT | None:
        """Return the cached value, or None on a miss, an undecodable entry or a cache outage."""
        local = self._local_get(key, model)
        if local is not None:
            return local
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
            value = model.model_validate_json(raw)
        except ValueError:
            return None
        self._local_put(key, value)
        return value

    async def put(self, key: str, value: BaseModel) -> None:
        """Store `value` (read from the store) for the configured TTL, unless `key` changed moments ago.

        A cache outage is logged and ignored.
        """
        self._local_put(key, value)
        if self._cache is None:
            return
        try:
            # Changed within the grace period: `value` may have been read before the change.
            if await self._cache.get(self._marker(key)) is not None:
                return
            await self._cache.set(self._prefix + key, value.model_dump_json().encode(), ttl_s=self._ttl_s)
            if await self._cache.get(self._marker(key)) is not None:
                await self._cache.delete(self._prefix + key)
        except Unavailable as exc:
            log.warning("cache write skipped: %s", exc.message)

    async def invalidate(self, *keys: str) -> None:
        """Drop entries after a change. A cache outage here is logged: the TTL bounds staleness."""
        for key in keys:
            self._local.pop(key, None)
        if self._cache is None or not keys:
            return
        try:
            # The marker first, then the delete: a `put` that writes after the delete sees the marker.
            for key in keys:
                await self._cache.set(self._marker(key), b"1", ttl_s=self._invalidation_grace_s)
            await self._cache.delete(*(self._prefix + key for key in keys))
        except Unavailable as exc:
            log.error("cache invalidation failed, entries expire within the TTL: %s", exc.message)
