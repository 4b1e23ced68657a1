"""`ClusterInfo` from the Ray cluster this process is connected to (the ingress replica's or an actor's)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ray

from studio.backends.ray_calls import RAY_CORE
from studio.errors import Unavailable
from studio.schemas.jobs import ClusterResources, GpuPool

ACCELERATOR_PREFIX = "accelerator_type:"


def summarize(
    total: dict[str, float], free: dict[str, float], nodes: list[dict[str, Any]]
) -> ClusterResources:
    """Return the cluster's resources from Ray's totals, free amounts and node list.

    GPUs are grouped by the `accelerator_type:<kind>` resource of their node; GPUs on a node that
    declares none are counted under "GPU".
    """
    by_type: dict[str, GpuPool] = {}
    alive = [node for node in nodes if node.get("Alive")]
    for node in alive:
        resources: dict[str, float] = node.get("Resources", {})
        gpus = resources.get("GPU", 0.0)
        if gpus <= 0:
            continue
        kinds = [
            key.removeprefix(ACCELERATOR_PREFIX) for key in resources if key.startswith(ACCELERATOR_PREFIX)
        ]
        kind = kinds[0] if kinds else "GPU"
        pool = by_type.get(kind, GpuPool(total=0, free=0))
        by_type[kind] = GpuPool(total=pool.total + gpus, free=pool.free)
    # Ray reports free GPUs per cluster, not per node: share them out over the kinds by their totals.
    gpus_total = total.get("GPU", 0.0)
    gpus_free = free.get("GPU", 0.0)
    for kind, pool in by_type.items():
        share = pool.total / gpus_total if gpus_total else 0.0
        by_type[kind] = GpuPool(total=pool.total, free=round(gpus_free * share, 3))
    memories = [int(node.get("Resources", {}).get("memory", 0)) for node in alive]
    node_gpus = [float(node.get("Resources", {}).get("GPU", 0.0)) for node in alive]
    return ClusterResources(
        nodes=len(alive),
        cpus_total=total.get("CPU", 0.0),
        cpus_free=free.get("CPU", 0.0),
        gpus_total=gpus_total,
        gpus_free=gpus_free,
        gpus_by_type=by_type,
        memory_total_bytes=int(total.get("memory", 0)),
        memory_free_bytes=int(free.get("memory", 0)),
        largest_node_memory_bytes=max(memories, default=0),
        largest_node_gpus=max(node_gpus, default=0.0),
    )


class RayClusterInfo:
    """The cluster's resources, read from Ray at most every `max_age_s`.

    A read is three calls to Ray's control store (totals, free amounts, nodes); every job create and
    estimate needs one, so concurrent callers share one read and reuse it while it is fresh (what is
    free changes with each launch anyway; the tracker decides launches from Ray itself).
    """

    def __init__(self, *, timeout_s: float = 10.0, max_age_s: float = 2.0) -> None:
        self._timeout_s = timeout_s
        self._max_age_s = max_age_s
        self._last: tuple[float, ClusterResources] | None = None
        self._reading: asyncio.Future[ClusterResources] | None = None

    async def resources(self) -> ClusterResources:
        """Raises Unavailable when the cluster's control store does not answer in time.

        Callers that arrive while a read is under way wait for that read: its result, or its failure
        after one timeout (during an outage they do not queue up for one timeout each).
        """
        if self._last is not None and time.monotonic() - self._last[0] < self._max_age_s:
            return self._last[1]
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read_and_keep())
        # Shielded: a caller that goes away (its client disconnected) does not cancel the others' read.
        return await asyncio.shield(self._reading)

    async def _read_and_keep(self) -> ClusterResources:
        try:
            resources = await self._read()
            self._last = (time.monotonic(), resources)
            return resources
        finally:
            self._reading = None

    async def _read(self) -> ClusterResources:
        def read() -> ClusterResources:
            return summarize(
                ray.cluster_resources(),  # type: ignore[no-untyped-call]
                ray.available_resources(),  # type: ignore[no-untyped-call]
                ray.nodes(),  # type: ignore[no-untyped-call]
            )

        try:
            return await RAY_CORE.run_within(self._timeout_s, read)
        except TimeoutError as exc:
            raise Unavailable("the Ray cluster did not report its resources in time") from exc
