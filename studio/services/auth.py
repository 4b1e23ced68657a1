"""Authentication of callers and enforcement of their request rate."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from studio.domain.keys import bearer_token, hash_key, same_hash
from studio.domain.limits import RATE_WINDOW_S, rate_window
from studio.errors import Forbidden, QuotaExceeded, Unauthenticated, Unavailable
from studio.ports import Cache
from studio.schemas.clients import Principal
from studio.services.clients import ClientService

log = logging.getLogger(__name__)

LOCAL_WINDOWS_KEPT = 10_000
UNKNOWN_KEYS_KEPT = 10_000


class RateLimiter:
    """Fixed one-minute windows per client.

    With a cache the count is shared by every ingress replica; without one (or while it is down) each
    replica counts alone, so the effective limit is per replica until the cache is back.
    """

    def __init__(self, cache: Cache | None) -> None:
        self._cache = cache
        self._local: OrderedDict[tuple[str, int], int] = OrderedDict()

    async def hit(self, *, client_id: str, limit: int) -> None:
        """Count one request.

        Raises:
            QuotaExceeded: the client is over `limit` in this window (with the seconds until it ends).
        """
        window, seconds_left = rate_window(time.time())
        count = await self._shared_count(client_id, window)
        if count is None:
            count = self._local_count(client_id, window)
        if count > limit:
            raise QuotaExceeded(
                f"rate limit of {limit} requests per minute reached",
                code="rate_limit_exceeded",
                retry_after_s=seconds_left,
            )

    async def _shared_count(self, client_id: str, window: int) -> int | None:
        if self._cache is None:
            return None
        try:
            return await self._cache.incr_window(f"studio:rate:{client_id}:{window}", ttl_s=RATE_WINDOW_S + 1)
        except Unavailable:
            return None

    def _local_count(self, client_id: str, window: int) -> int:
        slot = (client_id, window)
        count = self._local.pop(slot, 0) + 1
        self._local[slot] = count
        while len(self._local) > LOCAL_WINDOWS_KEPT:
            self._local.popitem(last=False)
        return count


class UnknownKeys:
    """Hashes of keys that matched no stored key, remembered for `ttl_s` (at most `max_entries`).

    Per process: a flood of requests with the same bad key costs one store lookup per replica and
    period, not one per request. A key created later cannot have been presented before (keys carry
    256 random bits), so remembering a miss never refuses a valid key.
    """

    def __init__(self, *, ttl_s: float, max_entries: int = UNKNOWN_KEYS_KEPT) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def remembers(self, key_hash: str) -> bool:
        """Return whether `key_hash` was found unknown less than `ttl_s` ago."""
        expires = self._expiry.get(key_hash)
        if expires is None:
            return False
        if expires <= time.monotonic():
            del self._expiry[key_hash]
            return False
        return True

    def add(self, key_hash: str) -> None:
        """Remember `key_hash` as unknown; the oldest entries go first when full."""
        if self._ttl_s <= 0:
            return
        self._expiry[key_hash] = time.monotonic() + self._ttl_s
        self._expiry.move_to_end(key_hash)
        while len(self._expiry) > self._max_entries:
            self._expiry.popitem(last=False)


class AuthService:
    """Turns an `Authorization` header into a `Principal`, or the admin's permission."""

    def __init__(
        self,
        *,
        clients: ClientService,
        rate_limiter: RateLimiter,
        admin_key_hash: str,
        unknown_key_ttl_s: float = 5.0,
    ) -> None:
        self._clients = clients
        self._rate_limiter = rate_limiter
        self._admin_key_hash = admin_key_hash
        self._unknown = UnknownKeys(ttl_s=unknown_key_ttl_s)

    async def authenticate(self, authorization: str | None) -> Principal:
        """Return the calling client.

        Raises:
            Unauthenticated: no key, an unknown key or a disabled key.
            Forbidden: the client is disabled.
            QuotaExceeded: the client is over its requests per minute.
        """
        token = bearer_token(authorization)
        if token is None:
            raise Unauthenticated(
                "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key"
            )
        key_hash = hash_key(token)
        if self._unknown.remembers(key_hash):
            raise Unauthenticated("incorrect or disabled API key")
        key = await self._clients.find_key(key_hash)
        if key is None:
            self._unknown.add(key_hash)
        if key is None or key.disabled:
            raise Unauthenticated("incorrect or disabled API key")
        client = await self._clients.get_client(key.client_id)
        if client.disabled:
            raise Forbidden(f"client {client.id!r} is disabled", code="client_disabled")
        await self._rate_limiter.hit(client_id=client.id, limit=client.limits.requests_per_minute)
        return Principal(client=client, key_id=key.id)

    def require_admin(self, authorization: str | None) -> None:
        """Check the admin key.

        Raises:
            Unauthenticated: no key or not the admin key.
        """
        token = bearer_token(authorization)
        if token is None:
            raise Unauthenticated(
                "missing admin key: send 'Authorization: Bearer <key>'", code="missing_api_key"
            )
        if not same_hash(hash_key(token), self._admin_key_hash):
            raise Unauthenticated("incorrect admin key")
