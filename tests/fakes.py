"""In-memory stand-ins for compute ports, for service tests that need no Ray.

Only compute sits behind these: the stores in service tests are the real MongoDB-protocol server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from studio.backends.log_files import slice_range
from studio.errors import NotFound
from studio.ports import ActiveRun
from studio.schemas.jobs import ClusterResources, GpuPool, LaunchState, LaunchStatus


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

    async def active_runs(self) -> list[ActiveRun]:
        by_id = {s.submission_id: s.metadata["studio_job_id"] for s in self.submitted}
        return [
            ActiveRun(launch_id=run, job_id=by_id[run])
            for run, state in self.states.items()
            if state in ("pending", "running") and run in by_id
        ]

    def job_ids(self) -> list[str]:
        """Return the studio job ids submitted, in order."""
        return [s.metadata["studio_job_id"] for s in self.submitted]


GIB = 1024**3


@dataclass
class FixedCluster:
    """A `ClusterInfo` of one idle CPU node with `cpus` cores and `memory_gib` GiB; with `gpus_per_node`,
    `nodes` idle nodes of that many GPUs each (CPUs and memory: the first node's)."""

    cpus: int = 16
    memory_gib: int = 64
    gpus_per_node: int = 0
    nodes: int = 1

    async def resources(self) -> ClusterResources:
        memory = self.memory_gib * GIB
        gpus = self.nodes * self.gpus_per_node
        pools = {"GPU": GpuPool(total=gpus, free=gpus)} if gpus else {}
        return ClusterResources(
            nodes=self.nodes, cpus_total=self.cpus, cpus_free=self.cpus, gpus_total=gpus, gpus_free=gpus,
            gpus_by_type=pools, memory_total_bytes=memory, memory_free_bytes=memory,
            largest_node_memory_bytes=memory, largest_node_gpus=self.gpus_per_node,
        )  # fmt: skip


class SilentTracker:
    """A `JobNotifier` with no tracker behind it: jobs stay where the API put them."""

    async def wake(self, client_id: str | None = None) -> None:
        return None


class RecordingMetrics:
    """A `StudioMetrics` that keeps every call: `calls` in order, as (method, keyword arguments).

    Compared by identity (hashable), as `api.errors.count_errors` needs.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def of(self, method: str) -> list[dict[str, Any]]:
        """Return the arguments of every call of `method`, in order."""
        return [kwargs for name, kwargs in self.calls if name == method]

    def jobs_in_status(self, counts: dict[str, int]) -> None:
        self.calls.append(("jobs_in_status", {"counts": dict(counts)}))

    def job_ended(self, *, status: str, model: str, client_id: str) -> None:
        self.calls.append(("job_ended", {"status": status, "model": model, "client_id": client_id}))

    def job_launched(self, *, model: str, client_id: str, queued_s: float) -> None:
        self.calls.append(("job_launched", {"model": model, "client_id": client_id, "queued_s": queued_s}))

    def tokens_trained(self, *, model: str, client_id: str, tokens: int) -> None:
        self.calls.append(("tokens_trained", {"model": model, "client_id": client_id, "tokens": tokens}))

    def inference_request(self, *, model: str, client_id: str, kind: str, stream: bool, outcome: str) -> None:
        self.calls.append(
            (
                "inference_request",
                {"model": model, "client_id": client_id, "kind": kind, "stream": stream, "outcome": outcome},
            )
        )

    def inference_tokens(self, *, model: str, client_id: str, prompt: int, completion: int) -> None:
        self.calls.append(
            (
                "inference_tokens",
                {"model": model, "client_id": client_id, "prompt": prompt, "completion": completion},
            )
        )

    def time_to_first_token(self, *, model: str, client_id: str, seconds: float) -> None:
        self.calls.append(
            ("time_to_first_token", {"model": model, "client_id": client_id, "seconds": seconds})
        )

    def uploaded_bytes(self, *, client_id: str, size: int) -> None:
        self.calls.append(("uploaded_bytes", {"client_id": client_id, "size": size}))

    def api_error(self, *, status: int, code: str | None) -> None:
        self.calls.append(("api_error", {"status": status, "code": code}))
