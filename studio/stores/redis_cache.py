"""`Cache` on Redis, with a short circuit breaker so an outage costs one timeout, not one per request.

Works on Redis 6 and later (and Valkey): the rate limiter's window counter is a Lua script of INCR,
TTL and EXPIRE, not `EXPIRE ... NX` (Redis 7 only), which the distributions' Redis 6 refuses.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from studio.config import RedisSettings
from studio.errors import Unavailable

T = TypeVar("T")

# Increment KEYS[1]; give it a TTL of ARGV[1] seconds unless it has one (what `EXPIRE NX` does on 7+),
# so the window starts at the first increment and a key somehow left without a TTL still gets one.
# Atomic: a script runs alone on the server.
INCR_WINDOW = """
local count = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return count
"""


class RedisCache:
    def __init__(self, client: aioredis.Redis, *, retry_after_s: float) -> None:
        self._redis = client
        self._retry_after_s = retry_after_s
        # EVALSHA, loading the script (EVAL) on the first call and after a server restart.
        self._incr_window = client.register_script(INCR_WINDOW)
        self._down_until = 0.0

    @classmethod
    def from_settings(cls, url: str, settings: RedisSettings) -> RedisCache:
        """Return a cache for `url`; connections open lazily, so a Redis down at start is not fatal."""
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=settings.timeout_s,
            socket_connect_timeout=settings.timeout_s,
            health_check_interval=30,
        )
        return cls(client, retry_after_s=settings.retry_after_s)

    async def _call(self, operation: Awaitable[T], *, probe: bool = False) -> T:
        if not probe and time.monotonic() < self._down_until:
            if hasattr(operation, "close"):
                operation.close()
            raise Unavailable("cache unavailable (recent failure)")
        try:
            result = await operation
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + self._retry_after_s
            raise Unavailable(f"cache unavailable: {type(exc).__name__}: {exc}") from exc
        self._down_until = 0.0
        return result

    async def get(self, key: str) -> bytes | None:
        value = await self._call(self._redis.get(key))
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def set(self, key: str, value: bytes, *, ttl_s: int) -> None:
        await self._call(self._redis.set(key, value, ex=ttl_s))

    async def delete(self, *keys: str) -> None:
        await self._call(self._redis.delete(*keys))

    async def incr_window(self, key: str, *, ttl_s: int) -> int:
        count = await self._call(self._incr_window(keys=[key], args=[ttl_s]))
        return int(count)

    async def ping(self) -> None:
        await self._call(self._redis.ping(), probe=True)

    async def close(self) -> None:
        await self._redis.aclose()
