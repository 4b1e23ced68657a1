"""Blocking Ray core calls (GCS lookups, `ray.kill`, actor creation) from async code, bounded in time.

They share one bounded pool (`studio.blocking`): a GCS that stops answering holds at most its threads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import ray

from studio.blocking import BlockingCalls
from studio.errors import Unavailable

T = TypeVar("T")

RAY_CORE = BlockingCalls("the Ray cluster", max_threads=8)


async def in_thread(func: Callable[[], T], *, timeout_s: float) -> T:
    """Return `func()` run in a worker thread.

    Raises:
        Unavailable: the cluster did not answer within `timeout_s`, Ray failed, or earlier calls still
            hold every thread of the pool.
    """
    try:
        return await RAY_CORE.run_within(timeout_s, func)
    except TimeoutError as exc:
        raise Unavailable("the Ray cluster did not answer in time") from exc
    except ray.exceptions.RayError as exc:
        raise Unavailable(f"the Ray cluster failed: {exc}") from exc
