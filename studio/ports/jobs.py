"""Fine-tuning jobs: their records, events and checkpoints, and the compute that runs them."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any, Protocol

from studio.domain.jobs import JobStatus
from studio.schemas.base_models import BaseModelEntry
from studio.schemas.jobs import (
    Checkpoint,
    ClusterResources,
    Job,
    JobChanges,
    JobEvent,
    LaunchStatus,
)
from studio.schemas.queue import QueueSummary


class JobRepository(Protocol):
    """Fine-tuning jobs (`fine_tuning_jobs`)."""

    async def insert(self, job: Job) -> None: ...

    async def get(self, *, client_id: str, job_id: str) -> Job | None: ...

    async def get_any(self, job_id: str) -> Job | None:
        """Return the job whoever owns it (the tracker's view)."""
        ...

    async def list(
        self, *, client_id: str, after: str | None, limit: int, metadata: dict[str, str]
    ) -> list[Job]:
        """Return the client's jobs, newest first, after the job `after`, matching every metadata pair."""
        ...

    async def list_followed(self) -> builtins.list[Job]:
        """Return the jobs the tracker follows, oldest first: validating files, launched or running, or
        cancelled with their Ray job still to stop. Jobs waiting in the queue are not among them."""
        ...

    async def waiting_counts(self) -> dict[str, int]:
        """Return how many jobs each client has waiting in the queue (queued, not launched)."""
        ...

    async def count_waiting(self, client_id: str, *, limit: int) -> int:
        """Return how many jobs the client has waiting in the queue, counting up to `limit` at most."""
        ...

    async def count_ahead(self, job: Job) -> int:
        """Return how many of its client's waiting jobs launch before `job` (a waiting job)."""
        ...

    async def mean_run_seconds(self, *, sample: int) -> float | None:
        """Return the mean run time of the last `sample` succeeded jobs, or None when there are none."""
        ...

    async def put_queue_summary(self, summary: QueueSummary) -> None:
        """Store the tracker's summary of the queue (one document, replaced)."""
        ...

    async def queue_summary(self) -> QueueSummary | None:
        """Return the tracker's last summary of the queue, or None before its first."""
        ...

    async def next_waiting(self, client_id: str) -> Job | None:
        """Return the client's oldest job waiting in the queue, or None."""
        ...

    async def list_fine_tuned(self, client_id: str) -> builtins.list[Job]:
        """Return the client's succeeded jobs that produced a fine-tuned model, newest first."""
        ...

    async def update(self, *, job_id: str, expected: JobStatus, changes: JobChanges) -> Job | None:
        """Write `changes` if the stored status is still `expected`; return the stored job, or None."""
        ...

    async def finished_before(
        self, *, before: int, after: str | None, limit: int
    ) -> builtins.list[Job] | None:
        """Return up to `limit` jobs finished before the unix time `before`, in order of `finished_at`
        (then id), past the job `after`; None when `after` is no longer stored."""
        ...

    async def retention_mark(self) -> str | None:
        """Return the last job whose events the retention sweep deleted, or None before its first."""
        ...

    async def put_retention_mark(self, job_id: str) -> None:
        """Store the last job whose events the retention sweep deleted."""
        ...


class JobEventRepository(Protocol):
    """Job events (`fine_tuning_job_events`)."""

    async def add(self, events: list[JobEvent]) -> None:
        """Store the events; an event whose id is already stored is skipped (adding is idempotent)."""
        ...

    async def list(self, *, job_id: str, after: str | None, limit: int) -> list[JobEvent]:
        """Return the job's events newest first, older than the event `after`."""
        ...

    async def since(self, *, job_id: str, seq: int, limit: int) -> builtins.list[JobEvent]:
        """Return the job's events with `seq` above `seq`, oldest first (for live streams)."""
        ...

    async def delete_for_jobs(self, job_ids: builtins.list[str]) -> int:
        """Delete every event of the jobs `job_ids`; return how many were deleted."""
        ...


class CheckpointRepository(Protocol):
    """Checkpoints written by jobs (`fine_tuning_job_checkpoints`)."""

    async def add(self, checkpoint: Checkpoint) -> None:
        """Store the checkpoint; adding one already stored changes nothing."""
        ...

    async def list(self, *, job_id: str, after: str | None, limit: int) -> list[Checkpoint]:
        """Return the job's checkpoints, highest step first."""
        ...


class BaseModelRepository(Protocol):
    """The base-model registry (`base_models`)."""

    async def put(self, entry: BaseModelEntry) -> None:
        """Insert or replace the entry with the same id."""
        ...

    async def get(self, model_id: str) -> BaseModelEntry | None: ...

    async def list(self) -> list[BaseModelEntry]: ...

    async def delete(self, model_id: str) -> bool: ...


@dataclass(frozen=True)
class ActiveRun:
    """A training run of this installation that the cluster has waiting or running."""

    launch_id: str  # what `TrainingLauncher.submit` returned for it
    job_id: str  # the fine-tuning job it was launched for


class TrainingLauncher(Protocol):
    """Runs the training entrypoint somewhere in the cluster (a Ray job)."""

    async def submit(
        self,
        *,
        submission_id: str,
        config_path: str,
        num_cpus: float,
        num_gpus: float,
        metadata: dict[str, str],
        env: dict[str, str] | None = None,
    ) -> str: ...

    async def status(self, ray_job_id: str) -> LaunchStatus: ...

    async def stop(self, ray_job_id: str) -> bool: ...

    async def logs(self, ray_job_id: str) -> str:
        """Return the run's whole log (read once, when the tracker finishes an attempt)."""
        ...

    async def read_log(self, ray_job_id: str, *, offset: int, max_bytes: int) -> bytes:
        """Return at most `max_bytes` of the run's log from byte `offset` (negative: that many bytes
        before its end): what the tracker reads each round, and `/logs`' tail."""
        ...

    async def release(self, ray_job_id: str) -> bool:
        """Free what an ended run still holds (its status and log with it); return whether it held any."""
        ...

    async def active_runs(self) -> builtins.list[ActiveRun]:
        """Return this installation's runs that the cluster has waiting or running (an actor run that
        ended but still holds its resources counts too): what the tracker compares with the store."""
        ...


class ClusterInfo(Protocol):
    """What the compute cluster has."""

    async def resources(self) -> ClusterResources: ...


class JobNotifier(Protocol):
    """Tells the job tracker that a job needs its attention now rather than at its next round."""

    async def wake(self, client_id: str | None = None) -> None:
        """Start the tracker's next round now; `client_id`: a client that just queued a job."""
        ...


class ModelInspector(Protocol):
    """Reads what a model source says of itself."""

    async def read_config(self, source: str) -> dict[str, Any] | None:
        """Return the `config.json` of a local model directory, or None when `source` is not one."""
        ...
