"""A training run's log into the store: its events, progress and checkpoints, and copies to S3.

The tracker reads a followed run's log each round and hands it here: the events past the job's log
offset are stored (training-step metrics thinned on long runs), its progress and offset written, each
checkpoint recorded, and checkpoints and final models copied to S3 in the background.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

from studio.domain.ids import unix_now
from studio.domain.jobs import fine_tuned_model_name
from studio.domain.training_events import TrainingEvent, describe, keeps_metrics, parse_event_bytes
from studio.errors import StudioError
from studio.ports import CheckpointRepository, JobRepository, ObjectStore, StudioMetrics
from studio.schemas.jobs import Checkpoint, CheckpointMetrics, Job, JobChanges, JobEvent, JobProgress
from studio.services.job_journal import JobJournal

log = logging.getLogger(__name__)

PROGRESS_FIELDS = frozenset(JobProgress.model_fields)
# Runs whose last reported token count is remembered (a tracker follows far fewer at once).
TOKEN_MARKS_KEPT = 1024


class RunRecorder:
    """Stores what a run's log says about its job; copies its artifacts to S3 (when configured)."""

    def __init__(
        self,
        *,
        jobs: JobRepository,
        journal: JobJournal,
        checkpoints: CheckpointRepository,
        objects: ObjectStore | None,
        max_metrics_events: int,
        metrics: StudioMetrics | None = None,
    ) -> None:
        """`metrics` counts the tokens trained, from each training step's metrics event."""
        self._jobs = jobs
        self._metrics = metrics
        # Per run attempt: the cumulative `trained_tokens` of the last step counted.
        self._token_marks: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._journal = journal
        self._checkpoints = checkpoints
        self._objects = objects
        self._max_metrics_events = max_metrics_events
        self._copies: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        """Cancel the copies still running."""
        for task in self._copies:
            task.cancel()

    async def record(self, job: Job, chunk: bytes) -> Job:
        """Store the events of `chunk` (the run's log from byte `job.log_offset`) and the job's progress
        and new offset (past its last complete line); return the updated job."""
        events, consumed = parse_event_bytes(chunk, job.log_offset)
        if consumed == 0:
            return job
        offset = job.log_offset + consumed
        progress = job.progress.model_copy()
        stored: list[JobEvent] = []
        for event in events:
            fields = event.fields
            if event.type == "metrics":
                self._count_tokens(job, fields.get("trained_tokens"), fresh=progress.step == 0)
                progress = progress.model_copy(
                    update={k: v for k, v in fields.items() if k in PROGRESS_FIELDS and v is not None}
                )
                if not self._stores_metrics(fields, progress):
                    continue
            elif event.type == "checkpoint":
                progress = progress.model_copy(update={"checkpoint_step": fields.get("step")})
                checkpoint = self._checkpoint_of(job, event, progress)
                await self._checkpoints.add(checkpoint)
                if not fields.get("uri"):  # else the run uploaded it itself (no shared folder)
                    self.copy_to_s3(job, Path(checkpoint.path), f"checkpoints/step-{checkpoint.step}")
            stored.append(self._event_of(job, event))
        await self._journal.add(stored)
        changes = JobChanges(log_offset=offset, progress=progress)
        if progress.eta_seconds is not None:
            changes.estimated_finish = unix_now() + int(progress.eta_seconds)
        updated = await self._jobs.update(job_id=job.id, expected=job.status, changes=changes)
        return updated or job

    def _count_tokens(self, job: Job, trained: Any, *, fresh: bool) -> None:
        """Count the tokens trained since the attempt's last step counted (a step's event carries the
        run's cumulative count). The first step seen of an attempt counts from 0 when the job has no
        step recorded yet (`fresh`) on its first attempt; otherwise (a resumed run, whose count starts
        at its checkpoint's, or a tracker restarted mid-run) it only sets the mark, so nothing is
        counted twice, at the cost of that one step."""
        if self._metrics is None or not isinstance(trained, int):
            return
        key = (job.id, job.attempts)
        mark = self._token_marks.pop(key, None)
        if mark is None:
            mark = 0 if fresh and job.attempts <= 1 else trained
        self._token_marks[key] = max(mark, trained)
        while len(self._token_marks) > TOKEN_MARKS_KEPT:
            self._token_marks.popitem(last=False)
        if trained > mark:
            self._metrics.tokens_trained(model=job.model, client_id=job.client_id, tokens=trained - mark)

    def _stores_metrics(self, fields: dict[str, Any], progress: JobProgress) -> bool:
        """Return whether a metrics event is stored: training steps are thinned on long runs to
        `max_metrics_events_per_attempt` (evaluations are sparse already)."""
        step = fields.get("step")
        if "train_loss" not in fields or not isinstance(step, int):
            return True
        cap = self._max_metrics_events
        return keeps_metrics(step=step, total_steps=progress.total_steps, cap=cap)

    def _event_of(self, job: Job, event: TrainingEvent) -> JobEvent:
        level, message = describe(event)
        data = {k: v for k, v in event.fields.items() if k != "type"}
        return self._journal.event(
            job,
            message,
            level=level,
            type="metrics" if event.type == "metrics" else "message",
            data=data,
            # One id per (attempt, position in the log): reading the same log again adds nothing.
            event_id=f"ftevent-{job.id.removeprefix('ftjob-')}-{job.attempts}-{event.end_offset}",
        )

    def _checkpoint_of(self, job: Job, event: TrainingEvent, progress: JobProgress) -> Checkpoint:
        step = int(event.fields.get("step", 0))
        name = fine_tuned_model_name(
            base_model=job.model, client_id=job.client_id, suffix=job.suffix, job_id=job.id
        )
        return Checkpoint(
            id=f"ftckpt-{job.id.removeprefix('ftjob-')}-{step}",
            job_id=job.id,
            client_id=job.client_id,
            step=step,
            path=str(event.fields.get("path", "")),
            model_name=f"{name}:ckpt-step-{step}",
            metrics=CheckpointMetrics(
                step=step,
                train_loss=progress.train_loss,
                valid_loss=progress.valid_loss,
                valid_mean_token_accuracy=progress.valid_mean_token_accuracy,
                full_valid_loss=progress.valid_loss,
                full_valid_mean_token_accuracy=progress.valid_mean_token_accuracy,
            ),
            created_at=unix_now(),
        )

    def copy_to_s3(self, job: Job, path: Path, name: str) -> None:
        """Copy an artifact directory to `s3://<bucket>/<client>/jobs/<job>/<name>` in the background."""
        if self._objects is None or not path.parts:
            return
        task = asyncio.create_task(self._copy(self._objects, job, path, name))
        self._copies.add(task)
        task.add_done_callback(self._copies.discard)

    async def _copy(self, objects: ObjectStore, job: Job, path: Path, name: str) -> None:
        try:
            uri = await objects.put_directory(prefix=f"{job.client_id}/jobs/{job.id}/{name}", path=path)
        except Exception as exc:  # a background task: nobody else would see the error
            log.warning(
                "copying %s of %s to S3 failed", name, job.id, exc_info=not isinstance(exc, StudioError)
            )
            await self._journal.record(job, f"Could not copy {name} to S3: {exc}", level="warn")
            return
        await self._journal.record(job, f"Copied {name} to {uri}", data={"uri": uri, "artifact": name})
        if name == "final":  # where a node without the shared folder loads the model from
            try:
                await self._jobs.update(
                    job_id=job.id, expected=job.status, changes=JobChanges(output_model_uri=uri)
                )
            except StudioError as exc:
                log.warning("could not record the S3 copy of %s: %s", job.id, exc)
