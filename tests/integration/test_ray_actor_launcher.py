"""Training without the Jobs API: each run a detached named actor; the launcher that falls back to it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil
import pytest
import ray

from studio.backends.launchers import FallbackLauncher
from studio.backends.ray_actor_jobs import RayActorLauncher, actor_name
from studio.backends.ray_job_records import RayJobRecords
from studio.backends.ray_jobs import RayJobLauncher
from studio.domain.ids import new_id
from studio.domain.jobs import classify_exit, launcher_of
from studio.errors import NotFound
from studio.ports import ActiveRun
from tests.helpers import events_of, job_config, wait_until_done
from tests.servers import free_port

pytestmark = pytest.mark.integration

NAMESPACE = "studio-actor-launcher-tests"


async def wait_until_training(launcher: RayActorLauncher, launch_id: str) -> None:
    """Wait for the first metrics event: the process is past its start, its SIGTERM handler set."""
    for _ in range(600):
        if any(event["type"] == "metrics" for event in events_of(await launcher.logs(launch_id))):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"run {launch_id} did not start training")


def processes_running(config_path: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if str(config_path) in cmdline and "studio.training" in cmdline:
            found.append(process)
    return found


@pytest.fixture
def actors(ray_cluster: str) -> RayActorLauncher:
    return RayActorLauncher(namespace=NAMESPACE, timeout_s=30, idle_ttl_s=600)


async def test_a_run_trains_once_and_its_log_reads_from_any_offset(
    actors: RayActorLauncher, tmp_path: Path
) -> None:
    submission_id = new_id("ftjob") + "-attempt-1"
    config = job_config(tmp_path, epochs=2)
    submit = actors.submit(
        submission_id=submission_id, config_path=str(config), num_cpus=1, num_gpus=0, metadata={}
    )
    # Twice at once, as a tracker adopting its own submission would: one actor, one process.
    first, second = await asyncio.gather(submit, actors.submit(
        submission_id=submission_id, config_path=str(config), num_cpus=1, num_gpus=0, metadata={}
    ))  # fmt: skip
    assert first == second == f"actor:{submission_id}"
    status = await wait_until_done(actors, first)
    logs = await actors.logs(first)
    assert status.state == "succeeded", logs[-2000:]
    assert logs.count("Mini Studio run ") == 1
    events = events_of(logs)
    assert [event for event in events if event["type"] == "checkpoint"]
    (result,) = [event for event in events if event["type"] == "result"]
    assert result["steps"] == 8 and not result["stopped"]
    assert await asyncio.to_thread(Path(str(result["final_path"])).is_dir)

    whole = await actors.read_log(first, max_bytes=1 << 30)
    assert whole == logs.encode()
    assert await actors.read_log(first, offset=100) == whole[100:]
    assert await actors.read_log(first, offset=100, max_bytes=10) == whole[100:110]
    assert await actors.read_log(first, offset=len(whole)) == b""

    assert await actors.release(first)
    with pytest.raises(NotFound):
        await actors.status(first)
    assert not await actors.release(first)


async def test_stop_checkpoints_and_ends_the_run_as_stopped(actors: RayActorLauncher, tmp_path: Path) -> None:
    job_id = new_id("ftjob")
    launch_id = await actors.submit(
        submission_id=f"{job_id}-attempt-1",
        config_path=str(job_config(tmp_path, epochs=100)),
        num_cpus=1,
        num_gpus=0,
        metadata={"studio_job_id": job_id},
    )
    await wait_until_training(actors, launch_id)
    assert ActiveRun(launch_id=launch_id, job_id=job_id) in await actors.active_runs()
    assert await actors.stop(launch_id)
    status = await wait_until_done(actors, launch_id)
    logs = await actors.logs(launch_id)
    assert status.state == "stopped", logs[-2000:]
    events = events_of(logs)
    (result,) = [event for event in events if event["type"] == "result"]
    assert result["stopped"] and result["checkpoint_path"]
    assert [event for event in events if event["type"] == "checkpoint"]
    assert not await actors.stop(launch_id)  # ended: nothing left to stop, still readable
    assert (await actors.status(launch_id)).state == "stopped"
    await actors.release(launch_id)
    assert launch_id not in [run.launch_id for run in await actors.active_runs()]


async def test_a_killed_actor_is_not_found_and_takes_its_process(
    actors: RayActorLauncher, tmp_path: Path
) -> None:
    config = job_config(tmp_path, epochs=100)
    launch_id = await actors.submit(
        submission_id=new_id("ftjob"), config_path=str(config), num_cpus=1, num_gpus=0, metadata={}
    )
    await wait_until_training(actors, launch_id)
    assert len(await asyncio.to_thread(processes_running, config)) == 1
    ray.kill(ray.get_actor(actor_name(launch_id), namespace=NAMESPACE))
    for _ in range(100):
        try:
            await actors.status(launch_id)
        except NotFound:
            break
        await asyncio.sleep(0.1)
    with pytest.raises(NotFound):
        await actors.status(launch_id)
    for _ in range(100):  # the fate-sharing watcher checks once a second
        if not await asyncio.to_thread(processes_running, config):
            break
        await asyncio.sleep(0.1)
    assert not await asyncio.to_thread(processes_running, config)


async def test_a_user_error_fails_with_exit_code_2_and_the_ended_actor_expires(
    ray_cluster: str, tmp_path: Path
) -> None:
    actors = RayActorLauncher(namespace=NAMESPACE, timeout_s=30, idle_ttl_s=2)
    (config := tmp_path / "job.json").write_text("{}")
    launch_id = await actors.submit(
        submission_id=new_id("ftjob"), config_path=str(config), num_cpus=0.1, num_gpus=0, metadata={}
    )
    status = await wait_until_done(actors, launch_id)
    assert status.state == "failed" and classify_exit(status.message) == "user", status.message
    (error,) = [event for event in events_of(await actors.logs(launch_id)) if event["type"] == "error"]
    assert error["kind"] == "user"
    for _ in range(100):
        if not await actors.has_run(actor_name(launch_id)):
            break
        await asyncio.sleep(0.2)
    with pytest.raises(NotFound):
        await actors.status(launch_id)
    with pytest.raises(NotFound):
        await actors.status("actor:ftjob-never-submitted")


async def test_without_the_jobs_api_runs_go_through_actors(actors: RayActorLauncher, tmp_path: Path) -> None:
    closed = RayJobLauncher(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    launcher = FallbackLauncher(closed, actors, mode="auto")
    submission_id = new_id("ftjob")
    run = {"config_path": str(job_config(tmp_path, epochs=1)), "num_cpus": 1, "num_gpus": 0, "metadata": {}}
    launch_id = await launcher.submit(submission_id=submission_id, **run)
    assert launch_id == f"actor:{submission_id}" and launcher_of(launch_id) == "actor"
    assert await launcher.submit(submission_id=submission_id, **run) == launch_id
    status = await wait_until_done(launcher, launch_id)
    logs = await launcher.logs(launch_id)
    assert status.state == "succeeded", logs[-2000:]
    assert logs.count("Mini Studio run ") == 1
    assert [event for event in events_of(logs) if event["type"] == "result"]
    assert await launcher.release(launch_id)


async def test_a_working_jobs_api_runs_ray_jobs_and_is_never_doubled(
    ray_cluster: str, actors: RayActorLauncher, tmp_path: Path
) -> None:
    launcher = FallbackLauncher(RayJobLauncher(ray_cluster), actors, mode="auto")
    submission_id = new_id("ftjob")
    run = {"config_path": str(job_config(tmp_path, epochs=1)), "num_cpus": 1, "num_gpus": 0, "metadata": {}}
    launch_id = await launcher.submit(submission_id=submission_id, **run)
    assert launch_id == submission_id and launcher_of(launch_id) == "jobs_api"
    status = await wait_until_done(launcher, launch_id)
    assert status.state == "succeeded", (await launcher.logs(launch_id))[-2000:]
    # Forced onto actors later, the same submission adopts the Ray job rather than running again.
    assert await RayJobRecords(timeout_s=10).has_run(submission_id)
    forced = FallbackLauncher(RayJobLauncher(ray_cluster), actors, mode="actor")
    assert await forced.submit(submission_id=submission_id, **run) == submission_id
    assert not await actors.has_run(submission_id)


async def test_a_run_waiting_for_resources_is_pending_and_stops_at_once(
    actors: RayActorLauncher, tmp_path: Path
) -> None:
    # More CPUs than the cluster has: the actor waits to be scheduled, its constructor never runs.
    launch_id = await actors.submit(
        submission_id=new_id("ftjob"),
        config_path=str(tmp_path / "job.json"),
        num_cpus=1000,
        num_gpus=0,
        metadata={},
    )
    assert (await actors.status(launch_id)).state == "pending"
    assert await actors.read_log(launch_id) == b""
    assert await actors.stop(launch_id)
    with pytest.raises(NotFound):
        await actors.status(launch_id)
