"""Following a job's events: an event stored after one stamped later is still yielded, once."""

from __future__ import annotations

import asyncio
from typing import Any

from studio.config import TrainingSettings
from studio.schemas.jobs import JobEvent
from studio.services.jobs import JobService
from tests.helpers import stored_job


class Events:
    """The events store as `follow_events` reads it: `since` is `seq > seq`, oldest first."""

    def __init__(self) -> None:
        self.stored: list[JobEvent] = []

    async def since(self, *, job_id: str, seq: int, limit: int) -> list[JobEvent]:
        found = sorted((e for e in self.stored if e.job_id == job_id and e.seq > seq), key=lambda e: e.seq)
        return found[:limit]


class Jobs:
    def __init__(self, job: Any) -> None:
        self.job = job

    async def get(self, *, client_id: str, job_id: str) -> Any:
        return self.job


def event(job_id: str, seq: int) -> JobEvent:
    return JobEvent(
        id=f"e{seq}", job_id=job_id, client_id="c", seq=seq, created_at=1, level="info", message="m"
    )


async def test_an_event_stored_late_is_yielded_when_it_lands() -> None:
    job = stored_job("c", created_at=1, running=True)
    jobs, events = Jobs(job), Events()
    service = JobService(
        jobs=jobs,  # type: ignore[arg-type]
        journal=None,  # type: ignore[arg-type]
        events=events,  # type: ignore[arg-type]
        checkpoints=None,  # type: ignore[arg-type]
        datasets=None,  # type: ignore[arg-type]
        base_models=None,  # type: ignore[arg-type]
        compute=None,
        settings=TrainingSettings(stream_poll_s=0.01),
    )
    events.stored += [event(job.id, 100), event(job.id, 300)]  # 200 is stamped, not stored yet
    seen: list[int] = []

    async def follow() -> None:
        async for found in service.follow_events(client_id="c", job_id=job.id):
            seen.append(found.seq)

    following = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    events.stored.append(event(job.id, 200))  # lands late
    await asyncio.sleep(0.05)
    jobs.job = job.model_copy(update={"status": "succeeded"})
    await asyncio.wait_for(following, 5)
    assert seen == [100, 300, 200]
