"""Fine-tuning jobs as the API sees them: create (after a dry-run plan), read, cancel, events, logs.

The API only writes a job and wakes the tracker; the tracker (`JobRunner`, in a detached Ray actor)
launches and follows it. Both change a job's status through `JobJournal`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from studio.config import TrainingSettings, WandbSettings
from studio.domain.datasets import format_mismatch
from studio.domain.ids import new_id, unix_now
from studio.domain.jobs import TERMINAL, check_suffix
from studio.domain.queue import estimated_start, jobs_ahead
from studio.errors import Conflict, Forbidden, InvalidInput, NotFound, QuotaExceeded, StudioError, Unavailable
from studio.ports import (
    CheckpointRepository,
    ClusterInfo,
    DatasetRepository,
    JobEventRepository,
    JobNotifier,
    JobRepository,
    TrainingLauncher,
)
from studio.schemas.clients import Client
from studio.schemas.datasets import Dataset
from studio.schemas.jobs import (
    Checkpoint,
    ClusterResources,
    Job,
    JobChanges,
    JobCreate,
    JobEstimate,
    JobEvent,
)
from studio.schemas.queue import QueuePosition
from studio.services.base_models import BaseModelService
from studio.services.integrations import check_integrations
from studio.services.job_journal import JobJournal
from studio.services.job_planning import decide_hyperparameters, plan_job
from studio.services.memo import Memo
from studio.services.storage import StorageGuard

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Compute:
    """The cluster side of jobs; absent where Mini Studio runs without Ray (some tests)."""

    launcher: TrainingLauncher
    cluster: ClusterInfo
    notifier: JobNotifier


# How far back (in `seq` microseconds) each read of a followed job's events goes, for events stored
# after ones stamped later; and the page size of those reads.
LATE_EVENT_WINDOW_US = 10_000_000
EVENT_PAGE = 500
# Creates re-read neither a ready file nor a client's queue length for this long (per replica): a
# sweep of creates costs the store one write each, not four reads more. A file deleted meanwhile fails
# the job at launch; the queue cap may be passed by the creates of other replicas within the window.
CREATE_MEMO_S = 2.0


class JobService:
    def __init__(
        self,
        *,
        jobs: JobRepository,
        journal: JobJournal,
        events: JobEventRepository,
        checkpoints: CheckpointRepository,
        datasets: DatasetRepository,
        base_models: BaseModelService,
        compute: Compute | None,
        settings: TrainingSettings,
        storage: StorageGuard | None = None,
        wandb: WandbSettings | None = None,
    ) -> None:
        self._jobs = jobs
        self._wandb = wandb
        self._journal = journal
        self._events = events
        self._checkpoints = checkpoints
        self._datasets = datasets
        self._models = base_models
        self._compute = compute
        self._settings = settings
        self._storage = storage
        self._ready_files: Memo[tuple[str, str], Dataset] = Memo(ttl_s=CREATE_MEMO_S)
        self._waiting: Memo[str, int] = Memo(ttl_s=CREATE_MEMO_S)

    def _require_compute(self) -> Compute:
        if self._compute is None:
            raise Unavailable("fine-tuning needs a Ray cluster; this Mini Studio runs without one")
        return self._compute

    async def _dataset(self, client_id: str, dataset_id: str, param: str) -> Dataset:
        ready = self._ready_files.get((client_id, dataset_id))
        if ready is not None:
            return ready
        dataset = await self._datasets.get(client_id=client_id, dataset_id=dataset_id)
        if dataset is not None and dataset.status == "ready":  # a ready file's record no longer changes
            self._ready_files.put((client_id, dataset_id), dataset)
        if dataset is None:
            raise NotFound(f"no file {dataset_id!r}", param=param, code="file_not_found")
        if dataset.purpose != "fine-tune":
            raise InvalidInput(
                f"{param} {dataset_id!r} has purpose {dataset.purpose!r}, not 'fine-tune': it is not "
                "training data",
                param=param,
                code="invalid_file_purpose",
            )
        if dataset.status == "invalid":
            raise Conflict(
                f"{param} {dataset_id!r} is invalid ({dataset.error_count} error(s)); "
                f"see GET /v1/files/{dataset_id}",
                param=param,
                code="invalid_file",
            )
        if dataset.status != "ready":
            # A job is planned from its file's statistics, which exist once the file is validated.
            raise InvalidInput(
                f"{param} {dataset_id!r} is not ready: its status is {dataset.status!r}; create the job "
                f"once GET /v1/files/{dataset_id} says 'processed'",
                param=param,
                code="file_not_ready",
            )
        return dataset

    async def plan(self, client: Client, body: JobCreate) -> JobEstimate:
        """Return the job's plan without creating it.

        Raises:
            NotFound: an unknown base model or file; Conflict: an invalid file; Forbidden: a model the
            client may not use; InvalidInput: a file not validated yet (`file_not_ready`, naming its
            status), a results file (`invalid_file_purpose`), a bad suffix or hyperparameter, or a file
            whose format the
            method does not train on (`file_format_mismatch`: a preference file given to a supervised
            job, a chat or prompt/completion file to a DPO job).
        """
        estimate, _ = await self._plan(client, body)
        return estimate

    async def _plan(self, client: Client, body: JobCreate) -> tuple[JobEstimate, list[Dataset]]:
        compute = self._require_compute()
        check_suffix(body.suffix)
        check_integrations(body.integrations, self._wandb)
        model = await self._models.for_client(client, body.model)
        files = [await self._dataset(client.id, body.training_file, "training_file")]
        if body.validation_file is not None:
            files.append(await self._dataset(client.id, body.validation_file, "validation_file"))
        for param, dataset in zip(("training_file", "validation_file"), files, strict=False):
            problem = format_mismatch(
                param=param, file_id=dataset.id, file_format=dataset.format, method_type=body.method_type
            )
            if problem is not None:
                raise InvalidInput(problem, param=param, code="file_format_mismatch")
        hyperparameters = decide_hyperparameters(body.resolved_hyperparameters(), files[0].stats)
        cluster = await compute.cluster.resources()
        estimate = plan_job(
            model=model,
            hyperparameters=hyperparameters,
            stats=files[0].stats,
            cluster=cluster,
            settings=self._settings,
        )
        return estimate, files

    async def create(self, client: Client, body: JobCreate) -> Job:
        """Create a job, `queued` (its files are ready: `plan` refuses a file still being validated).

        Raises:
            InvalidInput: (400) the job can never run on this cluster; the message has the estimate.
            InsufficientStorage: (507) the data disk is under its free-space floor.
            Forbidden: the client may run no jobs at all. QuotaExceeded: (429) `max_queued_jobs`
            reached. Plus everything `plan` raises.
        """
        if client.limits.max_concurrent_jobs == 0:
            raise Forbidden("this client may not run fine-tuning jobs", code="jobs_not_allowed")
        if self._storage is not None:  # a job writes its config, checkpoints and model to the data disk
            await self._storage.check_disk()
        cap = client.limits.max_queued_jobs
        waiting = self._waiting.get(client.id)
        if waiting is None or waiting >= cap:  # a refusal is never made on a remembered count
            waiting = await self._jobs.count_waiting(client.id, limit=cap)
            self._waiting.put(client.id, waiting)
        if waiting >= cap:
            raise QuotaExceeded(
                f"this client may have {cap} jobs waiting in the queue at most (max_queued_jobs) and has "
                "that many; create more once some have started",
                code="too_many_queued_jobs",
                retry_after_s=60,
            )
        estimate, _ = await self._plan(client, body)
        if not estimate.fits:
            raise InvalidInput(
                f"this job cannot run on this cluster: {estimate.reason}",
                param="model",
                code="job_infeasible",
            )
        job = Job(
            id=new_id("ftjob"),
            client_id=client.id,
            model=body.model,
            training_file=body.training_file,
            validation_file=body.validation_file,
            status="queued",
            hyperparameters=estimate.hyperparameters,
            suffix=body.suffix,
            seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
            metadata=body.metadata or {},
            integrations=body.integrations or [],
            resources=estimate.resources,
            priority=body.priority,
            created_ns=time.time_ns(),
            created_at=unix_now(),
        )
        events = [self._journal.event(job, f"Created fine-tuning job: {job.id}")]
        # Both journaled writes at once (their commits can share a flush): events stored for a job
        # whose insert failed are never shown, since events are read through their job.
        await asyncio.gather(self._jobs.insert(job), self._events.add(events))
        if (counted := self._waiting.get(client.id)) is not None:
            self._waiting.update(client.id, counted + 1)
        await self._wake(job.client_id)
        return job

    async def _wake(self, client_id: str) -> None:
        if self._compute is None:
            return
        try:
            await self._compute.notifier.wake(client_id)
        except StudioError as exc:  # the tracker finds the job at its next round anyway
            log.warning("could not wake the job tracker: %s", exc)

    async def get(self, *, client_id: str, job_id: str) -> Job:
        """Raises NotFound for an unknown job or another client's."""
        job = await self._jobs.get(client_id=client_id, job_id=job_id)
        if job is None:
            raise NotFound(f"no fine-tuning job {job_id!r}", param="fine_tuning_job_id", code="job_not_found")
        return job

    async def queue_position(self, job: Job) -> QueuePosition | None:
        """Return where `job` waits in the queue, or None when it is not waiting (or not yet summarised).

        Its own client's jobs ahead are counted now; the other clients' from the tracker's last
        summary (at most `queue_refresh_s` old), so a read never scans the queue.
        """
        if job.status != "queued" or job.ray_job_id is not None:
            return None
        summary = await self._jobs.queue_summary()
        if summary is None:
            return None
        own = await self._jobs.count_ahead(job)
        others = [count for client, count in summary.waiting.items() if client != job.client_id]
        ahead = jobs_ahead(own, others)
        return QueuePosition(
            jobs_ahead=ahead,
            waiting_clients=len(others) + 1,
            estimated_start_at=estimated_start(
                ahead=ahead, running=summary.running, mean_run_s=summary.mean_run_s, now=unix_now()
            ),
            as_of=summary.updated_at,
        )

    async def list(
        self, *, client_id: str, after: str | None, limit: int, metadata: dict[str, str]
    ) -> tuple[list[Job], bool]:
        """Return a page of the client's jobs (newest first) and whether more follow."""
        rows = await self._jobs.list(client_id=client_id, after=after, limit=limit + 1, metadata=metadata)
        return rows[:limit], len(rows) > limit

    async def cancel(self, *, client_id: str, job_id: str) -> Job:
        """Cancel a job that has not finished; its Ray job is stopped and its checkpoints kept.

        The status is written first, so the tracker, seeing the Ray job stop, finds the job already
        cancelled instead of taking the stop for a failure to retry. When Ray cannot be reached the
        job is still cancelled, marked `stop_pending`, and the tracker stops its Ray job later.

        Raises:
            Conflict: the job already finished. NotFound: no such job for this client.
        """
        for _ in range(5):
            job = await self.get(client_id=client_id, job_id=job_id)
            changes = JobChanges(finished_at=unix_now(), stop_pending=job.ray_job_id is not None)
            cancelled = await self._journal.transition(job, "cancelled", changes, message="Job cancelled")
            if cancelled is not None:
                break
        else:
            raise Unavailable("the job changed too often to cancel; try again")
        if cancelled.ray_job_id is None:
            return cancelled
        try:
            with contextlib.suppress(NotFound):
                await self._require_compute().launcher.stop(cancelled.ray_job_id)
        except Unavailable as exc:
            log.warning("could not stop Ray job %s yet: %s", cancelled.ray_job_id, exc)
            await self._journal.record(
                cancelled, "The Ray job could not be stopped yet; the tracker will stop it", level="warn"
            )
            return cancelled
        stopped = await self._jobs.update(
            job_id=cancelled.id, expected="cancelled", changes=JobChanges(stop_pending=False)
        )
        return stopped or cancelled

    async def events(
        self, *, client_id: str, job_id: str, after: str | None, limit: int
    ) -> tuple[builtins.list[JobEvent], bool]:
        """Return a page of the job's events, newest first, and whether more follow."""
        job = await self.get(client_id=client_id, job_id=job_id)
        rows = await self._events.list(job_id=job.id, after=after, limit=limit + 1)
        return rows[:limit], len(rows) > limit

    async def follow_events(
        self, *, client_id: str, job_id: str, after_seq: int = -1
    ) -> AsyncIterator[JobEvent]:
        """Yield the job's events after `after_seq` oldest first, then new ones as they come, until the
        job finishes.

        An event's `seq` is stamped when it is made, and writers store concurrently (the tracker's batch
        of a log's events, a copy to S3 finishing), so an event can land after one stamped later. Each
        read therefore goes back `LATE_EVENT_WINDOW_US` before the newest event seen, and the events
        already yielded (by id) are skipped: a late one is yielded when it lands, never lost.
        """
        job = await self.get(client_id=client_id, job_id=job_id)
        newest = after_seq
        seen: dict[str, int] = {}  # id -> seq of the events yielded within the window
        deadline = asyncio.get_running_loop().time() + self._settings.stream_max_s
        while True:
            finished = job.status in TERMINAL or asyncio.get_running_loop().time() > deadline
            seq = max(after_seq, newest - LATE_EVENT_WINDOW_US)
            while True:  # every page from the window's start
                batch = await self._events.since(job_id=job.id, seq=seq, limit=EVENT_PAGE)
                for event in batch:
                    if event.id not in seen:
                        seen[event.id] = event.seq
                        newest = max(newest, event.seq)
                        yield event
                if len(batch) < EVENT_PAGE:
                    break
                seq = batch[-1].seq
            horizon = newest - LATE_EVENT_WINDOW_US
            seen = {event_id: seq for event_id, seq in seen.items() if seq >= horizon}
            if finished:  # read once more after seeing the end, so the final events are never cut off
                return
            await asyncio.sleep(self._settings.stream_poll_s)
            job = await self.get(client_id=client_id, job_id=job_id)

    async def checkpoints(
        self, *, client_id: str, job_id: str, after: str | None, limit: int
    ) -> tuple[builtins.list[Checkpoint], bool]:
        """Return a page of the job's checkpoints, latest first, and whether more follow."""
        job = await self.get(client_id=client_id, job_id=job_id)
        rows = await self._checkpoints.list(job_id=job.id, after=after, limit=limit + 1)
        return rows[:limit], len(rows) > limit

    async def logs(self, *, client_id: str, job_id: str, tail_bytes: int) -> str:
        """Return the end of the job's current Ray job log (empty before it was launched)."""
        job = await self.get(client_id=client_id, job_id=job_id)
        if job.ray_job_id is None:
            return ""
        try:
            text = await self._require_compute().launcher.logs(job.ray_job_id)
        except NotFound:
            return ""
        tail = text[-min(tail_bytes, self._settings.log_tail_max_bytes) :]
        return tail

    async def cluster_resources(self) -> ClusterResources:
        return await self._require_compute().cluster.resources()
