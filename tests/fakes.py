"""In-memory stand-ins for compute ports, for service tests that need no Ray.

Only compute sits behind these: the stores in service tests are the real MongoDB-protocol server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from studio.backends.log_files import slice_range
from studio.errors import NotFound
from studio.schemas.jobs import ClusterResources, LaunchState, LaunchStatus


@dataclass
class Submission:
    submission_id: str
    config_path: str
    metadata: dict[str, str]


@dataclass
class RecordingLauncher:
    """A `TrainingLauncher` that starts nothing: it records submissions, whose state tests set."""

    submitted: list[Submission] = field(default_factory=list)
    states: dict[str, LaunchState] = field(default_factory=dict)
    logs_of: dict[str, str] = field(default_factory=dict)

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
        if submission_id not in self.states:
            self.submitted.append(Submission(submission_id, config_path, metadata))
            self.states[submission_id] = "pending"
        return submission_id

    async def status(self, ray_job_id: str) -> LaunchStatus:
        if ray_job_id not in self.states:
            raise NotFound(f"no run {ray_job_id!r}")
        return LaunchStatus(state=self.states[ray_job_id])

    async def stop(self, ray_job_id: str) -> bool:
        running = self.states.get(ray_job_id) in ("pending", "running")
        self.states[ray_job_id] = "stopped"
        return running

    async def logs(self, ray_job_id: str) -> str:
        return self.logs_of.get(ray_job_id, "")

    async def read_log(self, ray_job_id: str, *, offset: int, max_bytes: int) -> bytes:
        return slice_range(self.logs_of.get(ray_job_id, "").encode(), offset, max_bytes)

    async def release(self, ray_job_id: str) -> bool:
        return self.states.pop(ray_job_id, None) is not None

    def job_ids(self) -> list[str]:
        """Return the studio job ids submitted, in order."""
        return [s.metadata["studio_job_id"] for s in self.submitted]


GIB = 1024**3


@dataclass
class FixedCluster:
    """A `ClusterInfo` of one idle CPU node with `cpus` cores and `memory_gib` GiB."""

    cpus: int = 16
    memory_gib: int = 64

    async def resources(self) -> ClusterResources:
        memory = self.memory_gib * GIB
        return ClusterResources(
            nodes=1, cpus_total=self.cpus, cpus_free=self.cpus, gpus_total=0, gpus_free=0, gpus_by_type={},
            memory_total_bytes=memory, memory_free_bytes=memory, largest_node_memory_bytes=memory,
        )  # fmt: skip


class SilentTracker:
    """A `JobNotifier` with no tracker behind it: jobs stay where the API put them."""

    async def wake(self, client_id: str | None = None) -> None:
        return None
