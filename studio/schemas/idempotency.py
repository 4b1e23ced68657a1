"""A create request's `Idempotency-Key` record, as stored in `idempotency_keys` (`_id` = `id`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

IdempotencyState = Literal["in_progress", "done"]


class IdempotencyRecord(BaseModel):
    """One client's key: claimed (`in_progress`) by the first request, then `done` with its answer.

    `id` is `<client id>:<key>` (one record per client and key); `request_hash` is the SHA-256 of the
    request's method, path and body, so the same key with another body is told apart. `expires_at` is
    a date, for MongoDB's TTL index; a record past it is also ignored by reads, since the TTL monitor
    deletes only once a minute.
    """

    id: str
    client_id: str
    key: str
    request_hash: str
    state: IdempotencyState
    status_code: int | None = None
    body: str | None = None
    created_at: int
    expires_at: datetime
