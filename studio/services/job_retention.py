"""Retention of job events: the events of jobs finished more than `event_retention_days` ago go.

A finished job keeps its record (status, hyperparameters, result, checkpoints); its event log is what
grows with every step of every run, so it is what retention bounds. The tracker runs the sweep every
`retention_interval_s`, a bounded number of batches at a time, resuming after the last job it swept
(a mark kept in the store), so its cost follows what finished since, not what is stored.
"""

from __future__ import annotations

import logging
import time

from studio.domain.ids import unix_now
from studio.ports import JobEventRepository, JobRepository

log = logging.getLogger(__name__)

DAY_S = 86_400


class EventRetention:
    """Deletes the events of jobs finished before the retention window, in batches of `batch` jobs."""

    def __init__(
        self,
        *,
        jobs: JobRepository,
        events: JobEventRepository,
        retention_days: int,
        interval_s: float,
        batch: int = 200,
        max_batches: int = 10,
    ) -> None:
        self._jobs = jobs
        self._events = events
        self._retention_days = retention_days
        self._interval_s = interval_s
        self._batch = batch
        self._max_batches = max_batches
        self._swept_at = float("-inf")

    async def maybe_sweep(self) -> int:
        """Sweep when `interval_s` has passed since the last sweep; return the events deleted."""
        now = time.monotonic()
        if self._retention_days == 0 or now - self._swept_at < self._interval_s:
            return 0
        self._swept_at = now
        return await self.sweep(now=unix_now())

    async def sweep(self, *, now: int) -> int:
        """Delete the events of up to `batch x max_batches` jobs finished before the window; return
        how many events went. Raises Unavailable when the store does not answer."""
        before = now - self._retention_days * DAY_S
        mark = await self._jobs.retention_mark()
        deleted = 0
        for _ in range(self._max_batches):
            jobs = await self._jobs.finished_before(before=before, after=mark, limit=self._batch)
            if jobs is None:  # the marked job is gone: start over from the oldest (deletes are idempotent)
                mark = None
                continue
            if not jobs:
                break
            deleted += await self._events.delete_for_jobs([job.id for job in jobs])
            mark = jobs[-1].id
            await self._jobs.put_retention_mark(mark)
            if len(jobs) < self._batch:  # the window's edge was reached
                break
        if deleted:
            log.info("deleted %d events of jobs finished before %d", deleted, before)
        return deleted
