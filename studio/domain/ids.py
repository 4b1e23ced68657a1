"""Identifiers: a readable prefix and 96 random bits (`client-3f9c...`)."""

from __future__ import annotations

import secrets
import time

ID_RANDOM_BYTES = 12


def new_id(prefix: str) -> str:
    """Return a new unique id such as `client-1b2c3d...` (prefix, dash, 24 hex digits)."""
    return f"{prefix}-{secrets.token_hex(ID_RANDOM_BYTES)}"


def unix_now() -> int:
    """Return the current time as whole Unix seconds (OpenAI's `created_at` unit)."""
    return int(time.time())
