"""Job status changes and events: the one path every writer (API, tracker) takes to change a job."""

from __future__ import annotations

import time
from typing import Any

from studio.domain.ids import new_id, unix_now
from studio.domain.jobs import JobStatus, check_job_transition
from studio.ports import JobEventRepository, JobRepository, StudioMetrics
from studio.schemas.jobs import EventLevel, EventType, Job, JobChanges, JobEvent

FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


def _seq() -> int:
    return time.time_ns() // 1000


class JobJournal:
    """Changes a job's status through the domain's table, as a conditional update, and records events."""

    def __init__(
        self, *, jobs: JobRepository, events: JobEventRepository, metrics: StudioMetrics | None = None
    ) -> None:
        """`metrics`: counts each job reaching a final status, once (only the writer whose conditional
        update won: the API's cancel, the tracker's success or failure)."""
        self._jobs = jobs
        self._events = events
        self._metrics = metrics

    async def transition(
        self,
        job: Job,
        target: JobStatus,
        changes: JobChanges | None = None,
        *,
        message: str | None = None,
        level: EventLevel = "info",
    ) -> Job | None:
        """Move `job` to `target` (with `changes`) if it is still in the status it was read in.

        Returns the stored job, or None when another writer changed its status first (re-read it).

        Raises:
            Conflict: the table does not allow this change (a finished job, for one).
        """
        check_job_transition(job.status, target)
        fields = changes.model_dump(exclude_unset=True) if changes is not None else {}
        updated = await self._jobs.update(
            job_id=job.id, expected=job.status, changes=JobChanges(**fields, status=target)
        )
        if updated is not None and self._metrics is not None and target in FINAL_STATUSES:
            self._metrics.job_ended(status=target, model=job.model, client_id=job.client_id)
        if updated is not None and message is not None:
            await self.record(updated, message, level=level)
        return updated

    async def record(
        self,
        job: Job,
        message: str,
        *,
        level: EventLevel = "info",
        type: EventType = "message",
        data: dict[str, Any] | None = None,
        event_id: str | None = None,
    ) -> JobEvent:
        """Store one event of `job`; a given `event_id` makes the write idempotent. Returns the event."""
        event = self.event(job, message, level=level, type=type, data=data, event_id=event_id)
        await self._events.add([event])
        return event

    @staticmethod
    def event(
        job: Job,
        message: str,
        *,
        level: EventLevel = "info",
        type: EventType = "message",
        data: dict[str, Any] | None = None,
        event_id: str | None = None,
    ) -> JobEvent:
        """Return (without storing) an event of `job`."""
        return JobEvent(
            id=event_id or new_id("ftevent"),
            job_id=job.id,
            client_id=job.client_id,
            seq=_seq(),
            created_at=unix_now(),
            level=level,
            message=message,
            type=type,
            data=data,
        )

    async def add(self, events: list[JobEvent]) -> None:
        await self._events.add(events)
