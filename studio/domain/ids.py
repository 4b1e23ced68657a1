"""Identifiers: a readable prefix, the creation time in milliseconds and 48 random bits (`client-019ad3...`).

The time leads, so ids sort in creation order: lists ordered by `created_at` (whole seconds, OpenAI's
unit) break ties by id and still read oldest first within a second.
"""

from __future__ import annotations

import secrets
import time

ID_TIME_HEX = 12
ID_RANDOM_BYTES = 6


def new_id(prefix: str) -> str:
    """Return a new unique id such as `client-019ad3...` (prefix, dash, 24 hex digits: 12 of the time in
    milliseconds, 12 random)."""
    millis = time.time_ns() // 1_000_000
    return f"{prefix}-{millis:0{ID_TIME_HEX}x}{secrets.token_hex(ID_RANDOM_BYTES)}"


def unix_now() -> int:
    """Return the current time as whole Unix seconds (OpenAI's `created_at` unit)."""
    return int(time.time())
