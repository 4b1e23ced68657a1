"""Per-client limits: which base models a client may use, and its request-rate window."""

from __future__ import annotations

import fnmatch

RATE_WINDOW_S = 60


def model_allowed(allowed_patterns: list[str], model: str) -> bool:
    """Return whether `model` matches one of the client's allowed base-model patterns (`*` = any)."""
    return any(fnmatch.fnmatchcase(model, pattern) for pattern in allowed_patterns)


def rate_window(now_s: float) -> tuple[int, int]:
    """Return the current fixed rate window's index and the seconds left in it."""
    index = int(now_s // RATE_WINDOW_S)
    return index, max(1, int((index + 1) * RATE_WINDOW_S - now_s))
