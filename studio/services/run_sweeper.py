"""Stops training runs that the store does not account for.

The tracker follows runs from the store: a job records the launch id of its current attempt. A run can
still end up going with nobody watching it: a cancel whose stop failed (Ray refused, a bug), a job that
moved on to another attempt while the old run kept going, a run whose job was deleted, or a run launched
by a tracker that died before recording it and whose job was then cancelled. Such a run holds CPUs and
GPUs that the queue counts as free, and may write a model nobody asked for.

So every `interval_s` the sweeper lists this installation's runs in the cluster and compares them with the
launch ids of the jobs the tracker follows. A run whose job is still queued with no run recorded is left
alone: the tracker that launched it died before recording it, and the job's launch adopts it (same
submission id). Any other run is stopped (and an ended run actor released) only when
two lists at least `interval_s` apart both found it unaccounted: a run launched between the store read
and the list is recorded by the next list.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from studio.errors import NotFound, StudioError
from studio.ports import ActiveRun, JobRepository, TrainingLauncher
from studio.schemas.jobs import Job
from studio.services.job_journal import JobJournal

log = logging.getLogger(__name__)


class UnaccountedRuns:
    """Finds and stops the cluster's runs that no followed job accounts for (see the module)."""

    def __init__(
        self,
        *,
        launcher: TrainingLauncher,
        jobs: JobRepository,
        journal: JobJournal,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._launcher = launcher
        self._jobs = jobs
        self._journal = journal
        self._interval_s = interval_s
        self._clock = clock
        self._last_sweep = float("-inf")
        self._suspects: dict[str, float] = {}  # launch id -> when a list first found it unaccounted

    async def maybe_sweep(self, followed: list[Job]) -> list[str]:
        """Sweep if `interval_s` passed since the last sweep; return the launch ids stopped.

        `followed`: the jobs the tracker follows, read before this call.
        Raises:
            Unavailable: the cluster could not be listed (the next round tries again).
        """
        now = self._clock()
        if now - self._last_sweep < self._interval_s:
            return []
        self._last_sweep = now
        accounted = {job.ray_job_id for job in followed if job.ray_job_id is not None}
        suspects: dict[str, float] = {}
        stopped: list[str] = []
        for run in await self._launcher.active_runs():
            if run.launch_id in accounted:
                continue
            first_seen = self._suspects.get(run.launch_id, now)
            if now - first_seen < self._interval_s:
                suspects[run.launch_id] = first_seen
                continue
            job = await self._jobs.get_any(run.job_id)
            if job is not None and job.status == "queued" and job.ray_job_id is None:
                # Launched by a tracker that died before recording it: the job's launch adopts it.
                continue
            try:
                await self._stop(run, job)
                stopped.append(run.launch_id)
            except StudioError as exc:  # the next sweep tries again
                log.warning("could not stop unaccounted run %s: %s", run.launch_id, exc)
                suspects[run.launch_id] = first_seen
        self._suspects = suspects
        return stopped

    async def _stop(self, run: ActiveRun, job: Job | None) -> None:
        with contextlib.suppress(NotFound):
            await self._launcher.stop(run.launch_id)
        with contextlib.suppress(NotFound):
            await self._launcher.release(run.launch_id)
        reason = "its job no longer exists" if job is None else _why(job, run.launch_id)
        log.warning("stopped run %s: %s", run.launch_id, reason, extra={"job_id": run.job_id})
        if job is not None:
            await self._journal.record(
                job, f"Stopped run {run.launch_id}, which kept going after {reason}", level="warn"
            )


def _why(job: Job, launch_id: str) -> str:
    if job.ray_job_id is not None and job.ray_job_id != launch_id:
        return f"the job moved on to {job.ray_job_id}"
    return f"the job was {job.status.replace('_', ' ')}"
