"""The cluster's resources read once for concurrent callers: its result shared, its failure too."""

from __future__ import annotations

import asyncio

import pytest

from studio.backends.ray_cluster import RayClusterInfo, summarize
from studio.errors import Unavailable
from studio.schemas.jobs import ClusterResources

RESOURCES = summarize({"CPU": 2.0}, {"CPU": 1.0}, [{"Alive": True, "Resources": {"CPU": 2.0}}])


class CountedReads(RayClusterInfo):
    """Reads that take `delay_s` and succeed, or fail, without a Ray cluster."""

    def __init__(self, *, fail: bool, delay_s: float = 0.05) -> None:
        super().__init__(max_age_s=60)
        self.reads = 0
        self._fail = fail
        self._delay_s = delay_s

    async def _read(self) -> ClusterResources:
        self.reads += 1
        await asyncio.sleep(self._delay_s)
        if self._fail:
            raise Unavailable("the Ray cluster did not report its resources in time")
        return RESOURCES


async def test_concurrent_callers_share_one_read_and_reuse_it_while_fresh() -> None:
    info = CountedReads(fail=False)
    results = await asyncio.gather(*(info.resources() for _ in range(20)))
    assert results == [RESOURCES] * 20 and info.reads == 1
    assert await info.resources() == RESOURCES and info.reads == 1


async def test_an_outage_fails_every_waiting_caller_after_one_read_not_one_each() -> None:
    info = CountedReads(fail=True, delay_s=0.2)
    outcomes = await asyncio.gather(*(info.resources() for _ in range(10)), return_exceptions=True)
    assert all(isinstance(outcome, Unavailable) for outcome in outcomes) and info.reads == 1
    with pytest.raises(Unavailable):  # the next caller reads again
        await info.resources()
    assert info.reads == 2
