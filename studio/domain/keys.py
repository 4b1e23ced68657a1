"""API keys: how they look, how they are hashed, how a request presents one.

Keys carry 256 random bits, so one SHA-256 of the key is a safe stored form: unlike passwords, they
cannot be guessed from a dictionary, and a fast hash keeps authentication cheap on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_PREFIX = "sk-ms-"
HINT_CHARS = 4


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key as created: `secret` is shown once and never stored."""

    secret: str
    key_hash: str
    hint: str


def hash_key(secret: str) -> str:
    """Return the hex SHA-256 under which a key is stored and looked up."""
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key() -> NewKey:
    """Return a new random key with its hash and a display hint (`sk-ms-...wxyz`)."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return NewKey(secret=secret, key_hash=hash_key(secret), hint=f"{KEY_PREFIX}...{secret[-HINT_CHARS:]}")


def bearer_token(authorization: str | None) -> str | None:
    """Return the token of an `Authorization: Bearer <token>` header, or None when absent or malformed."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def same_hash(left: str, right: str) -> bool:
    """Compare two key hashes in constant time."""
    return hmac.compare_digest(left.encode(), right.encode())
