"""OpenAI's fine-tuning API (`/v1/fine_tuning/jobs...`) and the original `/fine_tuning/submit-finetune`."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from studio.api.deps import JobsDep, PrincipalDep, StreamsDep
from studio.api.idempotency import IdempotentDep
from studio.api.sse import SseMessage, sse_stream
from studio.errors import InvalidInput
from studio.schemas.clients import Principal
from studio.schemas.common import Page
from studio.schemas.jobs import (
    CheckpointPublic,
    ClusterResources,
    JobCreate,
    JobEstimate,
    JobEventPublic,
    JobPublic,
    SeedJobCreate,
)
from studio.services.jobs import JobService

router = APIRouter(prefix="/v1", tags=["fine-tuning"])
seed_router = APIRouter(prefix="/fine_tuning", tags=["fine-tuning"])

AfterQuery = Annotated[str | None, Query(max_length=100)]
LimitQuery = Annotated[int, Query(ge=1, le=1000)]
_METADATA_KEY = re.compile(r"^metadata\[([^\]]{1,64})\]$")


def _metadata_filter(request: Request) -> dict[str, str]:
    """Return the `metadata[key]=value` pairs of the query string (OpenAI's list filter)."""
    found: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if match := _METADATA_KEY.match(key):
            found[match[1]] = value
        elif key.startswith("metadata"):
            raise InvalidInput(f"filter by metadata as metadata[key]=value, not {key!r}", param=key)
    return found


@router.post("/fine_tuning/jobs", response_model=JobPublic)
async def create_job(
    body: JobCreate, principal: PrincipalDep, jobs: JobsDep, once: IdempotentDep
) -> Response:
    """Create a job (`Idempotency-Key`: once per key)."""
    return await once(lambda: _created(jobs, principal, body))


@seed_router.post("/submit-finetune", status_code=201, response_model=JobPublic)
async def submit_finetune(
    body: SeedJobCreate, principal: PrincipalDep, jobs: JobsDep, once: IdempotentDep
) -> Response:
    """The original design's path: the same job, `base_model`/`dataset_id` accepted as well."""
    return await once(lambda: _created(jobs, principal, body), status_code=201)


async def _created(jobs: JobService, principal: Principal, body: JobCreate) -> JobPublic:
    return JobPublic.of(await jobs.create(principal.client, body))


@router.post("/fine_tuning/jobs/estimate")
async def estimate_job(body: JobCreate, principal: PrincipalDep, jobs: JobsDep) -> JobEstimate:
    """Dry run: the plan and resources of a job, and whether the cluster can run it; creates nothing."""
    return await jobs.plan(principal.client, body)


@router.get("/fine_tuning/jobs")
async def list_jobs(
    request: Request, principal: PrincipalDep, jobs: JobsDep, after: AfterQuery = None, limit: LimitQuery = 20
) -> Page[JobPublic]:
    rows, has_more = await jobs.list(
        client_id=principal.client.id, after=after, limit=limit, metadata=_metadata_filter(request)
    )
    return Page(data=[JobPublic.of(row) for row in rows], has_more=has_more)


@router.get("/fine_tuning/jobs/{job_id}")
async def retrieve_job(job_id: str, principal: PrincipalDep, jobs: JobsDep) -> JobPublic:
    job = await jobs.get(client_id=principal.client.id, job_id=job_id)
    return JobPublic.of(job, queue=await jobs.queue_position(job))


@router.post("/fine_tuning/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, principal: PrincipalDep, jobs: JobsDep) -> JobPublic:
    return JobPublic.of(await jobs.cancel(client_id=principal.client.id, job_id=job_id))


@router.get("/fine_tuning/jobs/{job_id}/events", response_model=None)
async def list_events(
    job_id: str,
    principal: PrincipalDep,
    jobs: JobsDep,
    streams: StreamsDep,
    after: AfterQuery = None,
    limit: LimitQuery = 20,
    stream: bool = False,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
) -> Page[JobEventPublic] | StreamingResponse:
    """Newest first, paged; with `stream=true`, every event oldest first as Server-Sent Events, live.

    Each streamed event carries an `id:` line; a reconnect sending it back as `Last-Event-ID` goes on
    after that event. Quiet streams send keep-alive comments and end after the idle timeout.
    """
    if stream:
        await jobs.get(client_id=principal.client.id, job_id=job_id)  # a 404 before the stream starts
        messages = _events(jobs, principal.client.id, job_id, after_seq=_resume_seq(last_event_id))
        return StreamingResponse(
            sse_stream(messages, keepalive_s=streams.keepalive_s, idle_timeout_s=streams.idle_timeout_s),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    rows, has_more = await jobs.events(client_id=principal.client.id, job_id=job_id, after=after, limit=limit)
    return Page(data=[JobEventPublic.of(row) for row in rows], has_more=has_more)


def _resume_seq(last_event_id: str | None) -> int:
    """Return the event sequence number a reconnect resumes after (-1: from the start)."""
    if last_event_id is None:
        return -1
    try:
        return int(last_event_id)
    except ValueError:
        raise InvalidInput(
            "Last-Event-ID must be an id this stream sent",
            param="Last-Event-ID",
            code="invalid_last_event_id",
        ) from None


async def _events(jobs: JobsDep, client_id: str, job_id: str, *, after_seq: int) -> AsyncIterator[SseMessage]:
    async for event in jobs.follow_events(client_id=client_id, job_id=job_id, after_seq=after_seq):
        yield SseMessage(data=json.dumps(JobEventPublic.of(event).model_dump(mode="json")), id=str(event.seq))
    yield SseMessage(data="[DONE]")


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
async def list_checkpoints(
    job_id: str, principal: PrincipalDep, jobs: JobsDep, after: AfterQuery = None, limit: LimitQuery = 10
) -> Page[CheckpointPublic]:
    rows, has_more = await jobs.checkpoints(
        client_id=principal.client.id, job_id=job_id, after=after, limit=limit
    )
    return Page(data=[CheckpointPublic.of(row) for row in rows], has_more=has_more)


@router.get("/fine_tuning/jobs/{job_id}/logs", response_class=PlainTextResponse)
async def job_logs(
    job_id: str,
    principal: PrincipalDep,
    jobs: JobsDep,
    tail_bytes: Annotated[int, Query(ge=1, le=16 << 20)] = 64 << 10,
) -> str:
    """The end of the training process's log (its current Ray job)."""
    return await jobs.logs(client_id=principal.client.id, job_id=job_id, tail_bytes=tail_bytes)


@router.get("/cluster/resources")
async def cluster_resources(principal: PrincipalDep, jobs: JobsDep) -> ClusterResources:
    """CPUs, GPUs by type and memory of the Ray cluster: total and not yet reserved."""
    return await jobs.cluster_resources()
