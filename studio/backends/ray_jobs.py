"""`TrainingLauncher` on Ray's Jobs API: a fine-tuning run is a Ray job in the same cluster.

The blocking `JobSubmissionClient` runs in worker threads with a timeout; the Jobs API unreachable is
`Unavailable` (503), never a hang.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import ray
from ray.job_submission import JobStatus, JobSubmissionClient

from studio.backends.log_files import slice_range
from studio.blocking import BlockingCalls
from studio.errors import NotFound, Unavailable
from studio.ports import ActiveRun
from studio.schemas.jobs import LaunchState, LaunchStatus

T = TypeVar("T")

STATES: dict[JobStatus, LaunchState] = {
    JobStatus.PENDING: "pending",
    JobStatus.RUNNING: "running",
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.STOPPED: "stopped",
}


# Unbuffered, unmerged event lines; and time for a stopped run to write its checkpoint before Ray's
# SIGKILL (3 s by default, less than a Ray Train run needs).
JOB_ENV = {"PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0", "RAY_JOB_STOP_WAIT_TIME_S": "60"}


# The metadata key naming the installation (its Ray namespace) that launched a run: installations
# sharing a cluster never touch each other's runs.
NAMESPACE_KEY = "studio_namespace"
JOB_ID_KEY = "studio_job_id"


class RayJobLauncher:
    def __init__(
        self,
        address: str,
        *,
        python: str | None = None,
        timeout_s: float = 30.0,
        namespace: str = "mini-studio",
    ) -> None:
        self._address = address
        self._namespace = namespace
        self._python = python or sys.executable
        self._timeout_s = timeout_s
        self._client: JobSubmissionClient | None = None
        # The Jobs SDK has no request timeout: a hung dashboard holds these threads, no others.
        self._calls = BlockingCalls(f"the Ray Jobs API at {address}", max_threads=4)

    async def _call(self, func: Callable[[JobSubmissionClient], T]) -> T:
        def run() -> T:
            if self._client is None:
                self._client = JobSubmissionClient(self._address)
            return func(self._client)

        try:
            return await self._calls.run_within(self._timeout_s, run)
        except TimeoutError as exc:
            raise Unavailable(f"the Ray Jobs API at {self._address} did not answer in time") from exc
        except ray.exceptions.AuthenticationError as exc:
            # A cluster with token authentication: a setting of this deployment, not a user's error.
            raise Unavailable(
                f"the Ray Jobs API at {self._address} refused Mini Studio's Ray token "
                f"(set RAY_AUTH_MODE=token and the cluster's token where Mini Studio runs): {exc}"
            ) from exc
        except (ConnectionError, OSError) as exc:
            raise Unavailable(f"the Ray Jobs API at {self._address} is unreachable: {exc}") from exc
        except RuntimeError as exc:
            # The SDK raises RuntimeError with the HTTP status; a 5xx is the Jobs API failing, not us.
            if "status code 5" in str(exc):
                raise Unavailable(f"the Ray Jobs API at {self._address} failed: {exc}") from exc
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
        """Start `python -m studio.training --config <config_path>` as a Ray job; return its submission id.

        Submitting an id Ray already has returns that id: a tracker that died between submitting and
        recording the job adopts the Ray job instead of starting a second one.
        """
        entrypoint = shlex.join([self._python, "-m", "studio.training", "--config", config_path])
        # Event lines must reach the log whole and one by one: no buffering, no merging of lines.
        runtime_env: dict[str, Any] = {"env_vars": {**JOB_ENV, **(env or {})}}

        def submit(client: JobSubmissionClient) -> str:
            try:
                return client.submit_job(
                    entrypoint=entrypoint,
                    submission_id=submission_id,
                    metadata={**metadata, NAMESPACE_KEY: self._namespace},
                    runtime_env=runtime_env,
                    entrypoint_num_cpus=num_cpus,
                    entrypoint_num_gpus=num_gpus or None,
                )
            except RuntimeError as exc:
                if "already exists" in str(exc):
                    return submission_id
                raise

        return await self._call(submit)

    async def _about(self, ray_job_id: str, func: Callable[[JobSubmissionClient], T]) -> T:
        """Call `func` on one job; Ray's "no such job" becomes NotFound."""

        def run(client: JobSubmissionClient) -> T | None:
            try:
                return func(client)
            except RuntimeError as exc:
                if "does not exist" in str(exc) or "404" in str(exc):
                    return None
                raise

        found = await self._call(run)
        if found is None:
            raise NotFound(f"no Ray job {ray_job_id!r}", code="ray_job_not_found")
        return found

    async def status(self, ray_job_id: str) -> LaunchStatus:
        """Return the job's state and Ray's message.

        Raises:
            NotFound: Ray knows no such job (the cluster was replaced, or it was deleted).
        """
        found = await self._about(ray_job_id, lambda client: client.get_job_info(ray_job_id))
        return LaunchStatus(state=STATES[found.status], message=found.message)

    async def stop(self, ray_job_id: str) -> bool:
        """Ask Ray to stop the job; return whether it was still running. Raises NotFound."""
        return await self._about(ray_job_id, lambda client: bool(client.stop_job(ray_job_id)))

    async def read_log(self, ray_job_id: str, *, offset: int, max_bytes: int) -> bytes:
        """Return a range of the job's log (negative `offset`: from its end). The Jobs API serves
        whole logs only: where the cluster is reachable, `RayJobRecords.read_log` reads just the range."""
        return slice_range((await self.logs(ray_job_id)).encode(), offset, max_bytes)

    async def release(self, ray_job_id: str) -> bool:
        """Return False: an ended Ray job holds no resources (Ray keeps its record and log itself)."""
        return False

    async def active_runs(self) -> list[ActiveRun]:
        """Return this installation's Ray jobs that are pending or running. Raises Unavailable."""

        def active(client: JobSubmissionClient) -> list[ActiveRun]:
            runs = []
            for job in client.list_jobs():
                metadata = job.metadata or {}
                if (
                    job.status in (JobStatus.PENDING, JobStatus.RUNNING)
                    and job.submission_id is not None
                    and metadata.get(NAMESPACE_KEY) == self._namespace
                    and JOB_ID_KEY in metadata
                ):
                    runs.append(ActiveRun(launch_id=job.submission_id, job_id=metadata[JOB_ID_KEY]))
            return runs

        return await self._call(active)

    async def logs(self, ray_job_id: str) -> str:
        """Return everything the job printed. Raises NotFound."""
        return await self._about(ray_job_id, lambda client: str(client.get_job_logs(ray_job_id)))
