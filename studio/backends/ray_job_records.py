"""Ray jobs followed through the cluster itself, for when the Jobs API (the dashboard) does not answer.

A Ray job outlives the dashboard that submitted it: its supervisor is a detached actor that runs the
entrypoint, writes the job's record (status, message, driver node) to the GCS key-value store and its
output to `job-driver-<id>.log` in the Ray logs of the driver's node. The Jobs API only reads those. So
with the dashboard down (crashed, restarting, never started), a connected process can still read the
status from the GCS, stop the job through its supervisor and read its log on its node, which is what
`RayJobRecords` does: a job launched through the Jobs API is followed to its end without it.

One thing the Jobs API does that this cannot: mark a job whose supervisor died (its node lost) as
failed. Here a record still running whose supervisor is gone reads as failed, after a second read of the
record (the supervisor exits right after writing a normal end).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ray
from ray._private.ray_constants import KV_NAMESPACE_JOB
from ray.dashboard.modules.job.common import (
    JOB_ACTOR_NAME_TEMPLATE,
    JOB_LOGS_PATH_TEMPLATE,
    SUPERVISOR_ACTOR_RAY_NAMESPACE,
    JobInfo,
    JobInfoStorageClient,
)
from ray.experimental.internal_kv import _internal_kv_get
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from studio.backends.log_files import read_range
from studio.backends.ray_calls import in_thread
from studio.backends.ray_jobs import STATES
from studio.errors import NotFound, Unavailable
from studio.schemas.jobs import LaunchStatus

LOG_CHUNK_BYTES = 4 << 20


def _record(submission_id: str) -> JobInfo | None:
    raw = _internal_kv_get(
        JobInfoStorageClient.JOB_DATA_KEY.format(job_id=submission_id), namespace=KV_NAMESPACE_JOB
    )
    return None if raw is None else JobInfo.from_json(json.loads(raw))


def _supervisor(submission_id: str) -> Any | None:
    try:
        return ray.get_actor(
            JOB_ACTOR_NAME_TEMPLATE.format(job_id=submission_id), namespace=SUPERVISOR_ACTOR_RAY_NAMESPACE
        )
    except ValueError:  # no such actor, or a dead one
        return None


def _read_driver_log(submission_id: str, offset: int, max_bytes: int) -> bytes:
    """Return up to `max_bytes` of the job's driver log on this node, from `offset` (negative: from its
    end; b"" if there is none yet)."""
    node: Any = ray._private.worker._global_node  # no public API names the node's logs dir
    path = Path(node.get_logs_dir_path()) / JOB_LOGS_PATH_TEMPLATE.format(submission_id=submission_id)
    return read_range(path, offset, max_bytes)


_read_driver_log_remote = ray.remote(num_cpus=0)(_read_driver_log)


class RayJobRecords:
    """Status, stop and log of Ray jobs from the GCS, their supervisors and their nodes' log files.

    Needs a connected Ray (`ray.init`), as in the tracker actor and the ingress replicas. Every call is
    bounded by `timeout_s`; the cluster not answering is Unavailable.
    """

    def __init__(self, *, timeout_s: float = 30.0) -> None:
        self._timeout_s = timeout_s

    async def _get(self, submission_id: str) -> JobInfo:
        if not ray.is_initialized():
            raise Unavailable("not connected to the Ray cluster: its job records cannot be read")
        found = await in_thread(lambda: _record(submission_id), timeout_s=self._timeout_s)
        if found is None:
            raise NotFound(f"no Ray job {submission_id!r}", code="ray_job_not_found")
        return found

    async def has_run(self, submission_id: str) -> bool:
        """Return whether the Jobs API recorded `submission_id` (written before its job starts, kept after).

        Raises:
            Unavailable: the cluster did not answer in time.
        """
        return await in_thread(lambda: _record(submission_id), timeout_s=self._timeout_s) is not None

    async def status(self, submission_id: str) -> LaunchStatus:
        """Return the job's state as its record says; a running record without supervisor is failed.

        Raises:
            NotFound: the GCS has no record of the job.
            Unavailable: the cluster did not answer in time.
        """
        record = await self._get(submission_id)
        if record.status.is_terminal():
            return LaunchStatus(state=STATES[record.status], message=record.message)
        if await in_thread(lambda: _supervisor(submission_id), timeout_s=self._timeout_s) is not None:
            return LaunchStatus(state=STATES[record.status], message=record.message)
        record = await self._get(submission_id)  # it may have ended between the two reads
        if record.status.is_terminal():
            return LaunchStatus(state=STATES[record.status], message=record.message)
        return LaunchStatus(state="failed", message="the Ray job's supervisor actor is gone (node lost?)")

    async def stop(self, submission_id: str) -> bool:
        """Ask the job's supervisor to stop it (as the Jobs API does); return whether it was running.

        Raises:
            NotFound: the GCS has no record of the job.
        """
        await self._get(submission_id)
        supervisor = await in_thread(lambda: _supervisor(submission_id), timeout_s=self._timeout_s)
        if supervisor is None:
            return False
        await in_thread(lambda: supervisor.stop.remote(), timeout_s=self._timeout_s)
        return True

    async def read_log(self, submission_id: str, *, offset: int = 0, max_bytes: int = 1 << 20) -> bytes:
        """Return at most `max_bytes` of the job's log from byte `offset` (negative: from its end), read
        on the driver's node.

        Raises:
            NotFound: the GCS has no record of the job.
        """
        record = await self._get(submission_id)
        node_id = record.driver_node_id
        if node_id is None:  # not started yet
            return b""
        if node_id == ray.get_runtime_context().get_node_id():
            return await in_thread(
                lambda: _read_driver_log(submission_id, offset, max_bytes), timeout_s=self._timeout_s
            )
        task = _read_driver_log_remote.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
        ).remote(submission_id, offset, max_bytes)
        data: bytes = await in_thread(
            lambda: ray.get(task, timeout=self._timeout_s), timeout_s=self._timeout_s
        )
        return data

    async def logs(self, submission_id: str) -> str:
        """Return the job's whole log (UTF-8, invalid bytes replaced). Raises NotFound."""
        chunks: list[bytes] = []
        while True:
            offset = sum(len(chunk) for chunk in chunks)
            chunk = await self.read_log(submission_id, offset=offset, max_bytes=LOG_CHUNK_BYTES)
            chunks.append(chunk)
            if len(chunk) < LOG_CHUNK_BYTES:
                return b"".join(chunks).decode("utf-8", errors="replace")
