"""A private two-node Ray cluster on this machine, run as its own process (`python -m` this module).

The head has no CPUs (as on `ray up cluster.yaml`: it keeps the dashboard, the Jobs API and Serve's
controller), so every run and every model server lands on the second node, which has its own raylet
environment (`STUDIO_NODE_CACHE_DIR`) and a custom resource `node2`. Ray's own multi-node test utility
(`ray.cluster_utils.Cluster`, the `env_vars` of a node's RayParams go to its raylet, whose workers inherit
them) starts both nodes on free ports. It runs in a process of its own because the utility's shutdown
resets the internal KV store of whatever cluster its process is connected to: a test process
connected to the session's cluster would lose it.

Protocol: one JSON line on stdout, `{"gcs", "dashboard", "node2"}` (the GCS address, the Jobs API URL,
the second node's id), once the second node is alive; the cluster stops when stdin closes or on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
from types import FrameType
from typing import Any

from ray.cluster_utils import Cluster

from tests.servers import free_port

NODE_RESOURCE = "node2"


def _ports() -> dict[str, Any]:
    """Free ports for what Ray otherwise binds on fixed ports (the session's cluster holds those)."""
    return {
        "dashboard_agent_listen_port": free_port(),
        "metrics_export_port": free_port(),
        "metrics_agent_port": free_port(),
        "runtime_env_agent_port": free_port(),
    }


def main(cache_dir: str) -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    dashboard_port = free_port()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "temp_dir": tempfile.mkdtemp(prefix="ray2n-", dir="/tmp"),  # short: socket paths
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": dashboard_port,
            "ray_client_server_port": free_port(),
            **_ports(),
        },
    )
    try:
        node = cluster.add_node(
            num_cpus=2,
            resources={NODE_RESOURCE: 1},
            env_vars={"STUDIO_NODE_CACHE_DIR": cache_dir},
            object_store_memory=200 * 1024**2,
            **_ports(),
        )
        line = {
            "gcs": cluster.address,
            "dashboard": f"http://127.0.0.1:{dashboard_port}",
            "node2": node.node_id,
        }
        print(json.dumps(line), flush=True)
        sys.stdin.read()  # until the test closes it (or dies)
    finally:
        cluster.shutdown()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main(sys.argv[1])
