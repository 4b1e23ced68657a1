"""Blocking Ray core calls (GCS lookups, `ray.kill`, actor creation) from async code, bounded in time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import ray

from studio.errors import Unavailable

T = TypeVar("T")


async def in_thread(func: Callable[[], T], *, timeout_s: float) -> T:
    """Return `func()` run in a worker thread.

    Raises:
        Unavailable: the cluster did not answer within `timeout_s`, or Ray failed.
    """
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.to_thread(func)
    except TimeoutError as exc:
        raise Unavailable("the Ray cluster did not answer in time") from exc
    except ray.exceptions.RayError as exc:
        raise Unavailable(f"the Ray cluster failed: {exc}") from exc
