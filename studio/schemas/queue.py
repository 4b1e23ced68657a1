"""The fine-tuning queue as the tracker last saw it, and a waiting job's place in it."""

from __future__ import annotations

from pydantic import BaseModel, Field


class QueueSummary(BaseModel):
    """Written by the tracker every `queue_refresh_s`; read by the ingress to place a waiting job.

    `waiting` maps each client with waiting jobs to how many; `running` counts jobs running now and
    `mean_run_s` is the mean run time of recently finished jobs (None before any finished).
    """

    waiting: dict[str, int] = Field(default_factory=dict)
    running: int = 0
    mean_run_s: float | None = None
    updated_at: int


class QueuePosition(BaseModel):
    """Mini Studio's extension on a job waiting in the queue (queued, not yet handed to Ray)."""

    jobs_ahead: int = Field(description="Jobs that launch before this one in the fair order (at most)")
    waiting_clients: int = Field(description="Clients with jobs waiting, this one's included")
    estimated_start_at: int | None = Field(
        description="Unix time it should start, from recent run times (None before any job finished)"
    )
    as_of: int = Field(description="When the tracker last summarised the queue (unix seconds)")
