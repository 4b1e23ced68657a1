"""Group commit: writes that arrive while one is in flight leave together, each with its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from studio.errors import Conflict, Unavailable
from studio.stores.group_commit import GroupCommit, bulk_outcomes


class Recorder:
    """A flush that records its batches and holds each until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail_items: set[int] = set()
        self.fail_all: Exception | None = None

    async def flush(self, items: list[int]) -> Sequence[BaseException | None]:
        self.batches.append(items)
        await self.release.wait()
        if self.fail_all is not None:
            raise self.fail_all
        return [Conflict(f"item {i}") if i in self.fail_items else None for i in items]


async def test_writes_arriving_during_a_flush_leave_together_in_order() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.flush)
    first = asyncio.create_task(group.write(0))
    await asyncio.sleep(0)  # the first leaves alone, at once
    rest = [asyncio.create_task(group.write(i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    assert recorder.batches == [[0]]
    recorder.release.set()
    await asyncio.gather(first, *rest)
    assert recorder.batches == [[0], [1, 2, 3, 4, 5]]


async def test_each_writer_gets_its_own_outcome_and_a_failed_flush_fails_its_batch() -> None:
    recorder = Recorder()
    recorder.release.set()
    recorder.fail_items = {2}
    group = GroupCommit(recorder.flush, max_batch=2)
    results = await asyncio.gather(*(group.write(i) for i in range(4)), return_exceptions=True)
    assert [type(r) for r in results] == [type(None), type(None), Conflict, type(None)]
    assert all(len(batch) <= 2 for batch in recorder.batches)

    recorder.fail_all = Unavailable("database unavailable")
    with pytest.raises(Unavailable):
        await group.write(9)


async def test_a_cancelled_writer_strands_no_one() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.flush)
    leader = asyncio.create_task(group.write(0))
    await asyncio.sleep(0)
    follower = asyncio.create_task(group.write(1))
    await asyncio.sleep(0)
    leader.cancel()  # the caller went away; its write (in flight) and the follower's still happen
    recorder.release.set()
    await follower
    assert recorder.batches == [[0], [1]]
    with pytest.raises(asyncio.CancelledError):
        await leader


def test_bulk_outcomes_map_write_errors_by_index_and_a_journal_failure_to_all() -> None:
    details = {"writeErrors": [{"index": 1, "code": 11000, "errmsg": "dup"}]}
    outcomes = bulk_outcomes(3, details, lambda error: Conflict(error["errmsg"]))
    assert outcomes[0] is None and isinstance(outcomes[1], Conflict) and outcomes[2] is None
    failed = bulk_outcomes(2, {"writeConcernErrors": [{"code": 64}]}, lambda error: Conflict("x"))
    assert all(isinstance(outcome, Unavailable) for outcome in failed)
