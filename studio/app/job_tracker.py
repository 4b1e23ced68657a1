"""The tracker: a named, detached Ray actor (one per cluster) running `JobRunner`'s and
`DeploymentRunner`'s loops (fine-tuning jobs, and model deployments).

Detached, so it outlives the Serve application: redeploying or restarting Mini Studio mid-job leaves
every job followed. `max_restarts=-1` brings it back if its process dies; every ingress replica calls
`start` when it starts and `wake` when a job is created, so a restarted tracker resumes at once (and
its first round reconciles what the store says with what Ray says).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from studio.app.container import open_deployment_runner, open_job_runner
from studio.app.embedded import embedded_mongo_url
from studio.app.model_servers import model_servers
from studio.app.singletons import head_node_singleton
from studio.backends.ray_jobs import RayJobLauncher
from studio.config import Settings
from studio.errors import Unavailable
from studio.logs import configure_logging
from studio.services.deployment_runner import DeploymentRunner
from studio.services.job_runner import JobRunner

log = logging.getLogger(__name__)
RESTART_DELAY_S = 5.0


def jobs_api_address(settings: Settings) -> str:
    """Return the Ray Jobs API address: the configured one, else this cluster's (found through GCS)."""
    return settings.training.jobs_address or ray.get_runtime_context().gcs_address


class JobTrackerActor:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._runner: JobRunner | None = None
        self._deployments: DeploymentRunner | None = None
        self._task: asyncio.Task[None] | None = None
        configure_logging(log_dir=settings.log_dir, level=settings.api.log_level)

    async def start(self) -> bool:
        """Start the loop unless it runs; return whether it is connected and running rounds."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._main())
        return self._runner is not None

    async def wake(self) -> None:
        await self.start()
        if self._runner is not None:
            self._runner.wake()
        if self._deployments is not None:
            self._deployments.wake()

    async def _main(self) -> None:
        settings = self._settings
        while True:
            try:
                if settings.store.mongo_url is not None:
                    mongo_url = settings.store.mongo_url.get_secret_value()
                else:
                    mongo_url = await embedded_mongo_url(settings)
                launcher = RayJobLauncher(jobs_api_address(settings), python=settings.training.python)
                async with (
                    open_job_runner(settings, mongo_url=mongo_url, launcher=launcher) as runner,
                    open_deployment_runner(
                        settings, mongo_url=mongo_url, servers=model_servers(settings)
                    ) as deployer,
                ):
                    self._runner, self._deployments = runner, deployer
                    log.info("tracker running")
                    await asyncio.gather(runner.run(), deployer.run())
                    return
            except Exception:
                log.exception("job tracker failed; restarting in %.0f s", RESTART_DELAY_S)
            finally:
                self._runner = self._deployments = None
            await asyncio.sleep(RESTART_DELAY_S)


def job_tracker(settings: Settings) -> Any:
    """Return the cluster's tracker actor, creating it (on the head node) when there is none."""
    actor_class = head_node_singleton(
        JobTrackerActor, name=settings.training.tracker_name, namespace=settings.ray.namespace
    )
    return actor_class.remote(settings)


class ActorJobNotifier:
    """`JobNotifier` that calls the tracker actor."""

    def __init__(self, actor: Any, *, timeout_s: float) -> None:
        self._actor = actor
        self._timeout_s = timeout_s

    async def wake(self) -> None:
        try:
            await asyncio.wait_for(self._actor.wake.remote(), timeout=self._timeout_s)
        except (TimeoutError, ray.exceptions.RayActorError) as exc:
            raise Unavailable(f"the job tracker did not answer: {exc}") from exc
