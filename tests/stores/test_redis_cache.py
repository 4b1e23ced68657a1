"""`RedisCache.incr_window` on the real redis-server: a window counter without `EXPIRE ... NX`.

`EXPIRE` with `NX` exists from Redis 7.0 only; Redis 6 (what `cluster.yaml` installs on common images)
refuses it, and the rate limiter then fell back to per-replica counting. The server here is whatever
`redis-server` the machine has (7.x on Debian 12/13), so the test also reads the commands the server ran
(MONITOR) and checks that each exists in Redis 6 with the arguments given.
"""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

from studio.config import RedisSettings
from studio.stores.redis_cache import RedisCache

# The commands the window counter may send, and the most arguments each takes in Redis 6.2.
REDIS_6_COMMANDS = {"evalsha": None, "eval": None, "script": None, "incr": 1, "ttl": 1, "expire": 2}


async def test_the_window_counter_counts_expires_and_uses_only_redis_6_commands(redis_url: str) -> None:
    cache = RedisCache.from_settings(redis_url, RedisSettings(url=redis_url))
    # The test's own reads and writes, on one connection, whose commands the check below leaves out.
    raw = aioredis.Redis.from_url(redis_url, socket_timeout=5, single_connection_client=True)
    own_port = str((await raw.client_info())["addr"]).rsplit(":", 1)[1]
    key = f"test:window:{uuid.uuid4().hex}"
    seen: list[list[str]] = []
    monitor_ready = asyncio.Event()

    async def watch() -> None:
        async with raw.monitor() as monitor:
            monitor_ready.set()
            async for command in monitor.listen():
                if key in command["command"] and command["client_port"] != own_port:
                    seen.append(command["command"].split())

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(monitor_ready.wait(), timeout=5)
        await asyncio.sleep(0.2)  # MONITOR is registered once the server answered it
        counts = [await cache.incr_window(key, ttl_s=60) for _ in range(3)]
        assert counts == [1, 2, 3]
        ttl = await raw.ttl(key)
        assert 0 < ttl <= 60
        # Later increments keep the window's first expiry (NX semantics): not pushed back to 120.
        await cache.incr_window(key, ttl_s=120)
        assert await raw.ttl(key) <= 60

        # A counter left without a TTL (written by something else) gets one on its next increment.
        await raw.set(key, 7)
        assert await raw.ttl(key) == -1
        assert await cache.incr_window(key, ttl_s=30) == 8
        assert 0 < await raw.ttl(key) <= 30

        # An expired window starts again at 1.
        await cache.incr_window(f"{key}:short", ttl_s=1)
        await asyncio.sleep(2.1)
        assert await cache.incr_window(f"{key}:short", ttl_s=1) == 1
        await asyncio.sleep(0.3)  # MONITOR lines arrive after the replies
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await raw.delete(key, f"{key}:short")
        await raw.aclose()
        await cache.close()

    names = [command[0].lower() for command in seen]
    assert "incr" in names and "expire" in names, seen  # the script's own commands are listed too
    for command in seen:
        name, *args = command
        assert name.lower() in REDIS_6_COMMANDS, command
        limit = REDIS_6_COMMANDS[name.lower()]
        assert limit is None or len(args) <= limit, command  # EXPIRE key seconds: no NX/XX/GT/LT
