"""Cluster-wide singleton actors: named, detached, restarted when they die, on the head node."""

from __future__ import annotations

from typing import Any

import ray


def head_node_singleton(actor: type, *, name: str, namespace: str) -> Any:
    """Return `actor` as Ray actor options for the one instance named `name` in `namespace`.

    `.remote(...)` on the result returns the running instance, or starts it (its constructor arguments
    only count then). Detached, so it outlives the Serve application that started it; `max_restarts=-1`
    brings it back if its process dies; no CPU reserved; pinned to the head node, whose disk holds the
    data directory and which lives as long as the cluster.
    """
    return ray.remote(actor).options(
        name=name,
        namespace=namespace,
        get_if_exists=True,
        lifetime="detached",
        max_restarts=-1,
        num_cpus=0,
        resources={"node:__internal_head__": 0.001},
    )
