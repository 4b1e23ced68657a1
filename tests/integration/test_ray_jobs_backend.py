"""The training entrypoint as a real Ray job through the Jobs API: it trains the tiny model, or stops."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from studio.backends.ray_jobs import RayJobLauncher
from studio.domain.ids import new_id
from studio.errors import NotFound, Unavailable
from studio.schemas.jobs import LaunchStatus
from studio.training import ensure_tiny_model
from tests.api.datasets_data import chat_rows, jsonl
from tests.servers import free_port

pytestmark = pytest.mark.integration


def job_config(tmp_path: Path, *, epochs: int) -> Path:
    model = ensure_tiny_model(tmp_path / "tiny")
    (tmp_path / "train.jsonl").write_bytes(jsonl(chat_rows(32)))
    config = {
        "base_model": str(model),
        "training_file": str(tmp_path / "train.jsonl"),
        "output_dir": str(tmp_path / "out"),
        "method": "lora",
        "n_epochs": epochs,
        "batch_size": 8,
        "learning_rate": 0.02,
        "max_seq_len": 128,
        "checkpoint_every_steps": 2,
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(config))
    return path


async def wait_until_done(launcher: RayJobLauncher, ray_job_id: str) -> LaunchStatus:
    for _ in range(600):
        status = await launcher.status(ray_job_id)
        if status.state in {"succeeded", "failed", "stopped"}:
            return status
        await asyncio.sleep(0.2)
    raise AssertionError(f"Ray job {ray_job_id} did not finish")


async def test_training_runs_as_a_ray_job(ray_cluster: str, tmp_path: Path) -> None:
    launcher = RayJobLauncher(ray_cluster)
    submitted = await launcher.submit(
        submission_id=new_id("ftjob"),
        config_path=str(job_config(tmp_path, epochs=2)),
        num_cpus=1,
        num_gpus=0,
        metadata={"studio_job_id": "ftjob-test", "client_id": "client-test"},
    )
    status = await wait_until_done(launcher, submitted)
    logs = await launcher.logs(submitted)
    assert status.state == "succeeded", logs[-2000:]
    events = [
        json.loads(line.split(" ", 1)[1])
        for line in logs.splitlines()
        if line.startswith("MINISTUDIO_EVENT ")
    ]
    assert [event for event in events if event["type"] == "checkpoint"]
    (result,) = [event for event in events if event["type"] == "result"]
    assert result["steps"] == 8 and await asyncio.to_thread(Path(result["final_path"]).is_dir)


async def test_stop_ends_a_running_job(ray_cluster: str, tmp_path: Path) -> None:
    launcher = RayJobLauncher(ray_cluster)
    submitted = await launcher.submit(
        submission_id=new_id("ftjob"),
        config_path=str(job_config(tmp_path, epochs=100)),
        num_cpus=1,
        num_gpus=0,
        metadata={"studio_job_id": "ftjob-stop"},
    )
    for _ in range(300):
        if (await launcher.status(submitted)).state == "running":
            break
        await asyncio.sleep(0.2)
    assert await launcher.stop(submitted)
    assert (await wait_until_done(launcher, submitted)).state == "stopped"
    with pytest.raises(NotFound):
        await launcher.status("raysubmit_does_not_exist")


async def test_unreachable_jobs_api_is_unavailable() -> None:
    launcher = RayJobLauncher(f"http://127.0.0.1:{free_port()}", timeout_s=5)
    with pytest.raises(Unavailable):
        await launcher.status("anything")
