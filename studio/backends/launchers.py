"""`TrainingLauncher` that picks Ray's Jobs API when it answers and a detached actor when it does not.

The launch id says which launcher ran the attempt: `actor:<submission id>` for an actor, the bare
submission id for a Ray job (as stored before there was a choice). `status`, `stop` and `logs` follow
the id, never the mode, so an attempt is followed and stopped by the launcher that started it even
after the mode or the Jobs API's health changed.

A submission never runs twice: before starting one, `submit` looks for a run of the same submission id
under the other launcher and adopts it (each launcher adopts its own). The one window left: a Jobs API
that times out but takes the submission later, after the fallback started the actor.

A Ray job outlives the dashboard: when the Jobs API stops answering mid-job, its status, log and stop go
through the cluster itself (`RayJobRecords`), so the job is still followed to its end, whatever the mode.
After the Jobs API failed, it is left alone for `JOBS_API_RETRY_S` (no timeout paid on every call of a
round while a hung dashboard restarts).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from studio.backends.ray_actor_jobs import RayActorLauncher, actor_launch_id
from studio.backends.ray_job_records import RayJobRecords
from studio.backends.ray_jobs import RayJobLauncher
from studio.domain.jobs import LaunchMode, launcher_of
from studio.errors import Unavailable
from studio.ports import ActiveRun
from studio.schemas.jobs import LaunchStatus

T = TypeVar("T")
log = logging.getLogger(__name__)

JOBS_API_RETRY_S = 30.0


class FallbackLauncher:
    """Submits through the Jobs API (`primary`) or a detached actor (`fallback`), as `mode` says.

    `auto`: the Jobs API, or the actor when the Jobs API is Unavailable. `jobs_api` / `actor`: only
    that one (a Jobs API down is then Unavailable, and the tracker tries again next round).
    """

    def __init__(
        self,
        primary: RayJobLauncher,
        fallback: RayActorLauncher,
        *,
        mode: LaunchMode = "auto",
        timeout_s: float = 10.0,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._mode = mode
        self._timeout_s = timeout_s
        self._records = RayJobRecords(timeout_s=timeout_s)
        self._jobs_api_down_until = 0.0

    def _jobs_api_down(self) -> bool:
        return time.monotonic() < self._jobs_api_down_until

    async def _jobs_api(self, call: Callable[[RayJobLauncher], Awaitable[T]]) -> T:
        """Return `call(primary)`; remember a failure for JOBS_API_RETRY_S. Raises what it raises."""
        if self._jobs_api_down():
            raise Unavailable("the Ray Jobs API failed moments ago")
        try:
            return await call(self._primary)
        except Unavailable:
            self._jobs_api_down_until = time.monotonic() + JOBS_API_RETRY_S
            raise

    async def submit(
        self,
        *,
        submission_id: str,
        config_path: str,
        num_cpus: float,
        num_gpus: float,
        metadata: dict[str, str],
        env: dict[str, str] | None = None,
    ) -> str:
        """Start the run (or adopt the one already started for `submission_id`); return its launch id.

        Raises:
            Unavailable: the launcher(s) the mode allows could not be reached.
        """
        # An actor of this submission means it was started (or adopted) through the fallback before.
        if await self._fallback.has_run(submission_id):
            return actor_launch_id(submission_id)

        async def through(launcher: RayJobLauncher | RayActorLauncher) -> str:
            return await launcher.submit(
                submission_id=submission_id,
                config_path=config_path,
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                metadata=metadata,
                env=env,
            )

        if self._mode != "actor":
            try:
                return await self._jobs_api(through)  # adopts a Ray job of the same id
            except Unavailable as exc:
                if self._mode == "jobs_api":
                    raise
                log.warning("launching %s as a Ray actor: %s", submission_id, exc)
        # The Jobs API may have taken this submission before it went away: its record says so.
        if await self._records.has_run(submission_id):
            return submission_id
        return await through(self._fallback)

    async def _ray_job(
        self,
        call: Callable[[RayJobLauncher], Awaitable[T]],
        fallback: Callable[[RayJobRecords], Awaitable[T]],
    ) -> T:
        """Return `call` on the Jobs API, or `fallback` on the cluster's records when it is down."""
        try:
            return await self._jobs_api(call)
        except Unavailable:
            return await fallback(self._records)

    async def status(self, ray_job_id: str) -> LaunchStatus:
        """Return the run's state from the launcher that started it. Raises NotFound, Unavailable."""
        if launcher_of(ray_job_id) == "actor":
            return await self._fallback.status(ray_job_id)
        return await self._ray_job(lambda jobs: jobs.status(ray_job_id), lambda rec: rec.status(ray_job_id))

    async def stop(self, ray_job_id: str) -> bool:
        """Stop the run through the launcher that started it; return whether it was running."""
        if launcher_of(ray_job_id) == "actor":
            return await self._fallback.stop(ray_job_id)
        return await self._ray_job(lambda jobs: jobs.stop(ray_job_id), lambda rec: rec.stop(ray_job_id))

    async def logs(self, ray_job_id: str) -> str:
        """Return the run's whole log from the launcher that started it. Raises NotFound."""
        if launcher_of(ray_job_id) == "actor":
            return await self._fallback.logs(ray_job_id)
        return await self._ray_job(lambda jobs: jobs.logs(ray_job_id), lambda rec: rec.logs(ray_job_id))

    async def read_log(self, ray_job_id: str, *, offset: int, max_bytes: int) -> bytes:
        """Return a range of the run's log: an actor's from its actor; a Ray job's from its file on the
        driver's node (through the cluster, not the Jobs API, which serves whole logs only), or from the
        Jobs API where the cluster's records cannot be read."""
        if launcher_of(ray_job_id) == "actor":
            return await self._fallback.read_log(ray_job_id, offset=offset, max_bytes=max_bytes)
        try:
            return await self._records.read_log(ray_job_id, offset=offset, max_bytes=max_bytes)
        except Unavailable:
            return await self._jobs_api(
                lambda jobs: jobs.read_log(ray_job_id, offset=offset, max_bytes=max_bytes)
            )

    async def active_runs(self) -> list[ActiveRun]:
        """Return this installation's waiting or running runs: its actors, and its Ray jobs as the Jobs
        API lists them (none of those while it is down: they are listed again once it answers)."""
        runs = await self._fallback.active_runs()
        with contextlib.suppress(Unavailable):
            runs += await self._jobs_api(lambda jobs: jobs.active_runs())
        return runs

    async def release(self, ray_job_id: str) -> bool:
        """Free what an ended run still holds (an actor and its resources); return whether it held any."""
        if launcher_of(ray_job_id) == "actor":
            return await self._fallback.release(ray_job_id)
        return False  # an ended Ray job holds nothing
