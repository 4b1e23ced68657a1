"""The tracker: a named, detached Ray actor (one per cluster) running `JobRunner`'s and
`DeploymentRunner`'s loops (fine-tuning jobs, and model deployments).

Detached, so it outlives the Serve application: redeploying or restarting Mini Studio mid-job leaves
every job followed. `max_restarts=-1` brings it back if its process dies, and its constructor starts
the loop, so a restarted tracker resumes at once (its first round reconciles what the store says with
what Ray says). Every ingress replica also checks it every `tracker.liveness_interval_s`
(`backends.ray_tracker.TrackerWatch`) and wakes it when a job is created or cancelled.

Settings: the actor keeps those of the newest deployment of Mini Studio that reached it. A redeploy
(rotated MongoDB password, new S3 keys) builds settings with a later `issued_at`; the first liveness
check from one of its replicas restarts the loop with them. Replicas of an older deployment, still
draining, cannot bring older settings back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import ray
from ray.util.metrics import Gauge

from studio.app.container import open_deployment_runner, open_job_runner
from studio.app.embedded import embedded_mongo_url
from studio.app.model_servers import model_servers
from studio.app.singletons import head_node_singleton
from studio.backends.launchers import FallbackLauncher
from studio.backends.ray_actor_jobs import RayActorLauncher
from studio.backends.ray_jobs import RayJobLauncher
from studio.config import Settings
from studio.logs import configure_logging
from studio.services.deployment_runner import DeploymentRunner
from studio.services.job_runner import JobRunner, RoundStats

log = logging.getLogger(__name__)
RESTART_DELAY_S = 5.0
STOP_TIMEOUT_S = 30.0


def jobs_api_address(settings: Settings) -> str:
    """Return the Ray Jobs API address: the configured one, else this cluster's (found through GCS)."""
    return settings.training.jobs_address or ray.get_runtime_context().gcs_address


def training_launcher(settings: Settings) -> FallbackLauncher:
    """Return the launcher of training runs: the Jobs API, a Ray actor, or either (`training.launcher`)."""
    training = settings.training
    return FallbackLauncher(
        RayJobLauncher(
            jobs_api_address(settings),
            python=training.python,
            timeout_s=training.jobs_api_timeout_s,
            namespace=settings.ray.namespace,
        ),
        RayActorLauncher(namespace=settings.ray.namespace, python=training.python),
        mode=training.launcher,
        timeout_s=settings.ray.actor_timeout_s,
    )


class RoundMetrics:
    """The job loop's round time and sizes as Ray metrics (Prometheus, through Ray's exporter)."""

    def __init__(self) -> None:
        self._duration = Gauge(
            "mini_studio_tracker_round_seconds", description="Duration of the tracker's last job round."
        )
        self._followed = Gauge(
            "mini_studio_tracker_followed_jobs", description="Jobs the tracker follows (launched or running)."
        )
        self._waiting = Gauge(
            "mini_studio_tracker_waiting_clients", description="Clients with jobs waiting in the queue."
        )

    def __call__(self, stats: RoundStats) -> None:
        self._duration.set(stats.duration_s)
        self._followed.set(stats.followed)
        if stats.waiting_clients is not None:
            self._waiting.set(stats.waiting_clients)


class JobTrackerActor:
    def __init__(self, settings: Settings, issued_at: float = 0.0) -> None:
        self._settings = settings
        self._issued_at = issued_at
        self._runner: JobRunner | None = None
        self._deployments: DeploymentRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self._metrics = RoundMetrics()
        configure_logging(log_dir=settings.log_dir, level=settings.api.log_level)
        # A restarted actor runs its constructor again: begin at once, nobody has to call `start`.
        with contextlib.suppress(RuntimeError):  # no event loop here: the first `start` begins it
            asyncio.get_running_loop()
            self._task = asyncio.create_task(self._main(settings))

    async def start(self, settings: Settings | None = None, issued_at: float = 0.0) -> bool:
        """Start the loop unless it runs; return whether it is connected and running rounds.

        `settings` issued later than the current ones (a redeployed Mini Studio) replace them and
        restart the loop; older or equal ones are ignored.
        """
        if settings is not None and issued_at > self._issued_at:
            changed = settings != self._settings
            self._settings, self._issued_at = settings, issued_at
            if changed and self._task is not None and not self._task.done():
                log.info("new settings from a redeployed Mini Studio; restarting the tracker's loop")
                await self._stop_loop()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._main(self._settings))
        return self._runner is not None

    async def _stop_loop(self) -> None:
        """End the running loop: running rounds finish theirs (a bounded wait), one still connecting
        (say, with a password that no longer works) is cancelled at once."""
        task = self._task
        if task is None:
            return
        if self._runner is not None and self._deployments is not None:
            self._runner.stop()
            self._deployments.stop()
            await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
        if not task.done():
            # Bounded too: a cancel that lands inside a database call can be swallowed by the driver.
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)

    async def wake(self, client_id: str | None = None) -> None:
        """A change to look at now: a client's new job (`client_id`), or anything (None: the deployment
        loop too; a job create is nothing to it)."""
        await self.start()
        if self._runner is not None:
            self._runner.wake(client_id)
        if self._deployments is not None and client_id is None:
            self._deployments.wake()

    async def _main(self, settings: Settings) -> None:
        while True:
            try:
                if settings.store.mongo_url is not None:
                    mongo_url = settings.store.mongo_url.get_secret_value()
                else:
                    mongo_url = await embedded_mongo_url(settings)
                launcher = training_launcher(settings)
                async with (
                    open_job_runner(
                        settings, mongo_url=mongo_url, launcher=launcher, on_round=self._metrics
                    ) as runner,
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


def job_tracker(settings: Settings, issued_at: float = 0.0) -> Any:
    """Return the cluster's tracker actor, creating it (on the head node) when there is none."""
    actor_class = head_node_singleton(
        JobTrackerActor, name=settings.tracker.name, namespace=settings.ray.namespace
    )
    return actor_class.remote(settings, issued_at)
