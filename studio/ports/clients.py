"""Clients (tenants) and their API keys."""

from __future__ import annotations

from typing import Protocol

from studio.schemas.clients import ApiKey, Client, ClientLimits


class ClientRepository(Protocol):
    """Clients and API keys (`client_config`, `api_keys`)."""

    async def insert_client(self, client: Client) -> None: ...

    async def get_client(self, client_id: str) -> Client | None: ...

    async def get_clients(self, client_ids: list[str]) -> list[Client]:
        """Return the clients of `client_ids` that exist, in no particular order."""
        ...

    async def list_clients(self, *, after: str | None, limit: int) -> list[Client]: ...

    async def set_client_disabled(self, client_id: str, disabled: bool) -> Client | None:
        """Return the updated client, or None when it does not exist."""
        ...

    async def update_client(self, client_id: str, *, name: str, limits: ClientLimits) -> Client | None:
        """Write the client's name and limits; return the updated client, or None when it does not exist."""
        ...

    async def insert_key(self, key: ApiKey) -> None: ...

    async def find_key_by_hash(self, key_hash: str) -> ApiKey | None: ...

    async def list_keys(self, client_id: str) -> list[ApiKey]: ...

    async def set_key_disabled(self, *, client_id: str, key_id: str, disabled: bool) -> ApiKey | None:
        """Return the updated key, or None when the client has no such key."""
        ...
