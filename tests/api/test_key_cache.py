"""Key lookups: unknown keys are remembered briefly; a disabled key is not brought back by a slow reader.

The last two tests drive `ClientService` on the real MongoDB-protocol server and redis-server, as two
ingress replicas would share them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from studio.config import Settings
from studio.domain.keys import hash_key
from studio.schemas.clients import ApiKey, ApiKeyCreate, ClientCreate, ClientLimits
from studio.services.auth import UnknownKeys
from studio.services.cache import ReadThroughCache
from studio.services.clients import ClientService, key_cache_key
from studio.stores.mongo import MongoStore
from studio.stores.mongo_clients import MongoClientRepository
from studio.stores.redis_cache import RedisCache
from tests.api.conftest import new_client
from tests.api.test_auth import assert_error


async def test_a_flood_of_one_unknown_key_reaches_the_store_once(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, good = await new_client(api)
    lookups: list[str] = []
    find = MongoClientRepository.find_key_by_hash

    async def counted(self: MongoClientRepository, key_hash: str) -> ApiKey | None:
        lookups.append(key_hash)
        return await find(self, key_hash)

    monkeypatch.setattr(MongoClientRepository, "find_key_by_hash", counted)
    bad = {"Authorization": "Bearer sk-ms-guessed-0001"}
    for _ in range(20):
        assert_error(await api.get("/v1/me", headers=bad), 401, "invalid_api_key")
        assert_error(await api.post("/v1/files", content=b"x" * 1000, headers=bad), 401, "invalid_api_key")
    assert lookups == [hash_key("sk-ms-guessed-0001")]
    assert_error(await api.get("/v1/me", headers={"Authorization": "Bearer sk-ms-guessed-0002"}), 401)
    assert lookups[1:] == [hash_key("sk-ms-guessed-0002")]
    assert (await api.get("/v1/me", headers=good)).status_code == 200


async def test_unknown_keys_are_forgotten_after_their_time() -> None:
    unknown = UnknownKeys(ttl_s=0.05)
    unknown.add("h1")
    assert unknown.remembers("h1") and not unknown.remembers("h2")
    await asyncio.sleep(0.06)
    assert not unknown.remembers("h1")


def test_unknown_keys_are_bounded_and_can_be_turned_off() -> None:
    unknown = UnknownKeys(ttl_s=60, max_entries=3)
    for index in range(5):
        unknown.add(f"h{index}")
    assert [unknown.remembers(f"h{index}") for index in range(5)] == [False, False, True, True, True]
    off = UnknownKeys(ttl_s=0)
    off.add("h")
    assert not off.remembers("h")


@dataclass
class Stores:
    store: MongoStore
    redis: RedisCache

    def replica(self, repository: Any = None, cache: Any = None) -> ClientService:
        """A `ClientService` as one ingress replica has it: its own local cache, the shared Redis."""
        return ClientService(
            repository=repository or self.store.clients,
            cache=ReadThroughCache(cache or self.redis, ttl_s=60, local_ttl_s=1.0),
            default_limits=ClientLimits(),
        )


@pytest.fixture
async def stores(settings: Settings, redis_url: str) -> AsyncIterator[Stores]:
    assert settings.store.mongo_url is not None
    store = await MongoStore.connect(settings.store.mongo_url.get_secret_value(), settings.store)
    redis = RedisCache.from_settings(redis_url, settings.redis)
    yield Stores(store, redis)
    await redis.close()
    await store.close()


class PausedKeyReads:
    """The key repository, but a lookup waits for `release` after it has read the store."""

    def __init__(self, repository: MongoClientRepository) -> None:
        self._repository = repository
        self.read = asyncio.Event()
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repository, name)

    async def find_key_by_hash(self, key_hash: str) -> ApiKey | None:
        key = await self._repository.find_key_by_hash(key_hash)
        self.read.set()
        await self.release.wait()
        return key


async def new_key(admin: ClientService) -> tuple[str, ApiKey]:
    client = await admin.create_client(ClientCreate(name="acme"))
    created = await admin.create_key(client.id, ApiKeyCreate())
    key = await admin.find_key(hash_key(created.secret))
    assert key is not None
    return client.id, key


async def test_a_read_from_before_a_disable_does_not_refill_the_cache(stores: Stores) -> None:
    admin = stores.replica()
    client_id, key = await new_key(admin)
    await stores.redis.delete("studio:" + key_cache_key(key.key_hash))
    paused = PausedKeyReads(stores.store.clients)
    slow = asyncio.create_task(stores.replica(repository=paused).find_key(key.key_hash))
    await paused.read.wait()  # the slow replica has read the key, still enabled
    await admin.set_key_disabled(client_id, key.id, disabled=True)
    paused.release.set()
    stale = await slow
    assert stale is not None and stale.disabled is False  # what it read, before the change
    seen = await stores.replica().find_key(key.key_hash)
    assert seen is not None and seen.disabled is True


class InvalidatedBeforeWrite:
    """The shared cache, but the write of `key` first lets `invalidation` run (and stops hooking)."""

    def __init__(self, redis: RedisCache, key: str, invalidation: Any) -> None:
        self._redis = redis
        self._key = key
        self._invalidation = invalidation

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)

    async def set(self, key: str, value: bytes, *, ttl_s: int) -> None:
        if key == self._key and self._invalidation is not None:
            invalidation, self._invalidation = self._invalidation, None
            await invalidation()
        await self._redis.set(key, value, ttl_s=ttl_s)


async def test_a_disable_between_the_check_and_the_write_undoes_the_write(stores: Stores) -> None:
    admin = stores.replica()
    client_id, key = await new_key(admin)
    cache_key = "studio:" + key_cache_key(key.key_hash)
    await stores.redis.delete(cache_key)

    async def disable() -> None:
        await admin.set_key_disabled(client_id, key.id, disabled=True)

    racing = InvalidatedBeforeWrite(stores.redis, cache_key, disable)
    stale = await stores.replica(cache=racing).find_key(key.key_hash)
    assert stale is not None and stale.disabled is False
    assert await stores.redis.get(cache_key) is None
    seen = await stores.replica().find_key(key.key_hash)
    assert seen is not None and seen.disabled is True
