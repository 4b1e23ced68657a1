"""Training without a working Jobs API (issue: the Ray task fallback), each on a cluster of its own.

The scenarios (tests/reliability/launch_scenarios.py) run in a subprocess: this session's shared
Ray cluster keeps its dashboard for the other tests, and a driver joins one cluster only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from ray._private.ray_constants import DEFAULT_DASHBOARD_AGENT_LISTEN_PORT

pytestmark = pytest.mark.integration

SCENARIO_TIMEOUT_S = 420


def fresh_environment() -> dict[str, str]:
    """This process's environment without what `ray.init` of the session's cluster added to it
    (`RAY_AUTH_MODE=token` from that cluster left its own dashboard agent unregistered), so each scenario
    starts Ray as a new process would."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONBREAKPOINT"}


def agent_port_taken() -> bool:
    """Whether another Ray cluster's dashboard agent holds its one default port on this machine."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", DEFAULT_DASHBOARD_AGENT_LISTEN_PORT)) == 0


@pytest.mark.parametrize("scenario", ["no_dashboard", "dashboard_stopped"])
def test_jobs_train_without_a_working_jobs_api(scenario: str, tmp_path: Path, mongo_url: str) -> None:
    if scenario == "dashboard_stopped" and agent_port_taken():
        # `ray.init` cannot move the agent's port: a second cluster's Jobs API would take no job.
        # scripts/test.sh runs this file first, before any other cluster starts.
        pytest.skip("another Ray cluster's dashboard agent holds port 52365 on this machine")
    done = subprocess.run(
        [sys.executable, "-m", "tests.reliability.launch_scenarios", scenario,
         "--mongo-url", mongo_url, "--tmp", str(tmp_path)],
        cwd=Path(__file__).resolve().parents[2],
        env=fresh_environment(),
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    output = (done.stdout + done.stderr)[-8000:]
    assert done.returncode == 0, output
    assert f"scenario {scenario}: every check held" in done.stdout, output
