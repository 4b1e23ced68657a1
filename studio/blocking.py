"""Blocking SDK calls from async code, each dependency in a bounded thread pool of its own.

`asyncio.timeout(asyncio.to_thread(...))` stops the waiting, not the thread: a call into an SDK without a
request timeout of its own (Ray's Jobs SDK, boto during its retries) keeps its thread until the dependency
answers. On the event loop's one default pool, an outage of one dependency would drain the threads that
uploads, downloads and the other dependencies need. Here every dependency gets `max_threads` threads of its
own; a call that times out still holds its thread (counted as busy until it really returns), and once all
of a pool's threads are held a new call fails at once with `Unavailable` instead of queueing behind them.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from studio.errors import Unavailable

P = ParamSpec("P")
T = TypeVar("T")


class BlockingCalls:
    """A dependency's bounded pool for its blocking calls (one per SDK client, named after it)."""

    def __init__(self, name: str, *, max_threads: int = 8) -> None:
        if max_threads < 1:
            raise ValueError("max_threads must be at least 1")
        self.name = name
        self.max_threads = max_threads
        self._executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix=f"blocking-{name}")
        self._lock = threading.Lock()
        self._busy = 0

    @property
    def busy(self) -> int:
        """Return how many of the pool's threads are inside a call now (timed-out calls included)."""
        with self._lock:
            return self._busy

    async def run(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Return `func(*args, **kwargs)` run on one of this pool's threads.

        Raises:
            Unavailable: every thread of the pool is still held by earlier calls (the dependency is not
                answering); nothing was started.
        """
        with self._lock:
            if self._busy >= self.max_threads:
                raise Unavailable(
                    f"{self.name} is not answering: {self._busy} calls to it are still waiting",
                    code="dependency_unavailable",
                )
            self._busy += 1
        try:
            future: Future[T] = self._executor.submit(functools.partial(func, *args, **kwargs))
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    async def run_within(
        self, timeout_s: float, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Return `func(*args, **kwargs)` from this pool, waiting at most `timeout_s`.

        Raises:
            TimeoutError: no answer within `timeout_s` (the thread stays busy until the call returns).
            Unavailable: as `run`.
        """
        async with asyncio.timeout(timeout_s):
            return await self.run(func, *args, **kwargs)

    def _release(self, _future: Any) -> None:
        with self._lock:
            self._busy -= 1

    def close(self) -> None:
        """Stop taking calls; threads still inside a call finish on their own."""
        self._executor.shutdown(wait=False, cancel_futures=True)
