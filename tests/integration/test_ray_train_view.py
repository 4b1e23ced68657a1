"""A Ray Train run as the dashboard's Train view shows it: named after the job, with its metrics and
checkpoints reported to Ray Train, the checkpoints registered where the trainer wrote them (no copy).

Two DDP workers of half a CPU each on the session's cluster, the entrypoint joining it as inside a
Ray job (as tests/integration/test_ray_train.py).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from studio.training.ray_train import RAY_TRAIN_SNAPSHOT
from tests.integration.test_ray_train import command, dataset, events_of, gcs_address, job, models_dir

pytestmark = pytest.mark.integration
__all__ = ["dataset", "gcs_address", "models_dir"]  # module fixtures, shared


def test_the_train_run_is_named_after_the_job_and_reports_steps_and_checkpoints(
    ray_cluster: str, models_dir: Path, dataset: Path, gcs_address: str, tmp_path: Path
) -> None:
    job_id = f"ftjob-view{int(time.time() * 1000) % 10**8}"
    output_dir = tmp_path / "jobs" / job_id  # as the tracker lays out `<jobs dir>/<job id>`
    # A snapshot left by an earlier attempt is not resumed by Ray Train (it names a checkpoint that is gone).
    output_dir.mkdir(parents=True)
    stale = {"checkpoint_results": [{"checkpoint_dir_name": "gone", "metrics": {}}]}
    (output_dir / RAY_TRAIN_SNAPSHOT).write_text(json.dumps(stale))
    spec = job(models_dir, dataset, output_dir, n_epochs=1, checkpoint_every_steps=2)
    argv, env = command(spec, tmp_path, gcs_address)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = events_of(proc.stdout)
    written = [e["path"] for e in events if e["type"] == "checkpoint"]
    assert written == [str(output_dir / "checkpoints" / f"step-{s}") for s in (2, 4)]

    # The dashboard's Train view (Ray Train V2's state API) lists the run by the job's id.
    # The dashboard asks for the cluster's token where token authentication is on (Ray's own header).
    from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled

    auth = get_auth_headers_if_auth_enabled({})
    response = httpx.get(f"{ray_cluster}/api/train/v2/runs/v1", headers=auth, timeout=30)
    assert response.status_code == 200, response.text
    runs = response.json()["train_runs"]
    (run,) = [r for r in runs if r["name"] == job_id]
    assert run["status"] == "FINISHED", run["status_detail"]
    assert run["attempts"] and run["attempts"][-1]["status"] == "FINISHED"
    assert len(run["attempts"][-1]["workers"]) == 2

    # Ray Train's record of the run lies in the job's folder and registers the trainer's own
    # checkpoints in place: no `checkpoint_*` copy beside them.
    snapshot = json.loads((output_dir / RAY_TRAIN_SNAPSHOT).read_text())
    results = snapshot["checkpoint_results"]
    assert [r["checkpoint_dir_name"] for r in results] == [f"checkpoints/step-{s}" for s in (2, 4)], results
    assert not [p.name for p in output_dir.iterdir() if p.is_dir() and p.name.startswith("checkpoint_")]
    # Each checkpoint carries rank 0's metrics of its step.
    assert [r["metrics"]["step"] for r in results] == [2, 4]
    assert all(r["metrics"]["train_loss"] > 0 and r["metrics"]["trained_tokens"] > 0 for r in results)
