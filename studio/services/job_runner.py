"""The tracker's loop: move every unfinished job along, launch its Ray job, follow it to the end.

It is a reconciliation loop: each round reads the jobs it follows (validating, launched, running) from
the store and compares them with what Ray says, so a tracker that restarts (or a Serve app redeployed
mid-job) picks up where the last one stopped, and a job whose Ray job is gone does not stay `running`:
it is retried or failed.

The queue is not read whole: a round costs in proportion to the jobs that run, not to those that
wait. While Ray holds fewer than `max_pending_launches` launched-but-not-running jobs, the round asks
the store which clients wait, orders them round-robin (`domain.queue.fair_order`) and launches each
one's oldest waiting job, skipping clients at their concurrency limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from studio.config import S3Settings, StorageSettings, TrackerSettings, TrainingSettings, WandbSettings
from studio.domain.datasets import format_mismatch
from studio.domain.ids import unix_now
from studio.domain.jobs import classify_exit, fine_tuned_model_name, launcher_of
from studio.domain.queue import fair_order, launch_budget
from studio.domain.training_events import TrainingEvent, parse_events
from studio.errors import NotFound, StudioError
from studio.ports import (
    BaseModelRepository,
    CheckpointRepository,
    ClientRepository,
    DatasetRepository,
    FileStore,
    JobRepository,
    ObjectStore,
    StudioMetrics,
    TrainingLauncher,
)
from studio.schemas.jobs import (
    Job,
    JobChanges,
    JobError,
    LaunchStatus,
)
from studio.schemas.queue import QueueSummary
from studio.services.job_journal import JobJournal
from studio.services.job_results import JobResults, publish_quietly
from studio.services.job_retention import EventRetention
from studio.services.remote_storage import mirrored_uri
from studio.services.run_configs import RunConfigs
from studio.services.run_recorder import RunRecorder
from studio.services.run_sweeper import UnaccountedRuns

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RoundStats:
    """What one round of the job loop did and how long it took."""

    duration_s: float
    followed: int
    waiting_clients: int | None  # None: not looked at (no room to launch)
    launched: int


RoundObserver = Callable[[RoundStats], None]
# Rounds in a row that may fail on one job with an unexpected error before the job is failed.
MAX_UNEXPECTED_ERRORS = 3
# The most of a run's log the tracker reads in one call.
LOG_READ_BYTES = 4 << 20
# Succeeded jobs whose run times give the queue's estimated start times.
RUN_TIME_SAMPLE = 50


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


class JobRunner:
    """Advances jobs: `validating_files -> queued -> (Ray job) -> running -> succeeded | failed`."""

    def __init__(
        self,
        *,
        jobs: JobRepository,
        journal: JobJournal,
        checkpoints: CheckpointRepository,
        datasets: DatasetRepository,
        base_models: BaseModelRepository,
        dataset_files: FileStore,
        job_files: FileStore,
        launcher: TrainingLauncher,
        objects: ObjectStore | None,
        clients: ClientRepository,
        settings: TrainingSettings,
        tracker: TrackerSettings,
        models_dir: Path,
        storage: StorageSettings | None = None,
        on_round: RoundObserver | None = None,
        metrics: StudioMetrics | None = None,
        retention: EventRetention | None = None,
        results: JobResults | None = None,
        wandb: WandbSettings | None = None,
        s3: S3Settings | None = None,
    ) -> None:
        """`s3`: the object store's settings, so a run on a node without the data folder uses S3."""
        self._jobs = jobs
        self._configs = RunConfigs(
            job_files=job_files,
            models_dir=models_dir,
            settings=settings,
            storage=storage,
            wandb=wandb,
            s3=s3,
        )
        self._journal = journal
        self._datasets = datasets
        self._models = base_models
        self._dataset_files = dataset_files
        self._job_files = job_files
        self._launcher = launcher
        self._recorder = RunRecorder(
            jobs=jobs,
            journal=journal,
            checkpoints=checkpoints,
            objects=objects,
            max_metrics_events=tracker.max_metrics_events_per_attempt,
            metrics=metrics,
        )
        self._metrics = metrics
        self._orphans = UnaccountedRuns(
            launcher=launcher, jobs=jobs, journal=journal, interval_s=tracker.orphan_sweep_interval_s
        )
        self._clients = clients
        self._settings = settings
        self._tracker = tracker
        self._on_round = on_round
        self._retention = retention
        self._results = results
        self._wake = asyncio.Event()
        self._stopping = False
        self._errors: dict[str, int] = {}
        # Launch counter per client: the fair order serves the least recently served client first.
        self._launches = itertools.count()
        self._last_launch: dict[str, int] = {}
        # The clients with waiting jobs and how many, as last read (a count over the queue, which
        # costs in proportion to it): kept between rounds, counted up by `wake(client_id)` and down by
        # launches, read again on any other wake-up or after `queue_refresh_s`, when it is also
        # published for the ingress (`QueueSummary`); a client found with nothing waiting is dropped.
        self._waiting: dict[str, int] | None = None
        self._waiting_read_at = float("-inf")
        self._published_at = float("-inf")

    def wake(self, client_id: str | None = None) -> None:
        """Start the next round now. `client_id`: a client that just queued a job (else: any change).

        A client already known to have jobs waiting only has its count raised: its new job waits behind
        them (they wait for its own running jobs or for room in the cluster, and those changes start
        rounds of their own), so a round now would launch nothing. A burst of creates from tenants with
        queues costs the tracker nothing.
        """
        if client_id is None:
            self._waiting = None
        elif self._waiting is not None:
            known = self._waiting.get(client_id, 0)
            self._waiting[client_id] = known + 1
            if known > 0:
                return
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._recorder.stop()

    async def run(self) -> None:
        """Run rounds until `stop`; a failing round is logged and the next one tries again."""
        while not self._stopping:
            started = time.monotonic()
            try:
                await self.round()
            except StudioError as exc:  # the store or Ray unreachable: wait and try again
                log.warning("job tracker round failed: %s", exc)
            except Exception:
                log.exception("job tracker round failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._tracker.poll_interval_s):
                    await self._wake.wait()
            # Wake-ups arriving faster than rounds are useful share the next one.
            rest = self._tracker.min_round_interval_s - (time.monotonic() - started)
            if rest > 0 and not self._stopping:
                await asyncio.sleep(rest)
            self._wake.clear()

    async def round(self) -> RoundStats:
        """Advance every followed job once, then launch from the queue while capacity lasts.

        One job's failure does not hold up the others. Returns what the round did.
        """
        started = time.perf_counter()
        followed = await self._jobs.list_followed()
        for job in followed:
            await self._guarded(job, self.advance)
        # Read again: the jobs that ended in this round free their slots for the launches.
        now_followed = await self._jobs.list_followed()
        waiting, launched = await self._launch_from_queue(now_followed)
        await self._publish_queue(now_followed)
        self._count_statuses(now_followed, launched=launched)
        try:
            await self._orphans.maybe_sweep(now_followed)
        except StudioError as exc:
            log.warning("could not list the cluster's training runs: %s", exc)
        if self._retention is not None:
            await self._retention.maybe_sweep()
        stats = RoundStats(
            duration_s=time.perf_counter() - started,
            followed=len(followed),
            waiting_clients=waiting,
            launched=launched,
        )
        extra = {"followed": stats.followed, "waiting_clients": waiting, "launched": launched}
        log.debug("job round took %.1f ms", stats.duration_s * 1000, extra=extra)
        if self._on_round is not None:
            self._on_round(stats)
        return stats

    def _count_statuses(self, followed: list[Job], *, launched: int) -> None:
        """Publish the jobs by status: the followed ones (read before this round's `launched` jobs,
        which are queued until Ray runs them), plus the queue's waiting jobs as last read."""
        if self._metrics is None:
            return
        counts: Counter[str] = Counter(job.status for job in followed if job.status != "cancelled")
        counts["queued"] += launched + sum((self._waiting or {}).values())
        self._metrics.jobs_in_status(dict(counts))

    async def _guarded(self, job: Job, step: Callable[[Job], Awaitable[T]]) -> T | None:
        """Return `step(job)`, or None when it raised: a dependency down is logged (the next round
        tries again), a bug fails the job after `MAX_UNEXPECTED_ERRORS` rounds in a row."""
        try:
            result = await step(job)
            self._errors.pop(job.id, None)
            return result
        except StudioError as exc:  # a dependency down: the next round tries again
            log.warning("could not advance job %s: %s", job.id, exc, extra={"job_id": job.id})
        except Exception as exc:  # a bug or a broken document: fail the job rather than loop on it
            log.exception("advancing job %s failed", job.id, extra={"job_id": job.id})
            self._errors[job.id] = self._errors.get(job.id, 0) + 1
            if self._errors[job.id] >= MAX_UNEXPECTED_ERRORS:
                error = JobError(
                    code="internal_error",
                    message=f"Mini Studio failed on this job: {exc}",
                    kind="platform",
                )
                await self._fail(job, error)
                del self._errors[job.id]
        return None

    async def _waiting_clients(self) -> dict[str, int]:
        """Return the clients with waiting jobs and how many: as last read, unless forgotten or
        `queue_refresh_s` old."""
        now = time.monotonic()
        if self._waiting is None or now - self._waiting_read_at > self._tracker.queue_refresh_s:
            self._waiting = await self._jobs.waiting_counts()
            self._waiting_read_at = now
        return dict(self._waiting)

    async def _publish_queue(self, followed: list[Job]) -> None:
        """Write the queue's summary (where waiting jobs stand) every `queue_refresh_s`."""
        now = time.monotonic()
        if now - self._published_at < self._tracker.queue_refresh_s:
            return
        summary = QueueSummary(
            waiting=await self._waiting_clients(),
            running=sum(1 for job in followed if job.status == "running"),
            mean_run_s=await self._jobs.mean_run_seconds(sample=RUN_TIME_SAMPLE),
            updated_at=unix_now(),
        )
        await self._jobs.put_queue_summary(summary)
        self._published_at = now

    async def _launch_from_queue(self, followed: list[Job]) -> tuple[int | None, int]:
        """Launch waiting jobs in the fair order while Ray has room; return (waiting clients, launched).

        The waiting clients are None when there was no room, so the queue was not looked at.
        """
        pending = sum(1 for job in followed if job.status == "queued" and job.ray_job_id is not None)
        budget = launch_budget(pending=pending, max_pending=self._tracker.max_pending_launches)
        if budget == 0:
            return None, 0
        clients = await self._waiting_clients()
        holding = Counter(job.client_id for job in followed if job.ray_job_id is not None)
        limits = {
            client.id: 0 if client.disabled else client.limits.max_concurrent_jobs
            for client in await self._clients.get_clients(list(clients))
        }  # a client deleted or disabled launches nothing
        launched = 0
        eligible = clients
        while launched < budget and eligible:  # passes round the clients, one job each per pass
            next_pass: dict[str, int] = {}
            for client_id in fair_order(eligible, last_launch=self._last_launch):
                if launched >= budget:
                    break
                if holding[client_id] >= limits.get(client_id, 0):
                    continue  # its jobs wait for one of its running jobs to finish
                job = await self._jobs.next_waiting(client_id)
                if job is None:
                    if self._waiting is not None:
                        self._waiting.pop(client_id, None)
                    continue
                outcome = await self._guarded(job, self._launch)
                if outcome is None:  # Ray or the store failing: the next round tries again
                    return len(clients), launched
                if self._waiting is not None and client_id in self._waiting:
                    self._waiting[client_id] = max(0, self._waiting[client_id] - 1)
                if outcome:
                    launched += 1
                    holding[client_id] += 1
                    self._last_launch[client_id] = next(self._launches)
                # Launched, or failed or cancelled: its next job may go.
                next_pass[client_id] = max(0, eligible[client_id] - 1)
            eligible = next_pass
        return len(clients), launched

    async def advance(self, job: Job) -> None:
        if job.stop_pending:
            await self._stop(job)
        elif job.status == "validating_files":
            await self._check_files(job)
        elif job.ray_job_id is not None:
            await self._follow(job, job.ray_job_id)

    async def _stop(self, job: Job) -> None:
        """Stop the Ray job of a job cancelled while Ray could not be reached."""
        if job.ray_job_id is not None:
            with contextlib.suppress(NotFound):
                await self._launcher.stop(job.ray_job_id)
        stopped = await self._jobs.update(
            job_id=job.id, expected=job.status, changes=JobChanges(stop_pending=False)
        )
        if stopped is not None:
            await self._journal.record(stopped, f"Stopped Ray job {job.ray_job_id}")

    # -- validating_files -> queued -----------------------------------------------------------

    async def _check_files(self, job: Job) -> None:
        params = [("training_file", job.training_file)]
        if job.validation_file is not None:
            params.append(("validation_file", job.validation_file))
        for param, dataset_id in params:
            dataset = await self._datasets.get(client_id=job.client_id, dataset_id=dataset_id)
            if dataset is None or dataset.status == "invalid":
                why = "was deleted" if dataset is None else f"is invalid ({dataset.error_count} error(s))"
                error = JobError(
                    code=f"invalid_{param}", message=f"{param} {dataset_id} {why}", param=param, kind="user"
                )
                await self._fail(job, error)
                return
            if dataset.status != "ready":
                return
            problem = format_mismatch(
                param=param,
                file_id=dataset_id,
                file_format=dataset.format,
                method_type=job.hyperparameters.method_type,
            )
            if problem is not None:
                error = JobError(code="file_format_mismatch", message=problem, param=param, kind="user")
                await self._fail(job, error)
                return
        await self._journal.transition(job, "queued", message="Files validated, moving job to queued state")

    # -- queued -> launched -------------------------------------------------------------------

    async def _launch(self, job: Job) -> bool:
        """Submit the job's Ray job and record it; return whether it was launched."""
        model = await self._models.get(job.model)
        if model is None:
            error = JobError(code="model_not_found", message=f"unknown base model {job.model}", kind="user")
            await self._fail(job, error, param="model")
            return False
        paths: list[str | None] = []
        uris: list[str | None] = []
        for dataset_id in (job.training_file, job.validation_file):
            found = None
            if dataset_id is not None:
                found = await self._datasets.get(client_id=job.client_id, dataset_id=dataset_id)
            paths.append(str(self._dataset_files.absolute(found.local_path)) if found else None)
            uris.append(mirrored_uri(found))
        if paths[0] is None:
            error = JobError(
                code="invalid_training_file", message="the training file was deleted", kind="user"
            )
            await self._fail(job, error, param="training_file")
            return False
        config = self._configs.build(
            job, source=model.source, training=paths[0], validation=paths[1], s3_uris=(uris[0], uris[1])
        )
        config_path = f"{job.id}/config.json"
        await self._job_files.write(
            config_path, _one(config.model_dump_json(indent=2).encode()), max_bytes=1 << 20
        )
        attempt = job.attempts + 1
        resources = job.resources
        distributed = config.ray_train
        ray_job_id = await self._launcher.submit(
            submission_id=f"{job.id}-attempt-{attempt}",
            config_path=str(self._job_files.absolute(config_path)),
            # With Ray Train the driver only coordinates; the workers reserve the CPUs and GPUs.
            num_cpus=0 if distributed else config.cpus_per_worker,
            num_gpus=0 if distributed or resources is None else resources.num_gpus_per_worker,
            metadata={"studio_job_id": job.id, "client_id": job.client_id, "attempt": str(attempt)},
            env=self._configs.launch_env(config),
        )
        launched = await self._jobs.update(
            job_id=job.id,
            expected="queued",
            changes=JobChanges(
                ray_job_id=ray_job_id,
                attempts=attempt,
                log_offset=0,
                output_dir=str(config.output_dir),
                launcher=launcher_of(ray_job_id),
            ),
        )
        if launched is None:  # cancelled while it was being launched
            with contextlib.suppress(StudioError):
                await self._launcher.stop(ray_job_id)
            return False
        how = "as a Ray actor" if launched.launcher == "actor" else "as a Ray job"
        await self._journal.record(launched, f"Launched {ray_job_id} {how} (attempt {attempt})")
        if self._metrics is not None and attempt == 1:  # a retry's wait is not the queue's
            created = job.created_ns / 1e9 if job.created_ns else job.created_at
            self._metrics.job_launched(
                model=job.model, client_id=job.client_id, queued_s=time.time() - created
            )
        return True

    # -- following a Ray job ------------------------------------------------------------------

    async def _follow(self, job: Job, ray_job_id: str) -> None:
        try:
            status = await self._launcher.status(ray_job_id)
        except NotFound:
            await self._retry_or_fail(job, f"Ray job {ray_job_id} no longer exists")
            return
        if status.state == "pending":
            return
        job = await self._read_log(job, ray_job_id, whole=status.state != "running")
        if job.status == "queued":
            started = await self._journal.transition(
                job, "running", JobChanges(started_at=unix_now()), message="Fine-tuning job started"
            )
            if started is None:
                return
            job = started
        if status.state == "running":
            return
        # The whole attempt's events (read once, at its end): its result line may have been read in an
        # earlier round.
        try:
            log_text = await self._launcher.logs(ray_job_id)
        except NotFound:
            log_text = ""
        await self._finish(job, status, parse_events(log_text, 0)[0])
        # Its end is recorded: free what the run still holds (an actor run keeps its CPUs and GPUs).
        with contextlib.suppress(StudioError):
            await self._launcher.release(ray_job_id)

    async def _read_log(self, job: Job, ray_job_id: str, *, whole: bool) -> Job:
        """Record the run's log past the job's offset: one chunk a round while it runs (a round's cost
        follows what the run wrote since, not its whole log), every chunk left once it `whole`ly ended."""
        while True:
            try:
                chunk = await self._launcher.read_log(
                    ray_job_id, offset=job.log_offset, max_bytes=LOG_READ_BYTES
                )
            except NotFound:
                return job
            job = await self._recorder.record(job, chunk)
            if not whole or len(chunk) < LOG_READ_BYTES:
                return job

    async def _finish(self, job: Job, status: LaunchStatus, events: list[TrainingEvent]) -> None:
        result = next((e.fields for e in reversed(events) if e.type == "result"), None)
        error = next((e.fields for e in reversed(events) if e.type == "error"), None)
        if status.state == "succeeded" and result is not None and not result.get("stopped"):
            final = result.get("final_path")
            final_uri = result.get("final_uri")  # uploaded by a run without the shared folder
            changes = JobChanges(
                fine_tuned_model=fine_tuned_model_name(
                    base_model=job.model, client_id=job.client_id, suffix=job.suffix, job_id=job.id
                ),
                trained_tokens=int(result.get("trained_tokens") or 0),
                output_model_path=str(final) if final else None,
                output_model_uri=str(final_uri) if final_uri else None,
                finished_at=unix_now(),
                estimated_finish=None,
            )
            done = await self._journal.transition(
                job, "succeeded", changes, message="The job has successfully completed"
            )
            if done is not None and final and not final_uri:
                self._recorder.copy_to_s3(done, Path(str(final)), "final")
            await publish_quietly(self._results, done)
            return
        kind = str(error.get("kind")) if error else classify_exit(status.message)
        message = str(error.get("message")) if error else (status.message or f"the Ray job {status.state}")
        if kind == "user":
            await self._fail(job, JobError(code="invalid_training_data", message=message, kind="user"))
        else:
            await self._retry_or_fail(job, message)

    async def _retry_or_fail(self, job: Job, reason: str) -> None:
        if job.attempts >= self._settings.max_attempts:
            error = JobError(
                code="platform_error",
                message=f"{reason} (after {job.attempts} attempt(s))",
                kind="platform",
            )
            await self._fail(job, error)
            return
        step = job.progress.checkpoint_step
        resume = f"from the checkpoint at step {step}" if step else "from the start"
        message = f"Attempt {job.attempts} failed: {reason}. Retrying {resume}"
        changes = JobChanges(ray_job_id=None, log_offset=0)
        if job.status == "running":
            await self._journal.transition(job, "queued", changes, message=message, level="warn")
        else:  # a queued job's Ray job vanished before it ran: launch again, still queued
            updated = await self._jobs.update(job_id=job.id, expected=job.status, changes=changes)
            if updated is not None:
                await self._journal.record(updated, message, level="warn")
        self.wake(job.client_id)

    async def _fail(self, job: Job, error: JobError, *, param: str | None = None) -> None:
        if param is not None:
            error = error.model_copy(update={"param": param})
        changes = JobChanges(error=error, finished_at=unix_now(), estimated_finish=None)
        failed = await self._journal.transition(job, "failed", changes, message=error.message, level="error")
        await publish_quietly(self._results, failed)
