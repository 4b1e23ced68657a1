"""Async Protocols for every external system. Adapters live in `stores/`; `app/` picks them.

Every method either completes within its adapter's timeout or raises `studio.errors.Unavailable`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from studio.schemas.clients import ApiKey, Client


class ClientRepository(Protocol):
    """Clients and API keys (`client_config`, `api_keys`)."""

    async def insert_client(self, client: Client) -> None: ...

    async def get_client(self, client_id: str) -> Client | None: ...

    async def list_clients(self, *, after: str | None, limit: int) -> list[Client]: ...

    async def set_client_disabled(self, client_id: str, disabled: bool) -> Client | None:
        """Return the updated client, or None when it does not exist."""
        ...

    async def insert_key(self, key: ApiKey) -> None: ...

    async def find_key_by_hash(self, key_hash: str) -> ApiKey | None: ...

    async def list_keys(self, client_id: str) -> list[ApiKey]: ...

    async def set_key_disabled(self, *, client_id: str, key_id: str, disabled: bool) -> ApiKey | None:
        """Return the updated key, or None when the client has no such key."""
        ...


class DocumentStore(Protocol):
    """The database: repositories plus lifecycle."""

    @property
    def clients(self) -> ClientRepository: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class Cache(Protocol):
    """A shared key-value cache with expiry (Redis)."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, *, ttl_s: int) -> None: ...

    async def delete(self, *keys: str) -> None: ...

    async def incr_window(self, key: str, *, ttl_s: int) -> int:
        """Increment a counter that expires `ttl_s` after its first increment; return the new value."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class ObjectStore(Protocol):
    """An S3-compatible bucket."""

    @property
    def bucket(self) -> str: ...

    async def put_file(self, *, key: str, path: Path) -> str:
        """Upload `path` to `key` (multipart for big files); return its `s3://` URI."""
        ...

    async def get_file(self, *, key: str, path: Path) -> None: ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
