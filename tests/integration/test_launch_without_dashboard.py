"""Training without a working Jobs API (issue: the Ray task fallback), each on a cluster of its own.

The scenarios (tests/integration/launch_scenarios.py) run in a subprocess: this session's shared
Ray cluster keeps its dashboard for the other tests, and a driver joins one cluster only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCENARIO_TIMEOUT_S = 420


@pytest.mark.parametrize("scenario", ["no_dashboard", "dashboard_stopped"])
def test_jobs_train_without_a_working_jobs_api(scenario: str, tmp_path: Path, mongo_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.launch_scenarios", scenario,
         "--mongo-url", mongo_url, "--tmp", str(tmp_path)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    output = (done.stdout + done.stderr)[-8000:]
    assert done.returncode == 0, output
    assert f"scenario {scenario}: every check held" in done.stdout, output
