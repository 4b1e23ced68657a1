"""A dependency's bounded pool: a call that times out keeps its thread counted, a full pool refuses at once,
and another dependency's pool is untouched."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from studio.blocking import BlockingCalls
from studio.errors import Unavailable


async def test_a_stalled_dependency_holds_only_its_own_threads() -> None:
    stalled = BlockingCalls("the stalled store", max_threads=2)
    other = BlockingCalls("the other store", max_threads=2)
    answer = threading.Event()
    try:
        for _ in range(2):
            with pytest.raises(TimeoutError):
                await stalled.run_within(0.05, answer.wait, 30)
        assert stalled.busy == 2  # the timed-out calls still hold their threads

        started = time.monotonic()
        with pytest.raises(Unavailable, match="the stalled store is not answering"):
            await stalled.run_within(5, time.sleep, 0)
        assert time.monotonic() - started < 1  # refused at once, not queued behind the stalled calls
        assert await other.run_within(5, sum, [1, 2, 3]) == 6

        answer.set()  # the dependency answers: its threads come back
        for _ in range(100):
            if stalled.busy == 0:
                break
            await asyncio.sleep(0.01)
        assert stalled.busy == 0
        assert await stalled.run_within(5, max, 4, 7) == 7
    finally:
        answer.set()
        stalled.close()
        other.close()


async def test_errors_of_the_call_reach_the_caller_and_free_the_thread() -> None:
    calls = BlockingCalls("a store", max_threads=1)
    try:
        with pytest.raises(ZeroDivisionError):
            await calls.run(lambda: 1 // 0)
        assert calls.busy == 0
        assert await calls.run(str.upper, "ok") == "OK"
    finally:
        calls.close()
