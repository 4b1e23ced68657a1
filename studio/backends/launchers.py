"""`TrainingLauncher` that picks Ray's Jobs API when it answers and a detached actor when it does not.

The launch id says which launcher ran the attempt: `actor:<submission id>` for an actor, the bare
submission id for a Ray job (as stored before there was a choice). `status`, `stop` and `logs` follow
the id, never the mode, so an attempt is followed and stopped by the launcher that started it even
after the mode or the Jobs API's health changed.

A submission never runs twice: before starting one, `submit` looks for a run of the same submission id
under the other launcher and adopts it (each launcher adopts its own). The one window left: a Jobs API
that times out but takes the submission later, after the fallback started the actor.
"""

from __future__ import annotations

from studio.backends.ray_actor_jobs import RayActorLauncher, actor_launch_id
from studio.backends.ray_jobs import RayJobLauncher, jobs_api_has_run
from studio.domain.jobs import LaunchMode, launcher_of
from studio.errors import Unavailable
from studio.schemas.jobs import LaunchStatus


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
                return await through(self._primary)  # adopts a Ray job of the same id
            except Unavailable:
                if self._mode == "jobs_api":
                    raise
        # The Jobs API may have taken this submission before it went away: its record says so.
        if await jobs_api_has_run(submission_id, timeout_s=self._timeout_s):
            return submission_id
        return await through(self._fallback)

    def _launcher_of(self, ray_job_id: str) -> RayJobLauncher | RayActorLauncher:
        """Return the launcher that started `ray_job_id`, whatever the mode is now."""
        return self._fallback if launcher_of(ray_job_id) == "actor" else self._primary

    async def status(self, ray_job_id: str) -> LaunchStatus:
        """Return the run's state from the launcher that started it. Raises NotFound, Unavailable."""
        return await self._launcher_of(ray_job_id).status(ray_job_id)

    async def stop(self, ray_job_id: str) -> bool:
        """Stop the run through the launcher that started it; return whether it was running."""
        return await self._launcher_of(ray_job_id).stop(ray_job_id)

    async def logs(self, ray_job_id: str) -> str:
        """Return the run's whole log from the launcher that started it. Raises NotFound."""
        return await self._launcher_of(ray_job_id).logs(ray_job_id)

    async def release(self, ray_job_id: str) -> bool:
        """Free what an ended run still holds (an actor and its resources); return whether it held any."""
        return await self._launcher_of(ray_job_id).release(ray_job_id)
