"""Clients (tenants) and their API keys, with client configuration read through the cache."""

from __future__ import annotations

from studio.domain.ids import new_id, unix_now
from studio.domain.keys import generate_key
from studio.errors import NotFound
from studio.ports import ClientRepository
from studio.schemas.clients import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    Client,
    ClientCreate,
    ClientLimits,
    ClientUpdate,
)
from studio.services.cache import ReadThroughCache


def client_cache_key(client_id: str) -> str:
    return f"client_config:{client_id}"


def key_cache_key(key_hash: str) -> str:
    return f"api_key:{key_hash}"


class ClientService:
    """Creates, lists and disables clients and keys; serves client configuration from the cache."""

    def __init__(
        self, *, repository: ClientRepository, cache: ReadThroughCache, default_limits: ClientLimits
    ):
        self._repo = repository
        self._cache = cache
        self._default_limits = default_limits

    async def create_client(self, data: ClientCreate) -> Client:
        """Create and return a client with the given or default limits."""
        client = Client(
            id=new_id("client"),
            name=data.name,
            limits=data.limits or self._default_limits.model_copy(deep=True),
            created_at=unix_now(),
        )
        await self._repo.insert_client(client)
        return client

    async def list_clients(self, *, after: str | None, limit: int) -> tuple[list[Client], bool]:
        """Return up to `limit` clients after the id `after`, and whether more follow."""
        rows = await self._repo.list_clients(after=after, limit=limit + 1)
        return rows[:limit], len(rows) > limit

    async def get_client(self, client_id: str) -> Client:
        """Return the client's configuration, from the cache when fresh.

        Raises:
            NotFound: no such client.
        """
        cached = await self._cache.get(client_cache_key(client_id), Client)
        if cached is not None:
            return cached
        client = await self._repo.get_client(client_id)
        if client is None:
            raise NotFound(f"no client {client_id!r}", param="client_id", code="client_not_found")
        await self._cache.put(client_cache_key(client_id), client)
        return client

    async def set_client_disabled(self, client_id: str, *, disabled: bool) -> Client:
        """Disable or re-enable a client; its keys stop (or resume) working at once.

        Raises:
            NotFound: no such client.
        """
        client = await self._repo.set_client_disabled(client_id, disabled)
        if client is None:
            raise NotFound(f"no client {client_id!r}", param="client_id", code="client_not_found")
        await self._cache.invalidate(client_cache_key(client_id))
        return client

    async def update_client(self, client_id: str, data: ClientUpdate) -> Client:
        """Rename a client or change its limits (only the limits sent); effective at once.

        Raises:
            NotFound: no such client.
        """
        current = await self._repo.get_client(client_id)
        updated = None
        if current is not None:
            limits = current.limits
            if data.limits is not None:
                limits = limits.model_copy(update=data.limits.model_dump(exclude_unset=True))
            updated = await self._repo.update_client(client_id, name=data.name or current.name, limits=limits)
        if updated is None:
            raise NotFound(f"no client {client_id!r}", param="client_id", code="client_not_found")
        await self._cache.invalidate(client_cache_key(client_id))
        return updated

    async def create_key(self, client_id: str, data: ApiKeyCreate) -> ApiKeyCreated:
        """Create a key for the client; the returned object is the only place its secret appears.

        Raises:
            NotFound: no such client.
        """
        await self.get_client(client_id)
        new = generate_key()
        key = ApiKey(
            id=new_id("key"),
            client_id=client_id,
            name=data.name,
            key_hash=new.key_hash,
            hint=new.hint,
            created_at=unix_now(),
        )
        await self._repo.insert_key(key)
        return ApiKeyCreated(**ApiKeyPublic.of(key).model_dump(), secret=new.secret)

    async def list_keys(self, client_id: str) -> list[ApiKey]:
        """Return the client's keys (hashes stay inside the service layer).

        Raises:
            NotFound: no such client.
        """
        await self.get_client(client_id)
        return await self._repo.list_keys(client_id)

    async def set_key_disabled(self, client_id: str, key_id: str, *, disabled: bool) -> ApiKey:
        """Disable or re-enable one key of the client.

        Raises:
            NotFound: the client has no such key.
        """
        key = await self._repo.set_key_disabled(client_id=client_id, key_id=key_id, disabled=disabled)
        if key is None:
            raise NotFound(
                f"client {client_id!r} has no key {key_id!r}", param="key_id", code="key_not_found"
            )
        await self._cache.invalidate(key_cache_key(key.key_hash))
        return key

    async def find_key(self, key_hash: str) -> ApiKey | None:
        """Return the key stored under `key_hash`, from the cache when fresh."""
        cached = await self._cache.get(key_cache_key(key_hash), ApiKey)
        if cached is not None:
            return cached
        key = await self._repo.find_key_by_hash(key_hash)
        if key is not None:
            await self._cache.put(key_cache_key(key_hash), key)
        return key
