"""A small time-bounded memo in this process, for reads many requests repeat within seconds."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(Generic[K, V]):
    """Values kept `ttl_s` seconds, `max_entries` at most (the least recently stored go first).

    For reads where a few seconds of staleness is part of the contract the caller states: a memo in
    one replica is never invalidated by another's write.
    """

    def __init__(self, *, ttl_s: float, max_entries: int = 10_000) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        """Return the value stored for `key` less than `ttl_s` ago, or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        self._entries[key] = (time.monotonic() + self._ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def update(self, key: K, value: V) -> None:
        """Replace the value of a key still stored, keeping its expiry; a missing key stays missing."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries[key] = (entry[0], value)
