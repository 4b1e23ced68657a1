"""`Idempotency-Key` on creates: the same key and body from the same client give the same answer once.

The first request with a key claims it atomically (a record inserted under the unique `<client>:<key>`
id, `in_progress`), runs the create and stores its answer (`done`: status and body). A later request
with the key and the same body (by hash) gets that stored answer and nothing runs again; with another
body, a 409 `idempotency_key_reused`. One arriving while the first still runs waits up to `wait_s` for
its answer, then gets a 409 `idempotency_key_in_progress` that the SDK may retry. A create that raises
drops its claim, so a retry runs it. Records expire after `ttl_s` (a TTL index in the store).

A streamed create (a multipart upload) cannot be fingerprinted before it runs: `run_streamed` claims
the key first with a placeholder hash for its path (`pending:` + scope), reads the body while the
create runs, and stores the body's real fingerprint with the answer. A repeat waits for that answer,
then reads (hashes, discards) its own body and compares: the same -> the stored answer, nothing
written twice; another -> 409.

The business services know nothing of this: the API wraps a create in `IdempotencyService.run`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from studio.domain.ids import unix_now
from studio.errors import Conflict, InvalidInput
from studio.schemas.idempotency import IdempotencyRecord

MAX_KEY_LENGTH = 255
POLL_S = 0.05
# The hash a streamed create claims its key with until its body has been read.
PENDING_PREFIX = "pending:"


class IdempotencyRepository(Protocol):
    """Stored keys (`idempotency_keys`); implemented by `studio.stores.mongo_idempotency`."""

    async def claim(self, record: IdempotencyRecord, *, now: datetime) -> IdempotencyRecord | None:
        """Store `record` unless a live record has its id; return that record, or None when stored."""
        ...

    async def get(self, record_id: str) -> IdempotencyRecord | None: ...

    async def complete(
        self,
        *,
        record_id: str,
        request_hash: str,
        status_code: int,
        body: str,
        final_hash: str | None = None,
    ) -> None:
        """Store the answer of the claim `request_hash` (its hash becomes `final_hash` when given)."""
        ...

    async def release(self, *, record_id: str, request_hash: str) -> None: ...


class KeyInProgress(Conflict):
    """The key's first request is still running: a 409 the client should retry shortly."""

    code = "idempotency_key_in_progress"


@dataclass(frozen=True, slots=True)
class Answer:
    """A create's answer as sent: its status and JSON body; `replayed` when it was stored before."""

    status_code: int
    body: str
    replayed: bool = False


def request_hash(*, method: str, path: str, body: bytes) -> str:
    """Return the fingerprint that tells two requests with one key apart."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidInput(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters",
            param="Idempotency-Key",
            code="invalid_idempotency_key",
        )


def _reused(key: str) -> Conflict:
    return Conflict(
        f"Idempotency-Key {key!r} was already used with another request; use a new key "
        "for a different request",
        param="Idempotency-Key",
        code="idempotency_key_reused",
    )


class IdempotencyService:
    """Runs creates at most once per client and `Idempotency-Key`."""

    def __init__(self, *, repository: IdempotencyRepository, ttl_s: float, wait_s: float) -> None:
        self._repo = repository
        self._ttl_s = ttl_s
        self._wait_s = wait_s

    async def run(
        self, *, client_id: str, key: str, fingerprint: str, create: Callable[[], Awaitable[Answer]]
    ) -> Answer:
        """Return `create()`'s answer, or the answer stored for this client's `key`.

        Raises:
            InvalidInput: an empty or over-long key. Conflict: the key was used with another request
            (`idempotency_key_reused`). KeyInProgress: its first request still runs after `wait_s`.
            Whatever `create` raises (the key is then free again).
        """
        _check_key(key)
        deadline = time.monotonic() + self._wait_s
        while True:
            claim, found = await self._claim(client_id=client_id, key=key, request_hash=fingerprint)
            if found is None:
                return await self._run_claimed(claim, create)
            if found.request_hash != fingerprint:
                raise _reused(key)
            if found.state == "done" and found.status_code is not None and found.body is not None:
                return Answer(status_code=found.status_code, body=found.body, replayed=True)
            await self._wait(key, deadline)

    async def run_streamed(
        self,
        *,
        client_id: str,
        key: str,
        scope: str,
        create: Callable[[], Awaitable[tuple[Answer, str]]],
        fingerprint: Callable[[], Awaitable[str]],
    ) -> Answer:
        """Return the answer of a create whose request is only known once its body is read.

        `create()` reads the body, makes the object and returns its answer with the request's
        fingerprint; `fingerprint()` reads the body without making anything (a repeat) and returns the
        fingerprint. `scope` names the route (method and path), so a streamed claim still in progress
        is told apart from another route's at once.

        Raises:
            as `run`; plus whatever `fingerprint` raises (an unreadable body).
        """
        _check_key(key)
        pending = PENDING_PREFIX + scope
        deadline = time.monotonic() + self._wait_s
        while True:
            claim, found = await self._claim(client_id=client_id, key=key, request_hash=pending)
            if found is None:
                return await self._run_streamed_claim(claim, create)
            if found.request_hash.startswith(PENDING_PREFIX) and found.request_hash != pending:
                raise _reused(key)  # another route's streamed create holds the key
            if found.state == "done" and found.status_code is not None and found.body is not None:
                if await fingerprint() != found.request_hash:
                    raise _reused(key)
                return Answer(status_code=found.status_code, body=found.body, replayed=True)
            await self._wait(key, deadline)

    async def _claim(
        self, *, client_id: str, key: str, request_hash: str
    ) -> tuple[IdempotencyRecord, IdempotencyRecord | None]:
        """Try to claim the key; return the claim and the live record that holds the key (None: ours)."""
        now = datetime.now(UTC)
        claim = IdempotencyRecord(
            id=f"{client_id}:{key}",
            client_id=client_id,
            key=key,
            request_hash=request_hash,
            state="in_progress",
            created_at=unix_now(),
            expires_at=now + timedelta(seconds=self._ttl_s),
        )
        return claim, await self._repo.claim(claim, now=now)

    async def _wait(self, key: str, deadline: float) -> None:
        """Sleep before the next look at a key in progress; raise KeyInProgress past `deadline`."""
        if time.monotonic() >= deadline:
            raise KeyInProgress(
                f"a request with Idempotency-Key {key!r} is still being processed; retry shortly",
                param="Idempotency-Key",
            )
        await asyncio.sleep(POLL_S)

    async def _run_streamed_claim(
        self, claim: IdempotencyRecord, create: Callable[[], Awaitable[tuple[Answer, str]]]
    ) -> Answer:
        try:
            answer, fingerprint = await create()
        except BaseException:
            await asyncio.shield(self._repo.release(record_id=claim.id, request_hash=claim.request_hash))
            raise
        await self._repo.complete(
            record_id=claim.id,
            request_hash=claim.request_hash,
            status_code=answer.status_code,
            body=answer.body,
            final_hash=fingerprint,
        )
        return answer

    async def _run_claimed(self, claim: IdempotencyRecord, create: Callable[[], Awaitable[Answer]]) -> Answer:
        try:
            answer = await create()
        except BaseException:
            await asyncio.shield(self._repo.release(record_id=claim.id, request_hash=claim.request_hash))
            raise
        await self._repo.complete(
            record_id=claim.id,
            request_hash=claim.request_hash,
            status_code=answer.status_code,
            body=answer.body,
        )
        return answer
