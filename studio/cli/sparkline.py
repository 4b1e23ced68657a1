"""Sparklines: a series of numbers as one line of block characters, for `jobs watch`'s loss curve."""

from __future__ import annotations

import math
from collections.abc import Sequence

BLOCKS = "▁▂▃▄▅▆▇█"


def _buckets(values: Sequence[float], width: int) -> list[float]:
    """Return `values` averaged into `width` consecutive buckets (as many as there are values, if fewer)."""
    if len(values) <= width:
        return list(values)
    out: list[float] = []
    for i in range(width):
        start = i * len(values) // width
        end = (i + 1) * len(values) // width
        chunk = values[start:end]
        out.append(sum(chunk) / len(chunk))
    return out


def sparkline(values: Sequence[float], width: int = 40) -> str:
    """Return `values` as at most `width` block characters, lowest value `▁`, highest `█`.

    Values that are not finite (NaN, inf) are left out; a longer series is averaged into `width`
    buckets (oldest on the left); a flat series is drawn at mid height; an empty one is "".
    """
    finite = [float(v) for v in values if math.isfinite(v)]
    if not finite or width < 1:
        return ""
    points = _buckets(finite, width)
    low, high = min(points), max(points)
    if high - low < 1e-12 * max(1.0, abs(high)):
        return BLOCKS[len(BLOCKS) // 2 - 1] * len(points)
    top = len(BLOCKS) - 1
    return "".join(BLOCKS[round((p - low) / (high - low) * top)] for p in points)
